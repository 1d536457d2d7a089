/* Allocation failure as a tested path: each scenario runs once to count
 * the allocations it makes, then once more for every N with the Nth
 * allocation failing. Under ASan/LSan this finds crashes, uses after free
 * and leaks on every failure path; the scenarios also check that every
 * accepted request got exactly one callback.
 *
 * The hook is this program's own malloc/calloc/realloc/free, which
 * forwards to the sanitizer's allocator (or glibc's): so it also fails the
 * allocations msgpack-c (buffers, zones), wslay, nettle and the driver
 * core make, not only those through ms_allocator. It is active only while
 * a scenario runs. */
#include "ms_test.h"
#include "fakehub.h"
#include "hubsim.h"
#include "siosim.h"

#include <microstream/ms_posix.h>

#ifdef MS_HAVE_CLUSTER
#include "ms_drv_cluster.h"
#endif

extern void *__interceptor_malloc(size_t) __attribute__((weak));
extern void *__interceptor_calloc(size_t, size_t) __attribute__((weak));
extern void *__interceptor_realloc(void *, size_t) __attribute__((weak));
extern void __interceptor_free(void *) __attribute__((weak));
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

/* Undefined behaviour on a failure path fails the test too. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1";
}

static int fm_active;
static long fm_count;
static long fm_fail_at; /* 0: never */
static long fm_failed;

static int fm_fail(void) {
  if (!fm_active)
    return 0;
  if (++fm_count == fm_fail_at) {
    fm_failed++;
    return 1;
  }
  return 0;
}

void *malloc(size_t n) {
  if (fm_fail())
    return NULL;
  return __interceptor_malloc ? __interceptor_malloc(n) : __libc_malloc(n);
}
void *calloc(size_t k, size_t n) {
  if (fm_fail())
    return NULL;
  return __interceptor_calloc ? __interceptor_calloc(k, n)
                              : __libc_calloc(k, n);
}
void *realloc(void *p, size_t n) {
  if (fm_fail())
    return NULL;
  return __interceptor_realloc ? __interceptor_realloc(p, n)
                               : __libc_realloc(p, n);
}
void free(void *p) {
  if (__interceptor_free)
    __interceptor_free(p);
  else
    __libc_free(p);
}

/* ---- bookkeeping of request callbacks ---- */

#define MAX_REQ 16
typedef struct req_log {
  int accepted[MAX_REQ]; /* ms_client_request returned 0 */
  int calls[MAX_REQ];
  int n;
} req_log;

static req_log g_reqs;
static int g_bad; /* a scenario saw a broken invariant */

static void on_answer(ms_client *c, const ms_response_arg *a, void *ud) {
  (void)c, (void)a;
  g_reqs.calls[(int)(intptr_t)ud]++;
}

static void on_late(ms_client *c, const ms_response_arg *a, void *ud) {
  (void)c, (void)a, (void)ud;
}

static uint64_t request(ms_client *c, const char *target, int64_t timeout,
                        int64_t late) {
  if (g_reqs.n >= MAX_REQ)
    return 0;
  int k = g_reqs.n++;
  ms_request_opts o;
  memset(&o, 0, sizeof o);
  o.timeout_ms = timeout;
  if (late) {
    o.late_ms = late;
    o.on_late = on_late;
  }
  uint64_t id = 0;
  static const uint8_t data[] = {0x91, 0x01}; /* [1] */
  int rv = ms_client_request(c, target, "work", data, sizeof data, &o,
                             on_answer, (void *)(intptr_t)k, &id);
  g_reqs.accepted[k] = rv == 0;
  return rv == 0 ? id : 0;
}

/* After the client is gone: each accepted request had one callback, and
 * a refused one had none. */
static void check_requests(void) {
  for (int k = 0; k < g_reqs.n; k++)
    if (g_reqs.calls[k] != (g_reqs.accepted[k] ? 1 : 0)) {
      printf("#   request %d: %d callbacks (accepted %d), fail_at %ld\n", k,
             g_reqs.calls[k], g_reqs.accepted[k], fm_fail_at);
      g_bad = 1;
    }
}

static void on_rec(ms_client *c, const ms_record *r, void *ud) {
  (void)c, (void)r, (void)ud;
}

/* ---- scenarios ---- */

static void scenario_client_new(void) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "svc";
  cfg.token = "tok";
  cfg.instance = "i-1";
  cfg.seed = 1;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) == 0) {
    ms_client_on(c, "work", NULL, NULL);
    ms_client_del(c);
  }
}

static void handler(ms_client *c, ms_reply *r, const ms_request_arg *a,
                    void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_send_str(r, "done");
}

