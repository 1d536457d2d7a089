/* Hub and clients in one process over real sockets on 127.0.0.1, on the
 * POSIX loop: every request/response path of the protocol (docs/PROTOCOL.md).
 * Each wait is bounded; nothing here sleeps for a fixed time to pass. */
#include "ms_test.h"

#include "fakedns.h"

#include <microstream/ms_posix.h>

#include <signal.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- fixture ---- */

typedef struct hubfx {
  ms_loop *loop;
  ms_hub *hub;
  ms_posix_hub *ph;
  int port;
  char url[64];
} hubfx;

static ms_loop *g_loop;

static int hub_start(hubfx *f, ms_loop *loop, int port, int64_t hb,
                     const char *secret) {
  memset(f, 0, sizeof *f);
  f->loop = loop;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.heartbeat_ms = hb;
  cfg.max_late_ms = 2000;
  if (secret) {
    cfg.secret = (const uint8_t *)secret;
    cfg.secret_len = strlen(secret);
  }
  if (ms_hub_new(&f->hub, &cfg, NULL, NULL))
    return -1;
  if (ms_posix_hub_new(&f->ph, loop, f->hub, "127.0.0.1", port))
    return -1;
  f->port = ms_posix_hub_port(f->ph);
  snprintf(f->url, sizeof f->url, "ws://127.0.0.1:%d/ws", f->port);
  return 0;
}

static void hub_stop(hubfx *f) {
  ms_posix_hub_del(f->ph);
  ms_hub_del(f->hub);
  f->ph = NULL;
  f->hub = NULL;
}

typedef struct svc {
  ms_client *c;
  ms_posix_client *pc;
  int ready_count;
  int last_err;
  ms_client_state state;
} svc;

static void svc_state(ms_client *c, const ms_client_state_arg *st, void *ud) {
  svc *s = ud;
  (void)c;
  s->state = st->state;
  if (st->state == MS_CLIENT_READY)
    s->ready_count++;
  else if (st->err)
    s->last_err = st->err;
}

static int svc_start(svc *s, const hubfx *f, const char *name,
                     ms_encoding enc, const char *token) {
  memset(s, 0, sizeof *s);
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.token = token;
  cfg.encoding = enc;
  cfg.on_state = svc_state;
  cfg.backoff_min_ms = 20;
  cfg.backoff_max_ms = 200;
  cfg.heartbeat_ms = 1000;
  if (ms_client_new(&s->c, &cfg, s, NULL))
    return -1;
  return ms_posix_client_new(&s->pc, f->loop, s->c, f->url);
}

static void svc_kill(svc *s) {
  ms_posix_client_del(s->pc);
  s->pc = NULL;
}

static void svc_stop(svc *s) {
  ms_posix_client_del(s->pc);
  ms_client_del(s->c);
  memset(s, 0, sizeof *s);
}

/* Run the loop until *flag becomes non-zero or `ms` pass. */
static int run_until(ms_loop *loop, const int *flag, int64_t ms) {
  int64_t end = ms_now_ms() + ms;
  while (!*flag && ms_now_ms() < end)
    ms_loop_run_once(loop, 10);
  return *flag;
}

static int run_until_ready(ms_loop *loop, svc **v, size_t n, int64_t ms) {
  int64_t end = ms_now_ms() + ms;
  for (;;) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      k += v[i]->state == MS_CLIENT_READY;
    if (k == n)
      return 1;
    if (ms_now_ms() >= end)
      return 0;
    ms_loop_run_once(loop, 10);
  }
}

static void run_for(ms_loop *loop, int64_t ms) {
  int64_t end = ms_now_ms() + ms;
  while (ms_now_ms() < end)
    ms_loop_run_once(loop, 5);
}

/* ---- handlers ---- */

typedef struct result {
  int done;
  int calls;
  int err;
  char code[64];
  char message[256];
  char str[256]; /* data if a str, or data.key "target" etc */
  int64_t elapsed;
  int late_done;
  int late_err;
  char late_str[64];
  int64_t timeout_in_data;
  char target_in_data[64];
} result;

static void copy_obj_str(const msgpack_object *o, char *buf, size_t n) {
  buf[0] = '\0';
  if (o && o->type == MSGPACK_OBJECT_STR)
    snprintf(buf, n, "%.*s", (int)o->via.str.size, o->via.str.ptr);
}

static void on_result(ms_client *c, const ms_response_arg *a, void *ud) {
  result *r = ud;
  (void)c;
  r->calls++;
  r->done = 1;
  r->err = a->err;
  snprintf(r->code, sizeof r->code, "%s", a->code ? a->code : "");
  snprintf(r->message, sizeof r->message, "%s", a->message);
  copy_obj_str(a->data, r->str, sizeof r->str);
  r->elapsed = a->elapsed_ms;
  ms_str t;
  if (ms_map_get_str(a->data, "target", &t) == 0)
    snprintf(r->target_in_data, sizeof r->target_in_data, "%.*s", (int)t.len,
             t.ptr);
  ms_map_get_i64(a->data, "timeout_ms", &r->timeout_in_data);
}