/* A client and the scripted hub: register, requests (answered, timed out
 * with a late window, cancelled, refused by the hub), logs, a
 * subscription, a handled request, the connection lost with requests in
 * flight, a reconnect, and the client deleted with requests pending. */
static void scenario_client_session(void) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "svc";
  cfg.seed = 3;
  cfg.backoff_min_ms = 10;
  cfg.backoff_max_ms = 20;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return;
  ms_log_set_sink(c, NULL, NULL);
  ms_client_on(c, "work", handler, NULL);
  ms_log(c, MS_LEVEL_INFO, "queued %d", 1);
  fakehub f;
  fh_init(&f, c, 1000);
  if (fh_accept(&f) == 0) {
    fh_welcome(&f);
    uint64_t sid = 0;
    const char *svcs[] = {"a"};
    ms_subscribe_opts so;
    memset(&so, 0, sizeof so);
    so.services = svcs;
    so.n_services = 1;
    so.contains = "x";
    ms_client_subscribe(c, "logs", &so, on_rec, NULL, &sid);
    uint64_t a = request(c, "t", 100, 0);
    uint64_t b = request(c, "t", 100, 500);
    uint64_t d = request(c, "t", 100, 0);
    uint64_t e = request(c, "t", 100, 0);
    request(c, "t", 100, 0); /* left in flight: the connection drops */
    fh_advance(&f, 0);
    if (a)
      fh_respond_str(&f, a, "ok");
    if (d)
      ms_client_cancel(c, d);
    if (e)
      fh_error(&f, e, "TARGET_SERVICE_NOT_FOUND");
    /* The hub asks the client to do work. */
    ms_enc_request_raw(fh_pk(&f), 77, (ms_str){"other", 5},
                       (ms_str){"work", 4}, (const uint8_t *)"\xc0", 1, 1000,
                       NULL, 0);
    fh_send(&f);
    ms_log(c, MS_LEVEL_WARN, "live %s", "record");
    fh_advance(&f, 100); /* b times out, late window opens */
    if (b)
      fh_respond_str(&f, b, "late");
    fh_advance(&f, 10);
    if (sid)
      ms_client_unsubscribe(c, sid);
  }
  fh_drop(&f); /* in-flight requests end: HUB_UNAVAILABLE */
  f.now += 50;
  if (ms_client_want_connect(c, f.now) && fh_accept(&f) == 0) {
    fh_welcome(&f);
    request(c, "t", 1000, 0);
    fh_advance(&f, 0);
  }
  request(c, "t", 1000, 0);
  ms_client_del(c); /* pending ones: CANCELLED */
  f.c = NULL;
  fh_free(&f);
}

/* The local sink always gets a map (without its fields when out of
 * memory), never a broken object. */
static void sink_check(ms_client *c, int64_t ts, int level, const char *msg,
                       const msgpack_object *fields, void *ud) {
  (void)c, (void)ts, (void)level, (void)ud;
  if (!msg || !fields || fields->type != MSGPACK_OBJECT_MAP) {
    printf("#   the sink got no message or no map, fail_at %ld\n",
           fm_fail_at);
    g_bad = 1;
  }
}

/* Logs with a local sink: fields given as a list (short, and longer than
 * what fits on the stack) and as bytes, records dropped from a full queue,
 * then shipped with the dropped count. */
static void scenario_logs(void) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "svc";
  cfg.seed = 3;
  cfg.backoff_min_ms = 10;
  cfg.backoff_max_ms = 20;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return;
  ms_log_set_sink(c, sink_check, NULL);
  ms_log_set_queue(c, 1);
  ms_log_field few[] = {MS_FSTR("k", "v"), MS_FINT("n", -3),
                        MS_FDBL("d", 1.5), MS_FBOOL("b", 1)};
  ms_log_field many[24];
  for (int i = 0; i < 24; i++)
    many[i] = (ms_log_field)MS_FINT("i", i);
  static const uint8_t raw[] = {0x81, 0xa1, 'r', 0x01}; /* {r: 1} */
  ms_log_fields(c, MS_LEVEL_INFO, few, 4, "few");
  ms_log_fields(c, MS_LEVEL_INFO, many, 24, "many");
  ms_log_raw(c, MS_LEVEL_INFO, "raw", 3, raw, sizeof raw);
  fakehub f;
  fh_init(&f, c, 1000);
  if (fh_accept(&f) == 0) {
    fh_welcome(&f); /* the queued one goes with _dropped */
    ms_log_fields(c, MS_LEVEL_WARN, few, 4, "live");
    fh_pump(&f);
  }
  ms_client_del(c);
  f.c = NULL;
  fh_free(&f);
}