static void on_late_result(ms_client *c, const ms_response_arg *a, void *ud) {
  result *r = ud;
  (void)c;
  r->late_done = 1;
  r->late_err = a->err;
  copy_obj_str(a->data, r->late_str, sizeof r->late_str);
}

static void h_echo(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                   void *ud) {
  (void)c, (void)ud;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_object(&pk, *a->data);
  ms_reply_send(reply, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void h_fail(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                   void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_error(reply, "PAYMENT_REQUIRED", "insufficient funds", NULL, 0);
}

static void h_forget(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                     void *ud) {
  (void)c, (void)reply, (void)a, (void)ud; /* returns without replying */
}

/* Keeps the reply for later; the test answers or releases it. */
static ms_reply *g_held;
static int g_held_count;
static void h_hold(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                   void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_retain(reply);
  g_held = reply;
  g_held_count++;
}

static int str_request(ms_client *c, const char *target, const char *event,
                       const char *s, int64_t timeout, int64_t late,
                       result *r) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_str_with_body(&pk, s, strlen(s));
  ms_request_opts o;
  memset(&o, 0, sizeof o);
  o.timeout_ms = timeout;
  if (late) {
    o.late_ms = late;
    o.on_late = on_late_result;
    o.late_user_data = r;
  }
  int rv = ms_client_request(c, target, event, (const uint8_t *)sb.data,
                             sb.size, &o, on_result, r, NULL);
  msgpack_sbuffer_destroy(&sb);
  return rv;
}

/* ---- tests ---- */

static hubfx F;
static svc A, B;

static void setup_pair(ms_encoding ea, ms_encoding eb) {
  hub_start(&F, g_loop, 0, 1000, NULL);
  svc_start(&A, &F, "svc-a", ea, NULL);
  svc_start(&B, &F, "svc-b", eb, NULL);
  ms_client_on(B.c, "echo", h_echo, NULL);
  ms_client_on(B.c, "fail", h_fail, NULL);
  ms_client_on(B.c, "forget", h_forget, NULL);
  ms_client_on(B.c, "hold", h_hold, NULL);
  svc *v[] = {&A, &B};
  run_until_ready(g_loop, v, 2, 3000);
}

static void teardown_pair(void) {
  if (g_held)
    ms_reply_release(g_held); /* unanswered: answered with an error */
  svc_stop(&A);
  svc_stop(&B);
  hub_stop(&F);
  g_held = NULL;
  g_held_count = 0;
}

static void request_success_roundtrip(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  CHECK(A.state == MS_CLIENT_READY && B.state == MS_CLIENT_READY);
  result r = {0};
  CHECK_EQ_INT(str_request(A.c, "svc-b", "echo", "hello", 0, 0, &r), 0);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_STR(r.str, "hello");
  CHECK_EQ_INT(r.calls, 1);
  teardown_pair();
}

static void json_and_msgpack_clients_call_each_other(void) {
  setup_pair(MS_ENC_JSON, MS_ENC_MSGPACK);
  ms_client_on(A.c, "echo", h_echo, NULL);
  result r1 = {0}, r2 = {0};
  str_request(A.c, "svc-b", "echo", "from json", 0, 0, &r1);
  str_request(B.c, "svc-a", "echo", "from msgpack", 0, 0, &r2);
  CHECK(run_until(g_loop, &r1.done, 3000));
  CHECK(run_until(g_loop, &r2.done, 3000));
  CHECK_EQ_INT(r1.err, 0);
  CHECK_EQ_STR(r1.str, "from json");
  CHECK_EQ_INT(r2.err, 0);
  CHECK_EQ_STR(r2.str, "from msgpack");
  teardown_pair();
}

static void unknown_target_gets_TARGET_SERVICE_NOT_FOUND(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "nobody", "echo", "x", 0, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_TARGET_SERVICE_NOT_FOUND);
  CHECK_EQ_STR(r.code, "TARGET_SERVICE_NOT_FOUND");
  teardown_pair();
}

static void unknown_event_gets_EVENT_NOT_FOUND(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "no-such-event", "x", 0, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_EVENT_NOT_FOUND);
  teardown_pair();
}

static void handler_error_code_reaches_requester(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_JSON);
  result r = {0};
  str_request(A.c, "svc-b", "fail", "x", 0, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_APPLICATION);
  CHECK_EQ_STR(r.code, "PAYMENT_REQUIRED");
  CHECK_EQ_STR(r.message, "insufficient funds");
  teardown_pair();
}

static void handler_without_reply_gets_INTERNAL_SERVER_ERROR(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0}, r2 = {0};
  str_request(A.c, "svc-b", "forget", "x", 0, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_INTERNAL_SERVER_ERROR);
  /* A retained handle released without an answer: the same. */
  str_request(A.c, "svc-b", "hold", "x", 0, 0, &r2);
  CHECK(run_until(g_loop, &g_held_count, 3000));
  ms_reply_release(g_held);
  g_held = NULL;
  CHECK(run_until(g_loop, &r2.done, 3000));
  CHECK_EQ_INT(r2.err, MS_ERR_INTERNAL_SERVER_ERROR);
  teardown_pair();
}

static void async_reply_from_later_callback(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "hold", "x", 0, 0, &r);
  CHECK(run_until(g_loop, &g_held_count, 3000));
  run_for(g_loop, 50);
  CHECK_EQ_INT(r.done, 0);
  CHECK_EQ_INT(ms_reply_send_str(g_held, "later"), 0);
  g_held = NULL;
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_STR(r.str, "later");
  teardown_pair();
}

static void timeout_gets_REQUEST_TIMEOUT_with_error_data(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "hold", "x", 150, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_REQUEST_TIMEOUT);
  CHECK_EQ_STR(r.target_in_data, "svc-b");
  CHECK_EQ_INT(r.timeout_in_data, 150);
  CHECK(r.elapsed >= 140);
  /* The target learns the requester gave up. */
  int64_t end = ms_now_ms() + 2000;
  while (!ms_reply_cancelled(g_held) && ms_now_ms() < end)
    ms_loop_run_once(g_loop, 10);
  CHECK(ms_reply_cancelled(g_held));
  CHECK_EQ_INT(ms_reply_send_str(g_held, "too late"), MS_ERR_CLOSED);
  g_held = NULL;
  CHECK_EQ_INT(r.calls, 1);
  teardown_pair();
}

static void late_response_inside_window_reaches_on_late(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "hold", "x", 100, 1000, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_REQUEST_TIMEOUT);
  CHECK(!ms_reply_cancelled(g_held));
  CHECK_EQ_INT(ms_reply_send_str(g_held, "late answer"), 0);
  g_held = NULL;
  CHECK(run_until(g_loop, &r.late_done, 3000));
  CHECK_EQ_INT(r.late_err, 0);
  CHECK_EQ_STR(r.late_str, "late answer");
  CHECK_EQ_INT(r.calls, 1);
  ms_client_stats st;
  ms_client_get_stats(A.c, &st);
  CHECK_EQ_INT(st.late_delivered, 1);
  teardown_pair();
}

static void late_response_after_window_is_dropped(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "hold", "x", 100, 200, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_REQUEST_TIMEOUT);
  /* After deadline + late_ms the hub cancels at the target. */
  int64_t end = ms_now_ms() + 2000;
  while (!ms_reply_cancelled(g_held) && ms_now_ms() < end)
    ms_loop_run_once(g_loop, 10);
  CHECK(ms_reply_cancelled(g_held));
  ms_reply_send_str(g_held, "way too late");
  g_held = NULL;
  run_for(g_loop, 100);
  CHECK_EQ_INT(r.late_done, 0);
  CHECK_EQ_INT(r.calls, 1);
  CHECK_EQ_INT(ms_client_pending(A.c), 0);
  teardown_pair();
}

static void duplicate_name_is_reported_and_client_stops(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  svc D;
  svc_start(&D, &F, "svc-b", MS_ENC_MSGPACK, NULL);
  int64_t end = ms_now_ms() + 3000;
  while (D.state != MS_CLIENT_STOPPED && ms_now_ms() < end)
    ms_loop_run_once(g_loop, 10);
  CHECK_EQ_INT(D.state, MS_CLIENT_STOPPED);
  CHECK_EQ_INT(D.last_err, MS_ERR_DUPLICATE_SERVICE_REGISTRATION);
  CHECK_EQ_INT(D.ready_count, 0);
  /* The first holder is untouched. */
  result r = {0};
  str_request(A.c, "svc-b", "echo", "still here", 0, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_STR(r.str, "still here");
  svc_stop(&D);
  teardown_pair();
}

static void target_disconnect_fails_request_before_timeout(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "hold", "x", 5000, 0, &r);
  CHECK(run_until(g_loop, &g_held_count, 3000));
  int64_t t0 = ms_now_ms();
  svc_kill(&B);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_TARGET_DISCONNECTED);
  CHECK(ms_now_ms() - t0 < 2000);
  teardown_pair();
}