static int on_http(ms_hub *h, ms_conn *c, const ms_http_request *req,
                   void *ud) {
  (void)h, (void)req, (void)ud;
  return ms_conn_http_respond(c, 200, "text/plain", NULL, "x\n", 2) == 0 ? 0
                                                                         : -1;
}

static ms_client *sim_cl_enc(const char *name, int watch, ms_encoding enc) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.instance = watch ? NULL : "i-1";
  cfg.seed = 5;
  cfg.watch = watch;
  cfg.encoding = enc;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return NULL;
  ms_log_set_sink(c, NULL, NULL);
  return c;
}

static ms_client *sim_cl(const char *name, int watch) {
  return sim_cl_enc(name, watch, MS_ENC_MSGPACK);
}

/* The watcher asked for alpha's records only: a filter the hub could not
 * keep must be refused, never widened to every service. */
static void on_rec_alpha_only(ms_client *c, const ms_record *r, void *ud) {
  (void)c, (void)ud;
  if (r->kind == MS_RECORD_LOG &&
      !(r->service.len == 5 && memcmp(r->service.ptr, "alpha", 5) == 0)) {
    printf("#   a record from %.*s passed a filter for alpha, fail_at %ld\n",
           (int)r->service.len, r->service.ptr, fm_fail_at);
    g_bad = 1;
  }
}

/* Socket.IO over polling: a watcher gets a service's records (with fields)
 * as events, and a session that takes a registered name gets its
 * CONNECT_ERROR. */
static void scenario_sio(void) {
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  hc.hub_id = "hub-fm";
  hc.heartbeat_ms = 1000000;
  sim s;
  if (sim_init(&s, &hc) != 0)
    return;
  ms_client *a = sim_cl("alpha", 0);
  if (a)
    sim_add(&s, a);
  sim_pump(&s);
  static char out[16384];
  char sid[24], dup[24];
  int w = sio_open(&s, NULL, sid) == 0;
  if (w)
    sio_poll(&s, sid, out, sizeof out);
  if (a) {
    static const uint8_t f[] = {0x82, 0xa1, 'k', 0xa1, 'v', 0xa5, 'l',
                                'e',  'v',  'e', 'l', 0x01};
    ms_log_raw(a, MS_LEVEL_WARN, "to a watcher", 12, f, sizeof f);
    ms_log(a, MS_LEVEL_INFO, "plain");
  }
  sim_pump(&s);
  /* Without failures both paths are taken. */
  const char *body = w ? sio_poll(&s, sid, out, sizeof out) : "";
  if (!fm_fail_at && !strstr(body, "42[\"log\",{\"level\":\"warn\"")) {
    printf("#   the watcher got no log event\n");
    g_bad = 1;
  }
  body = sio_open(&s, "alpha", dup) == 0 ? sio_poll(&s, dup, out, sizeof out)
                                         : "";
  if (!fm_fail_at && !strstr(body, "44{\"message\"")) {
    printf("#   the second alpha got no CONNECT_ERROR\n");
    g_bad = 1;
  }
  sim_free(&s);
}

/* A hub with two services, one of them on microstream.json.v1, and a
 * watcher: routing, logs and presence (with its detail) to a subscriber,
 * an HTTP request, a service dropping with a request routed to it. */
static void scenario_hub(void) {
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  hc.hub_id = "hub-fm";
  hc.on_http = on_http;
  sim s;
  if (sim_init(&s, &hc) != 0)
    return;
  ms_client *a = sim_cl("alpha", 0);
  ms_client *b = sim_cl_enc("beta", 0, MS_ENC_JSON);
  ms_client *w = sim_cl("watch", 1);
  if (a)
    ms_client_on(a, "work", handler, NULL);
  int ia = a ? sim_add(&s, a) : -1;
  if (b)
    sim_add(&s, b);
  if (w)
    sim_add(&s, w);
  sim_pump(&s);
  if (w) {
    const char *only[] = {"alpha"};
    ms_subscribe_opts so;
    memset(&so, 0, sizeof so);
    so.services = only;
    so.n_services = 1;
    so.contains = "says";
    ms_client_subscribe(w, "logs", &so, on_rec_alpha_only, NULL, NULL);
    ms_client_subscribe(w, "presence", NULL, on_rec, NULL, NULL);
  }
  sim_pump(&s);
  if (a)
    ms_log(a, MS_LEVEL_WARN, "alpha says %d", 1);
  if (b) {
    request(b, "alpha", 500, 0);
    request(b, "nobody", 500, 0);
    ms_log(b, MS_LEVEL_WARN, "beta says %d", 2);
  }
  sim_pump(&s);
  ms_hub_conn *http = NULL;
  if (ms_hub_accept(s.hub, &http, NULL, s.now) == 0) {
    static const char get[] = "GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n";
    ms_hub_conn_feed(http, (const uint8_t *)get, sizeof get - 1, s.now);
    size_t n = 0;
    ms_hub_conn_peek(http, &n);
    ms_hub_conn_consume(http, n);
    ms_hub_conn_release(http);
  }
  if (b)
    request(b, "alpha", 500, 0);
  if (ia >= 0)
    sim_drop(&s, ia); /* alpha goes away with a request routed to it */
  sim_advance(&s, 600);
  sim_free(&s);
}