static void requester_disconnect_cancels_at_target(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "hold", "x", 5000, 0, &r);
  CHECK(run_until(g_loop, &g_held_count, 3000));
  CHECK(!ms_reply_cancelled(g_held));
  svc_kill(&A);
  int64_t end = ms_now_ms() + 3000;
  while (!ms_reply_cancelled(g_held) && ms_now_ms() < end)
    ms_loop_run_once(g_loop, 10);
  CHECK(ms_reply_cancelled(g_held));
  ms_reply_release(g_held);
  g_held = NULL;
  teardown_pair();
  CHECK_EQ_INT(r.calls, 1); /* CANCELLED when its client was deleted */
}

static void cancel_ends_request_once_and_tells_target(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  uint64_t id = 0;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  ms_client_request(A.c, "svc-b", "hold", NULL, 0, NULL, on_result, &r, &id);
  CHECK(run_until(g_loop, &g_held_count, 3000));
  CHECK_EQ_INT(ms_client_cancel(A.c, id), 0);
  CHECK_EQ_INT(r.err, MS_ERR_CANCELLED);
  CHECK_EQ_INT(ms_client_cancel(A.c, id), MS_ERR_NOT_FOUND);
  int64_t end = ms_now_ms() + 3000;
  while (!ms_reply_cancelled(g_held) && ms_now_ms() < end)
    ms_loop_run_once(g_loop, 10);
  CHECK(ms_reply_cancelled(g_held));
  ms_reply_release(g_held);
  g_held = NULL;
  run_for(g_loop, 50);
  CHECK_EQ_INT(r.calls, 1);
  msgpack_sbuffer_destroy(&sb);
  teardown_pair();
}

static void request_without_hub_gets_HUB_UNAVAILABLE(void) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "lonely";
  ms_client *c;
  CHECK_EQ_INT(ms_client_new(&c, &cfg, NULL, NULL), 0);
  result r = {0};
  CHECK_EQ_INT(str_request(c, "svc-b", "echo", "x", 0, 0, &r), 0);
  CHECK_EQ_INT(r.done, 0); /* never from inside ms_client_request */
  CHECK(ms_client_next_deadline(c) <= ms_now_ms());
  ms_client_tick(c, ms_now_ms());
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.err, MS_ERR_HUB_UNAVAILABLE);
  ms_client_del(c);
}

static void inflight_requests_end_with_HUB_UNAVAILABLE_when_hub_goes(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  result r = {0};
  str_request(A.c, "svc-b", "hold", "x", 5000, 0, &r);
  CHECK(run_until(g_loop, &g_held_count, 3000));
  ms_posix_hub_del(F.ph);
  F.ph = NULL;
  ms_hub_del(F.hub);
  F.hub = NULL;
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_HUB_UNAVAILABLE);
  CHECK(ms_reply_cancelled(g_held));
  CHECK_EQ_INT(ms_reply_send_str(g_held, "nobody to hear it"), MS_ERR_CLOSED);
  g_held = NULL;
  svc_stop(&A);
  svc_stop(&B);
}

static void hub_restart_clients_reconnect_and_reregister(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  int port = F.port;
  hub_stop(&F);
  run_for(g_loop, 100);
  CHECK(A.state != MS_CLIENT_READY);
  CHECK_EQ_INT(hub_start(&F, g_loop, port, 1000, NULL), 0);
  svc *v[] = {&A, &B};
  CHECK(run_until_ready(g_loop, v, 2, 5000));
  CHECK_EQ_INT(A.ready_count, 2);
  CHECK_EQ_INT(B.ready_count, 2);
  result r = {0};
  str_request(A.c, "svc-b", "echo", "again", 0, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_STR(r.str, "again");
  teardown_pair();
}

static void tokens_admit_only_their_own_name(void) {
  const char *secret = "s3cret";
  CHECK_EQ_INT(hub_start(&F, g_loop, 0, 1000, secret), 0);
  char tok_a[512];
  ms_token_key key = {NULL, (const uint8_t *)secret, strlen(secret)};
  int64_t now_s = ms_wall_us() / 1000000;
  CHECK_EQ_INT(ms_token_mint(&key, "svc-a", MS_SCOPE_SERVICE, now_s,
                             now_s + 600, tok_a, sizeof tok_a), 0);
  svc good, wrong, none;
  svc_start(&good, &F, "svc-a", MS_ENC_MSGPACK, tok_a);
  svc_start(&wrong, &F, "svc-b", MS_ENC_MSGPACK, tok_a); /* a's token */
  svc_start(&none, &F, "svc-c", MS_ENC_JSON, NULL);
  svc *v[] = {&good};
  CHECK(run_until_ready(g_loop, v, 1, 3000));
  int64_t end = ms_now_ms() + 3000;
  while ((wrong.last_err == 0 || none.last_err == 0) && ms_now_ms() < end)
    ms_loop_run_once(g_loop, 10);
  CHECK_EQ_INT(wrong.last_err, MS_ERR_FORBIDDEN);
  CHECK_EQ_INT(none.last_err, MS_ERR_UNAUTHORIZED);
  CHECK_EQ_INT(wrong.ready_count, 0);
  svc_stop(&good);
  svc_stop(&wrong);
  svc_stop(&none);
  hub_stop(&F);
}

typedef struct cred_state {
  int calls;
  const char *secret;
} cred_state;

static cred_state g_cred;
static int fresh_token(ms_client *c, ms_credentials *cr, void *ud) {
  (void)ud;
  g_cred.calls++;
  ms_token_key key = {NULL, (const uint8_t *)g_cred.secret,
                      strlen(g_cred.secret)};
  int64_t now_s = ms_wall_us() / 1000000;
  return ms_token_mint(&key, ms_client_service(c), MS_SCOPE_SERVICE, now_s,
                       now_s + 600, cr->token, sizeof cr->token);
}

static void credentials_callback_supplies_a_token_on_each_connect(void) {
  g_cred.calls = 0;
  g_cred.secret = "rotating-secret";
  CHECK_EQ_INT(hub_start(&F, g_loop, 0, 1000, g_cred.secret), 0);
  svc s;
  memset(&s, 0, sizeof s);
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "svc-cred";
  cfg.credentials = fresh_token;
  cfg.on_state = svc_state;
  cfg.backoff_min_ms = 20;
  cfg.backoff_max_ms = 100;
  CHECK_EQ_INT(ms_client_new(&s.c, &cfg, &s, NULL), 0);
  CHECK_EQ_INT(ms_posix_client_new(&s.pc, g_loop, s.c, F.url), 0);
  svc *v[] = {&s};
  CHECK(run_until_ready(g_loop, v, 1, 3000));
  CHECK_EQ_INT(g_cred.calls, 1);
  int port = F.port;
  hub_stop(&F);
  run_for(g_loop, 50);
  CHECK_EQ_INT(hub_start(&F, g_loop, port, 1000, g_cred.secret), 0);
  CHECK(run_until_ready(g_loop, v, 1, 5000));
  CHECK(g_cred.calls >= 2);
  CHECK_EQ_INT(s.ready_count, 2);
  svc_stop(&s);
  hub_stop(&F);
}

static void oversized_request_gets_PAYLOAD_TOO_LARGE_and_connection_stays(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  /* WELCOME said max_message; a request above it is refused locally. */
  size_t big = (1 << 20) + 10;
  char *blob = malloc(big);
  memset(blob, 'q', big);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_bin_with_body(&pk, blob, big);
  result r = {0}, r2 = {0};
  CHECK_EQ_INT(ms_client_request(A.c, "svc-b", "echo", (const uint8_t *)sb.data,
                                 sb.size, NULL, on_result, &r, NULL), 0);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_INT(r.err, MS_ERR_PAYLOAD_TOO_LARGE);
  str_request(A.c, "svc-b", "echo", "small", 0, 0, &r2);
  CHECK(run_until(g_loop, &r2.done, 3000));
  CHECK_EQ_STR(r2.str, "small");
  CHECK_EQ_INT(A.ready_count, 1); /* never reconnected */
  msgpack_sbuffer_destroy(&sb);
  free(blob);
  teardown_pair();
}

/* A hub whose accept queue is full never completes the TCP handshake: the
 * driver gives the connect up after its timeout instead of waiting on the
 * kernel's retries, and the client goes on to back off and retry. */
static void connect_that_never_completes_is_abandoned(void) {
  int lfd = -1, port = 0;
  CHECK_EQ_INT(ms_tcp_listen("127.0.0.1", 0, &lfd, &port), 0);
  listen(lfd, 0); /* a queue of (about) one, never accepted */
  int fillers[4];
  for (int i = 0; i < 4; i++)
    ms_tcp_connect("127.0.0.1", port, &fillers[i]);
  run_for(g_loop, 200);
  hubfx f;
  memset(&f, 0, sizeof f);
  f.loop = g_loop;
  snprintf(f.url, sizeof f.url, "ws://127.0.0.1:%d/ws", port);
  svc s;
  CHECK_EQ_INT(svc_start(&s, &f, "svc-stuck", MS_ENC_MSGPACK, NULL), 0);
  int64_t t0 = ms_now_ms();
  while (s.last_err == 0 && ms_now_ms() - t0 < 15000)
    ms_loop_run_once(g_loop, 50);
  CHECK_EQ_INT(s.last_err, MS_ERR_HUB_UNAVAILABLE);
  CHECK(ms_now_ms() - t0 < 15000);
  CHECK_EQ_INT(s.ready_count, 0);
  svc_stop(&s);
  for (int i = 0; i < 4; i++)
    if (fillers[i] >= 0)
      close(fillers[i]);
  close(lfd);
}

/* A name is looked up on the loop (c-ares), never in a blocking
 * getaddrinfo, and every address it has is tried in turn: where
 * "localhost" also means ::1 (most hosts files) and the hub listens on
 * 127.0.0.1 only, ::1 refuses and the next address is taken. */
static void client_reaches_hub_by_name_trying_every_address(void) {
  hubfx f;
  CHECK_EQ_INT(hub_start(&f, g_loop, 0, 1000, NULL), 0);
  snprintf(f.url, sizeof f.url, "ws://localhost:%d/ws", f.port);
  svc s;
  CHECK_EQ_INT(svc_start(&s, &f, "by-name", MS_ENC_MSGPACK, NULL), 0);
  svc *v[] = {&s};
  int ok = run_until_ready(g_loop, v, 1, 10000);
  svc_stop(&s);
  hub_stop(&f);
  CHECK(ok);
}

/* Several addresses from a real DNS lookup (a fake server on 127.0.0.1,
 * named through dns_servers): the client tries them in the resolver's
 * order until one takes the connection. `hub_on` is where the hub listens;
 * the other addresses refuse. c-ares sorts the answer (RFC 6724: ::1
 * before 127.0.0.1), so the mixed cases try ::1 first; the IPv4-only
 * cases keep the server's order, one with the refusing address first. */
static int reach_by_dns(const char *hub_on, const char *const *answers,
                        size_t n, int *asked) {
  fakedns dns;
  memset(&dns, 0, sizeof dns);
  for (size_t i = 0; i < n; i++)
    if (fakedns_add(&dns, answers[i]) != 0)
      return -1;
  if (fakedns_start(&dns, "hub.ms-test.example") != 0)
    return -2;
  hubfx f;
  memset(&f, 0, sizeof f);
  f.loop = g_loop;
  ms_hub_config hcfg;
  ms_hub_config_init(&hcfg);
  int rv = -3;
  if (ms_hub_new(&f.hub, &hcfg, NULL, NULL) == 0 &&
      ms_posix_hub_new(&f.ph, g_loop, f.hub, hub_on, 0) == 0) {
    f.port = ms_posix_hub_port(f.ph);
    snprintf(f.url, sizeof f.url, "ws://hub.ms-test.example:%d/ws", f.port);
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", dns.port);
    svc s;
    memset(&s, 0, sizeof s);
    ms_client_config cfg;
    ms_client_config_init(&cfg);
    cfg.service = "by-dns";
    cfg.on_state = svc_state;
    cfg.backoff_min_ms = 20;
    cfg.backoff_max_ms = 200;
    cfg.dns_servers = servers;
    rv = -4;
    if (ms_client_new(&s.c, &cfg, &s, NULL) == 0 &&
        ms_posix_client_new(&s.pc, g_loop, s.c, f.url) == 0) {
      svc *v[] = {&s};
      rv = run_until_ready(g_loop, v, 1, 10000) ? 0 : -5;
      /* Reached at the first attempt: no address refused it for good. */
      if (rv == 0 && s.last_err != 0)
        rv = -6;
    }
    svc_stop(&s);
  }
  hub_stop(&f);
  fakedns_stop(&dns);
  *asked = atomic_load(&dns.a_queries) + atomic_load(&dns.aaaa_queries);
  return rv;
}

static void client_tries_every_dns_address_ipv4_refusing_first(void) {
  const char *ans[] = {"127.0.0.2", "127.0.0.1"};
  int asked = 0;
  CHECK_EQ_INT(reach_by_dns("127.0.0.1", ans, 2, &asked), 0);
  CHECK(asked >= 1);
}

static void client_tries_every_dns_address_ipv4_working_first(void) {
  const char *ans[] = {"127.0.0.1", "127.0.0.2"};
  int asked = 0;
  CHECK_EQ_INT(reach_by_dns("127.0.0.1", ans, 2, &asked), 0);
  CHECK(asked >= 1);
}

static int ipv6_loopback(void);

static void client_tries_every_dns_address_ipv6_refusing(void) {
  if (!ipv6_loopback()) {
    printf("# SKIP no IPv6 loopback on this machine\n");
    return;
  }
  const char *ans[] = {"127.0.0.1", "::1"};
  int asked = 0;
  CHECK_EQ_INT(reach_by_dns("127.0.0.1", ans, 2, &asked), 0);
  CHECK(asked >= 2); /* A and AAAA */
}

static void client_takes_the_first_dns_address_when_it_answers(void) {
  if (!ipv6_loopback()) {
    printf("# SKIP no IPv6 loopback on this machine\n");
    return;
  }
  const char *ans[] = {"127.0.0.1", "::1"};
  int asked = 0;
  CHECK_EQ_INT(reach_by_dns("::1", ans, 2, &asked), 0);
  CHECK(asked >= 2);
}

static void unknown_dns_name_fails_the_attempt(void) {
  fakedns dns;
  memset(&dns, 0, sizeof dns);
  CHECK_EQ_INT(fakedns_start(&dns, "other.ms-test.example"), 0);
  char servers[64], url[96];
  snprintf(servers, sizeof servers, "127.0.0.1:%d", dns.port);
  snprintf(url, sizeof url, "ws://hub.ms-test.example:1/ws");
  svc s;
  memset(&s, 0, sizeof s);
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "by-dns";
  cfg.on_state = svc_state;
  cfg.backoff_min_ms = 20;
  cfg.backoff_max_ms = 200;
  cfg.dns_servers = servers;
  int ok = ms_client_new(&s.c, &cfg, &s, NULL) == 0 &&
           ms_posix_client_new(&s.pc, g_loop, s.c, url) == 0;
  int64_t end = ms_now_ms() + 10000;
  while (ok && s.last_err == 0 && ms_now_ms() < end)
    ms_loop_run_once(g_loop, 10);
  int err = s.last_err;
  svc_stop(&s);
  fakedns_stop(&dns);
  CHECK(ok);
  CHECK_EQ_INT(err, MS_ERR_HUB_UNAVAILABLE);
  CHECK(atomic_load(&dns.a_queries) + atomic_load(&dns.aaaa_queries) >= 1);
}

static void bad_dns_server_list_is_refused(void) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "by-dns";
  cfg.dns_servers = "not an address";
  ms_client *c = NULL;
  CHECK_EQ_INT(ms_client_new(&c, &cfg, NULL, NULL), 0);
  ms_posix_client *pc = NULL;
  int rv = ms_posix_client_new(&pc, g_loop, c, "ws://hub.ms-test.example:1/ws");
  ms_posix_client_del(pc);
  ms_client_del(c);
  CHECK_EQ_INT(rv, MS_ERR_INVALID_ARG);
}