/* ---- a Socket.IO service's requests (the hub's /socket.io/ endpoint) */

/* POST body to session sid; the whole answer into out. */
static void sio_post(sim *s, const char *sid, const char *body, char *out,
                     size_t cap) {
  char head[256];
  snprintf(head, sizeof head,
           "POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\n"
           "Host: x\r\nContent-Length: %zu\r\n\r\n",
           sid, strlen(body));
  sio_http(s, head, body, out, cap);
}

static void echo_handler(ms_client *c, ms_reply *r, const ms_request_arg *a,
                         void *ud) {
  (void)c, (void)ud;
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (a->data && msgpack_pack_object(&pk, *a->data) == 0)
    ms_reply_send(r, (const uint8_t *)sb.data, sb.size);
  else
    ms_reply_send_str(r, "no memory");
  msgpack_sbuffer_destroy(&sb);
}

/* A MicroStream Node service's session over polling next to a native
 * service: CONNECT, a request with duplicate keys, many keys and numbers
 * to read as JavaScript does, the answer collected by a poll, a log, an
 * event nobody knows, a bad packet. */
static void scenario_sio_request(void) {
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  hc.hub_id = "hub-sio";
  sim s;
  if (sim_init(&s, &hc) != 0)
    return;
  ms_client *a = sim_cl("alpha", 0);
  if (a) {
    ms_client_on(a, "work", echo_handler, NULL);
    sim_add(&s, a);
  }
  sim_pump(&s);
  static char resp[4096];
  char sid[24];
  if (sio_open(&s, "node1", sid) == 0) {
    sio_post(&s, sid,
             "421[\"request\",{\"targetService\":\"alpha\",\"payload\":"
             "{\"id\":\"r1\",\"event\":\"work\",\"data\":{\"n\":1.0,"
             "\"n\":2,\"f\":2.5,\"big\":12345678901234567890,\"k1\":1,"
             "\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,"
             "\"k8\":8,\"k1\":[\"a\\u0000b\",null,true]}}}]",
             resp, sizeof resp);
    sio_post(&s, sid,
             "42[\"log\",{\"level\":\"warn\",\"message\":\"sio says\","
             "\"meta\":{\"x\":1}}]\x1e" "422[\"nobody\",{}]",
             resp, sizeof resp);
    sim_advance(&s, 10);
    const char *body = sio_poll(&s, sid, resp, sizeof resp);
    /* Without failures the answer is there: the data as the service got
     * it (the last of duplicate keys, in the place of the first; numbers
     * as JavaScript reads them). */
    if (fm_fail_at == 0 &&
        !strstr(body, "431[{\"n\":2,\"f\":2.5,\"big\":1.2345678901234567e+19,"
                      "\"k1\":[\"a\\u0000b\",null,true],\"k2\":2,\"k3\":3,"
                      "\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8}]")) {
      printf("#   no answer in the poll: %s\n", body);
      g_bad = 1;
    }
    sio_post(&s, sid, "42[\"request\",{\"x\":01}]", resp, sizeof resp);
  }
  sim_advance(&s, 100);
  sim_free(&s);
}

/* The driver core and the POSIX loop over 127.0.0.1: a hub and a client
 * on one loop, a request the client answers itself, then everything
 * deleted. Bounded: each run stops after a few hundred milliseconds at
 * most, ready or not. */
static void state_ready(ms_client *c, const ms_client_state_arg *a,
                        void *ud) {
  (void)c;
  if (a->state == MS_CLIENT_READY)
    ++*(int *)ud;
}