static int ipv6_loopback(void) {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0)
    return 0;
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static void client_and_hub_over_ipv6_loopback(void) {
  if (!ipv6_loopback()) {
    printf("# SKIP no IPv6 loopback on this machine\n");
    return;
  }
  hubfx f;
  memset(&f, 0, sizeof f);
  f.loop = g_loop;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  CHECK_EQ_INT(ms_hub_new(&f.hub, &cfg, NULL, NULL), 0);
  CHECK_EQ_INT(ms_posix_hub_new(&f.ph, g_loop, f.hub, "::1", 0), 0);
  f.port = ms_posix_hub_port(f.ph);
  snprintf(f.url, sizeof f.url, "ws://[::1]:%d/ws", f.port);
  svc a, b;
  CHECK_EQ_INT(svc_start(&a, &f, "v6-a", MS_ENC_MSGPACK, NULL), 0);
  CHECK_EQ_INT(svc_start(&b, &f, "v6-b", MS_ENC_JSON, NULL), 0);
  svc *v[] = {&a, &b};
  CHECK(run_until_ready(g_loop, v, 2, 10000));
  svc_stop(&a);
  svc_stop(&b);
  hub_stop(&f);
}

static int g_freed;
static void free_self_in_callback(ms_client *c, const ms_response_arg *a,
                                  void *ud) {
  (void)a;
  svc *s = ud;
  ms_posix_client_del(s->pc);
  s->pc = NULL;
  ms_client_del(c);
  s->c = NULL;
  g_freed = 1;
}