static void scenario_driver(void) {
  ms_loop *loop = NULL;
  if (ms_loop_new(&loop, NULL) != 0)
    return;
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  ms_hub *hub = NULL;
  ms_posix_hub *ph = NULL;
  ms_client *c = NULL;
  ms_posix_client *pc = NULL;
  int ready = 0;
  if (ms_hub_new(&hub, &hc, NULL, NULL) == 0 &&
      ms_posix_hub_new(&ph, loop, hub, "127.0.0.1", 0) == 0) {
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", ms_posix_hub_port(ph));
    ms_client_config cfg;
    ms_client_config_init(&cfg);
    cfg.service = "drv";
    cfg.seed = 9;
    cfg.backoff_min_ms = 2;
    cfg.backoff_max_ms = 5;
    cfg.on_state = state_ready;
    if (ms_client_new(&c, &cfg, &ready, NULL) == 0) {
      ms_client_on(c, "work", handler, NULL);
      if (ms_posix_client_new(&pc, loop, c, url) == 0) {
        int64_t end = ms_now_ms() + 300;
        while (!ready && ms_now_ms() < end)
          ms_loop_run_once(loop, 5);
        request(c, "drv", 1000, 0);
        int64_t end2 = ms_now_ms() + (ready ? 200 : 0);
        while (g_reqs.calls[g_reqs.n - 1] == 0 && ms_now_ms() < end2)
          ms_loop_run_once(loop, 5);
      }
    }
  }
  ms_posix_client_del(pc);
  ms_client_del(c);
  ms_posix_hub_del(ph);
  ms_hub_del(hub);
  ms_loop_del(loop);
}

/* The allocator hook's reach: with a counting ms_allocator given to the
 * hub and the client, the drivers' own memory (the driver, each accepted
 * stream) and the packing buffers come from it, and all of it is given
 * back. */
typedef struct counting {
  long live, total;
} counting;
static void *cnt_malloc(size_t n, void *ud) {
  counting *k = ud;
  void *p = malloc(n);
  if (p) {
    k->live++;
    k->total++;
  }
  return p;
}
static void cnt_free(void *p, void *ud) {
  counting *k = ud;
  if (p)
    k->live--;
  free(p);
}
static void *cnt_calloc(size_t a, size_t b, void *ud) {
  counting *k = ud;
  void *p = calloc(a, b);
  if (p) {
    k->live++;
    k->total++;
  }
  return p;
}
static void *cnt_realloc(void *p, size_t n, void *ud) {
  counting *k = ud;
  void *q = realloc(p, n);
  if (q && !p) {
    k->live++;
    k->total++;
  }
  return q;
}

static void allocator_hook_reaches_drivers_and_packing_buffers(void) {
  counting hk = {0, 0}, ck = {0, 0};
  ms_allocator hmem = {cnt_malloc, cnt_free, cnt_calloc, cnt_realloc, &hk};
  ms_allocator cmem = {cnt_malloc, cnt_free, cnt_calloc, cnt_realloc, &ck};
  ms_loop *loop = NULL;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  ms_hub *hub = NULL;
  ms_posix_hub *ph = NULL;
  CHECK_EQ_INT(ms_hub_new(&hub, &hc, NULL, &hmem), 0);
  CHECK(ms_hub_allocator(hub) == &hmem);
  long before = hk.live;
  CHECK_EQ_INT(ms_posix_hub_new(&ph, loop, hub, "127.0.0.1", 0), 0);
  long hub_driver = hk.live - before;
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", ms_posix_hub_port(ph));
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "counted";
  cfg.on_state = state_ready;
  int ready = 0;
  ms_client *c = NULL;
  ms_posix_client *pc = NULL;
  CHECK_EQ_INT(ms_client_new(&c, &cfg, &ready, &cmem), 0);
  CHECK(ms_client_allocator(c) == &cmem);
  ms_log_set_sink(c, NULL, NULL);
  before = ck.live;
  CHECK_EQ_INT(ms_posix_client_new(&pc, loop, c, url), 0);
  long client_driver = ck.live - before;
  long hub_before_accept = hk.live;
  int64_t end = ms_now_ms() + 5000;
  while (!ready && ms_now_ms() < end)
    ms_loop_run_once(loop, 5);
  long hub_session = hk.live - hub_before_accept;
  long client_total = ck.total;
  ms_log(c, MS_LEVEL_INFO, "one record, packed on the hook");
  long log_total = ck.total - client_total;
  ms_posix_client_del(pc);
  ms_client_del(c);
  ms_posix_hub_del(ph);
  ms_hub_del(hub);
  ms_loop_del(loop);
  CHECK_EQ_INT(ready, 1);
  CHECK(hub_driver >= 1);     /* the hub's driver */
  CHECK(client_driver >= 1);  /* the client's driver */
  CHECK(hub_session >= 2);    /* the accepted stream and its session */
  CHECK(log_total >= 1);      /* the record's queue slot and packing */
  CHECK_EQ_INT(hk.live, 0);
  CHECK_EQ_INT(ck.live, 0);
}

#ifdef MS_HAVE_CLUSTER
/* ---- the cluster driver, fed scripted Redis replies (no server) ---- */