static void client_freed_inside_its_callback(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_str_with_body(&pk, "bye", 3);
  g_freed = 0;
  /* Two requests: the second one's callback runs during the free. */
  ms_client_request(A.c, "svc-b", "echo", (const uint8_t *)sb.data, sb.size,
                    NULL, free_self_in_callback, &A, NULL);
  result r2 = {0};
  ms_client_request(A.c, "svc-b", "hold", NULL, 0, NULL, on_result, &r2, NULL);
  CHECK(run_until(g_loop, &g_freed, 3000));
  CHECK_EQ_INT(r2.done, 1);
  CHECK_EQ_INT(r2.err, MS_ERR_CANCELLED);
  msgpack_sbuffer_destroy(&sb);
  run_for(g_loop, 50);
  teardown_pair();
}

typedef struct pres_state {
  int ups, downs, live;
  char last_down_reason[32];
} pres_state;

static void on_presence(ms_client *c, const ms_msg *m, void *ud) {
  pres_state *p = ud;
  (void)c;
  if (m->type == MS_MSG_RECORD && m->message.len == 4 &&
      memcmp(m->message.ptr, "live", 4) == 0)
    p->live++;
  if (m->type != MS_MSG_PRESENCE)
    return;
  if (m->kind.len == 2 && memcmp(m->kind.ptr, "up", 2) == 0)
    p->ups++;
  else {
    p->downs++;
    ms_str reason;
    if (ms_map_get_str(&m->extra, "reason", &reason) == 0)
      snprintf(p->last_down_reason, sizeof p->last_down_reason, "%.*s",
               (int)reason.len, reason.ptr);
  }
}

static void presence_reports_up_and_down(void) {
  setup_pair(MS_ENC_MSGPACK, MS_ENC_MSGPACK);
  pres_state ps = {0};
  ms_client_on_message(A.c, on_presence, &ps);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_object filter;
  filter.type = MSGPACK_OBJECT_MAP;
  filter.via.map.size = 0;
  filter.via.map.ptr = NULL;
  ms_enc_subscribe(&pk, 1, ms_str_c("presence"), &filter);
  CHECK_EQ_INT(ms_client_send_raw(A.c, (const uint8_t *)sb.data, sb.size), 0);
  CHECK(run_until(g_loop, &ps.live, 3000));
  svc C;
  svc_start(&C, &F, "svc-c", MS_ENC_JSON, NULL);
  CHECK(run_until(g_loop, &ps.ups, 3000));
  svc_stop(&C);
  CHECK(run_until(g_loop, &ps.downs, 3000));
  CHECK_EQ_STR(ps.last_down_reason, "closed");
  msgpack_sbuffer_destroy(&sb);
  teardown_pair();
}

static void thousand_services_register_on_one_hub(void) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 4096) {
    rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  CHECK(rl.rlim_cur >= 2100); /* 1000 clients + 1000 hub ends + spare */
  CHECK_EQ_INT(hub_start(&F, g_loop, 0, 5000, NULL), 0);
  enum { N = 1000 };
  svc *v = calloc(N, sizeof *v);
  svc **pv = calloc(N, sizeof *pv);
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof name, "svc-%04d", i);
    CHECK_EQ_INT(svc_start(&v[i], &F, name, MS_ENC_MSGPACK, NULL), 0);
    ms_client_on(v[i].c, "echo", h_echo, NULL);
    pv[i] = &v[i];
  }
  CHECK(run_until_ready(g_loop, pv, N, 30000));
  ms_hub_stats st;
  ms_hub_get_stats(F.hub, &st);
  CHECK_EQ_INT(st.services, N);
  /* Every one is reachable by name. */
  result r = {0};
  str_request(v[0].c, "svc-0999", "echo", "far end", 0, 0, &r);
  CHECK(run_until(g_loop, &r.done, 3000));
  CHECK_EQ_STR(r.str, "far end");
  for (int i = 0; i < N; i++)
    svc_stop(&v[i]);
  free(v);
  free(pv);
  run_for(g_loop, 50);
  hub_stop(&F);
}

static const ms_test_case tests[] = {
    TEST(request_success_roundtrip),
    TEST(json_and_msgpack_clients_call_each_other),
    TEST(unknown_target_gets_TARGET_SERVICE_NOT_FOUND),
    TEST(unknown_event_gets_EVENT_NOT_FOUND),
    TEST(handler_error_code_reaches_requester),
    TEST(handler_without_reply_gets_INTERNAL_SERVER_ERROR),
    TEST(async_reply_from_later_callback),
    TEST(timeout_gets_REQUEST_TIMEOUT_with_error_data),
    TEST(late_response_inside_window_reaches_on_late),
    TEST(late_response_after_window_is_dropped),
    TEST(duplicate_name_is_reported_and_client_stops),
    TEST(target_disconnect_fails_request_before_timeout),
    TEST(requester_disconnect_cancels_at_target),
    TEST(cancel_ends_request_once_and_tells_target),
    TEST(request_without_hub_gets_HUB_UNAVAILABLE),
    TEST(inflight_requests_end_with_HUB_UNAVAILABLE_when_hub_goes),
    TEST(hub_restart_clients_reconnect_and_reregister),
    TEST(tokens_admit_only_their_own_name),
    TEST(credentials_callback_supplies_a_token_on_each_connect),
    TEST(oversized_request_gets_PAYLOAD_TOO_LARGE_and_connection_stays),
    TEST(client_freed_inside_its_callback),
    TEST(presence_reports_up_and_down),
    TEST(thousand_services_register_on_one_hub),
    TEST(connect_that_never_completes_is_abandoned),
    TEST(client_reaches_hub_by_name_trying_every_address),
    TEST(client_and_hub_over_ipv6_loopback),
    TEST(client_tries_every_dns_address_ipv4_refusing_first),
    TEST(client_tries_every_dns_address_ipv4_working_first),
    TEST(client_tries_every_dns_address_ipv6_refusing),
    TEST(client_takes_the_first_dns_address_when_it_answers),
    TEST(unknown_dns_name_fails_the_attempt),
    TEST(bad_dns_server_list_is_refused),
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  ms_loop_new(&g_loop, NULL);
  int rv = ms_test_run(tests, sizeof tests / sizeof tests[0], argc, argv);
  ms_loop_del(g_loop);
  return rv;
}