/* One chunk for ms_rcl_fuzz_feed: op 1 the subscriber connection; op 2k
 * the command connection, a reply of kind k awaited after those of the
 * commands the hub sent itself (1: the registry, 2: INFO, 7: AUTH, which
 * takes anything but an error). */
static void rfeedn(ms_rcl *rc, unsigned op, const char *resp, size_t n) {
  uint8_t buf[1024];
  if (n + 3 > sizeof buf)
    return;
  buf[0] = (uint8_t)op;
  buf[1] = (uint8_t)(n >> 8);
  buf[2] = (uint8_t)n;
  memcpy(buf + 3, resp, n);
  ms_rcl_fuzz_feed(rc, buf, n + 3);
}

static void rfeed(ms_rcl *rc, unsigned op, const char *resp) {
  rfeedn(rc, op, resp, strlen(resp));
}

/* A message pushed on the subscriber connection. */
static void rpush(ms_rcl *rc, const char *channel, const char *msg,
                  size_t len) {
  char resp[900];
  int k = snprintf(resp, sizeof resp,
                   "*3\r\n$7\r\nmessage\r\n$%zu\r\n%s\r\n$%zu\r\n",
                   strlen(channel), channel, len);
  if (k < 0 || (size_t)k + len + 3 > sizeof resp)
    return;
  memcpy(resp + k, msg, len);
  memcpy(resp + k + len, "\r\n", 2);
  rfeedn(rc, 1, resp, (size_t)k + len + 2);
}

/* What is queued leaves; every command the hub sent is answered (":1"),
 * and the one awaited. */
static void settle(ms_rcl *rc) {
  for (int round = 0; round < 4; round++) {
    ms_rcl_flush(rc); /* (what is queued for other hubs leaves first) */
    char resp[512];
    size_t n = 0, k = ms_rcl_pending(rc);
    for (size_t i = 0; i < k && n + 8 < sizeof resp; i++, n += 4)
      memcpy(resp + n, ":1\r\n", 4);
    memcpy(resp + n, "+OK\r\n", 6);
    rfeedn(rc, 14, resp, n + 5);
    if (ms_rcl_pending(rc) == 0)
      return;
  }
}

#define CL_ALL "microstream:all"
#define CL_ME "microstream:hub:hub-cl"

static ms_cluster_stats g_cl_stats; /* of the last run, before deletion */

/* A clustered hub with a service, a requester and a watcher: the
 * registry read, names claimed, a request to a service on another hub
 * (a batch out), a batch in, records appended and coming back, a history
 * read with live records held meanwhile, a renewal that finds a name
 * taken, a hub leaving and one going silent (the lost-hub claim), Redis
 * going away with records made meanwhile (the outbox) and a claim
 * answered without it, then back. */
static void scenario_cluster(void) {
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  hc.hub_id = "hub-cl";
  hc.heartbeat_ms = 1000;
  sim s;
  if (sim_init(&s, &hc) != 0)
    return;
  ms_rcl *rc = ms_rcl_fuzz_new(s.hub);
  if (!rc) {
    sim_free(&s);
    return;
  }
  ms_client *a = sim_cl("alpha", 0), *w = sim_cl("watch", 1);
  if (a)
    sim_add(&s, a);
  if (w)
    sim_add(&s, w);
  sim_pump(&s);
  /* alpha's claim (sent by the hub), then the registry. */
  rfeed(rc, 14, "*2\r\n:1\r\n$6\r\nhub-cl\r\n+OK\r\n");
  sim_pump(&s);
  rfeed(rc, 2, "*4\r\n$4\r\nrsvc\r\n$5\r\nhub-b\r\n"
               "$4\r\nosvc\r\n$5\r\nhub-c\r\n");
  rfeed(rc, 4, "$21\r\nredis_version:7.2.0\r\n\r\n");
  /* The subscriptions confirmed: the history is read, live records are
   * held until it is in. */
  rfeed(rc, 1, "*3\r\n$9\r\nsubscribe\r\n$22\r\n" CL_ME "\r\n:1\r\n"
               "*3\r\n$9\r\nsubscribe\r\n$15\r\n" CL_ALL "\r\n:2\r\n"
               "*3\r\n$10\r\nssubscribe\r\n$22\r\n" CL_ME "\r\n:1\r\n");
  static const char live1[] = "R07 rec-7";
  static const char live2[] = "S18 hub-cl rec-8";
  rpush(rc, CL_ALL, live1, sizeof live1 - 1);
  rpush(rc, CL_ALL, live2, sizeof live2 - 1);
  rpush(rc, CL_ALL, "Hhub-b s", 8);
  rpush(rc, CL_ALL, "+hub-c psvc", 11);
  /* Floor, history, floor, history. */
  rfeed(rc, 14, ":1\r\n*1\r\n*2\r\n$3\r\n0-5\r\n*2\r\n$1\r\nr\r\n"
                "$5\r\nrec-5\r\n:1\r\n*0\r\n+OK\r\n");
  /* Work: a request to rsvc (on hub-b), logs for the cluster streams. */
  if (a) {
    request(a, "rsvc", 500, 0);
    ms_log(a, MS_LEVEL_WARN, "alpha says %d", 1);
  }
  sim_pump(&s);
  ms_rcl_flush(rc);
  settle(rc);
  /* A batch from hub-b: [u8 5]["hub-b"][u32 len][message]. */
  static const char batch[] = "\x05hub-b\x00\x00\x00\x02\x91\x01";
  rpush(rc, CL_ME, batch, sizeof batch - 1);
  static const char rec[] = "R09 rec-9";
  rpush(rc, CL_ALL, rec, sizeof rec - 1);
  rpush(rc, CL_ALL, "J112 14", 7);
  sim_pump(&s);
  settle(rc);
  /* A renewal: another hub took alpha meanwhile. */
  int64_t t0 = s.now;
  ms_rcl_tick(rc, t0);
  rfeed(rc, 14, "*2\r\n:1\r\n$5\r\nalpha\r\n+OK\r\n");
  sim_pump(&s);
  settle(rc);
  /* hub-b says goodbye; hub-c goes silent (a lease): its names are
   * claimed lost, first refused (its alive key still lives), then
   * taken. */
  rpush(rc, CL_ALL, "Bhub-b", 6);
  settle(rc);
  ms_rcl_tick(rc, t0 + 1500);
  rfeed(rc, 14, "*1\r\n:0\r\n:-1\r\n+OK\r\n");
  ms_rcl_tick(rc, t0 + 2000);
  rfeed(rc, 14, "*1\r\n:0\r\n:1\r\n+OK\r\n");
  settle(rc);
  sim_pump(&s);
  ms_rcl_stats(rc, &g_cl_stats);
  /* Redis goes away: records wait, a new name is answered without it. */
  rfeed(rc, 1, "-ERR gone\r\n");
  if (w)
    ms_log(w, MS_LEVEL_WARN, "watch says %d", 2);
  ms_client *b = sim_cl("beta", 0);
  if (b)
    sim_add(&s, b);
  sim_pump(&s);
  ms_rcl_flush(rc);
  sim_pump(&s);
  /* Back: the outbox leaves. */
  settle(rc);
  ms_rcl_flush(rc);
  settle(rc);
  sim_pump(&s);
  ms_rcl_del(rc);
  sim_free(&s);
}

#endif

typedef struct scenario {
  const char *name;
  void (*fn)(void);
} scenario;

static void run_all_failures(const scenario *sc) {
  /* A dry run counts the allocations and must itself be clean. */
  memset(&g_reqs, 0, sizeof g_reqs);
  fm_fail_at = 0;
  fm_count = 0;
  fm_active = 1;
  sc->fn();
  fm_active = 0;
  check_requests();
  long total = fm_count;
  CHECK(total > 0);
  CHECK(!g_bad);
  int answered = 0;
  for (int k = 0; k < g_reqs.n; k++)
    answered += g_reqs.accepted[k] && g_reqs.calls[k] == 1;
  CHECK_EQ_INT(answered, g_reqs.n); /* without failures all go through */
  long failed = 0;
  for (long n = 1; n <= total + 1; n++) {
    memset(&g_reqs, 0, sizeof g_reqs);
    fm_fail_at = n;
    fm_count = 0;
    fm_failed = 0;
    fm_active = 1;
    sc->fn();
    fm_active = 0;
    failed += fm_failed;
    check_requests();
    CHECK(!g_bad);
  }
  printf("# %s: %ld allocations, each failed once (%ld runs)\n", sc->name,
         total, failed);
  CHECK(failed >= total);
}

#ifdef MS_HAVE_CLUSTER
/* The cluster driver's own memory (the driver, its maps, buffers and
 * queues) comes from the hub's allocator, and all of it is given back. */
static void cluster_driver_memory_comes_from_the_hub_allocator(void) {
  counting hk = {0, 0};
  ms_allocator hmem = {cnt_malloc, cnt_free, cnt_calloc, cnt_realloc, &hk};
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  hc.hub_id = "hub-cl";
  ms_hub *hub = NULL;
  CHECK_EQ_INT(ms_hub_new(&hub, &hc, NULL, &hmem), 0);
  long before = hk.live;
  ms_rcl *rc = ms_rcl_fuzz_new(hub);
  CHECK(rc != NULL);
  long driver = hk.live - before;
  /* The registry (three names on two hubs), a peer's heartbeat, a live
   * record held while the history is read. */
  rfeed(rc, 2, "*6\r\n$2\r\nn1\r\n$5\r\nhub-b\r\n$2\r\nn2\r\n"
               "$5\r\nhub-b\r\n$2\r\nn3\r\n$5\r\nhub-c\r\n");
  rpush(rc, CL_ALL, "Hhub-d", 6);
  rfeed(rc, 1, "*3\r\n$9\r\nsubscribe\r\n$22\r\n" CL_ME "\r\n:1\r\n"
               "*3\r\n$9\r\nsubscribe\r\n$15\r\n" CL_ALL "\r\n:2\r\n");
  rpush(rc, CL_ALL, "R03 rec", 7);
  long held = hk.live - before;
  ms_cluster_stats st;
  ms_rcl_stats(rc, &st);
  ms_rcl_del(rc);
  long after = hk.live - before;
  ms_hub_del(hub);
  printf("# driver %ld, with registry, peers, queues %ld, after delete %ld "
         "allocations live\n", driver, held, after);
  CHECK_EQ_INT((int)st.services, 3);
  CHECK_EQ_INT((int)st.hubs, 3);
  CHECK(driver >= 1);     /* the driver itself */
  /* three names and three peers (an entry and a value each), the maps'
   * tables, the command queue's slots, the held record and its slots */
  CHECK(held >= driver + 3 * 2 + 3 * 2 + 2 + 1 + 2);
  CHECK_EQ_INT((int)after, 0);
  CHECK_EQ_INT((int)hk.live, 0);
}

static void cluster_driver_survives_every_allocation_failure(void) {
  memset(&g_cl_stats, 0, sizeof g_cl_stats);
  scenario_cluster();
  /* The scenario reaches what it says (the run without failures). */
  printf("# commands %llu replies %llu batches %llu messages out %llu in "
         "%llu records out %llu presence lost %llu hubs %llu services "
         "%llu\n",
         (unsigned long long)g_cl_stats.redis_commands,
         (unsigned long long)g_cl_stats.redis_replies,
         (unsigned long long)g_cl_stats.batches,
         (unsigned long long)g_cl_stats.messages_out,
         (unsigned long long)g_cl_stats.messages_in,
         (unsigned long long)g_cl_stats.records_out,
         (unsigned long long)g_cl_stats.presence_lost,
         (unsigned long long)g_cl_stats.hubs,
         (unsigned long long)g_cl_stats.services);
  CHECK(g_cl_stats.batches >= 1);
  CHECK(g_cl_stats.messages_out >= 1);
  CHECK(g_cl_stats.messages_in >= 1);
  CHECK(g_cl_stats.records_out >= 1);
  CHECK(g_cl_stats.presence_lost >= 1);
  CHECK(g_cl_stats.redis_errors == 0);
  scenario sc = {"cluster", scenario_cluster};
  run_all_failures(&sc);
}
#endif

static void client_new_survives_every_allocation_failure(void) {
  scenario s = {"client_new", scenario_client_new};
  run_all_failures(&s);
}

static void client_session_survives_every_allocation_failure(void) {
  scenario s = {"client_session", scenario_client_session};
  run_all_failures(&s);
}

static void logs_survive_every_allocation_failure(void) {
  scenario s = {"logs", scenario_logs};
  run_all_failures(&s);
}

static void sio_sessions_survive_every_allocation_failure(void) {
  scenario s = {"sio", scenario_sio};
  run_all_failures(&s);
}

static void hub_session_survives_every_allocation_failure(void) {
  scenario s = {"hub", scenario_hub};
  run_all_failures(&s);
}

static void sio_request_survives_every_allocation_failure(void) {
  scenario s = {"sio_request", scenario_sio_request};
  run_all_failures(&s);
}

static void driver_survives_every_allocation_failure(void) {
  scenario s = {"driver", scenario_driver};
  run_all_failures(&s);
}

static const ms_test_case tests[] = {
#ifdef MS_HAVE_CLUSTER
    TEST(cluster_driver_memory_comes_from_the_hub_allocator),
    TEST(cluster_driver_survives_every_allocation_failure),
#endif
    TEST(client_new_survives_every_allocation_failure),
    TEST(client_session_survives_every_allocation_failure),
    TEST(logs_survive_every_allocation_failure),
    TEST(hub_session_survives_every_allocation_failure),
    TEST(sio_sessions_survive_every_allocation_failure),
    TEST(sio_request_survives_every_allocation_failure),
    TEST(driver_survives_every_allocation_failure),
    TEST(allocator_hook_reaches_drivers_and_packing_buffers),
};

MS_TEST_MAIN(tests)
