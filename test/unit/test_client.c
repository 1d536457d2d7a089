/* The client engine against a scripted hub (fakehub.h) and a fake clock:
 * requests, late windows, cancel, reconnect, log shipping, and deleting
 * the client from its own callbacks. */
#include "ms_test.h"
#include "fakehub.h"

#define T0 1000000

typedef struct answers {
  int n;
  int err[16];
  int late[16];
  uint64_t id[16];
  char data[16][32];
  int del_client; /* delete the client from the callback */
  fakehub *f;
} answers;

static void on_answer(ms_client *c, const ms_response_arg *a, void *ud) {
  answers *x = ud;
  if (x->n < 16) {
    x->err[x->n] = a->err;
    x->late[x->n] = a->late;
    x->id[x->n] = a->id;
    x->data[x->n][0] = '\0';
    if (a->data && a->data->type == MSGPACK_OBJECT_STR) {
      size_t n = a->data->via.str.size < 31 ? a->data->via.str.size : 31;
      memcpy(x->data[x->n], a->data->via.str.ptr, n);
      x->data[x->n][n] = '\0';
    }
  }
  x->n++;
  if (x->del_client) {
    x->del_client = 0;
    ms_client_del(c);
    /* Still inside the callback: calls are refused, not crashes. */
    if (ms_client_request(c, "t", "x", NULL, 0, NULL, on_answer, x, NULL) !=
        MS_ERR_STATE)
      x->n += 100;
    if (x->f)
      x->f->c = NULL;
  }
}

static ms_client *new_client(const char *name) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.seed = 42;
  cfg.backoff_min_ms = 100;
  cfg.backoff_max_ms = 1000;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return NULL;
  ms_log_set_sink(c, NULL, NULL);
  return c;
}

/* A client registered with the scripted hub. */
static int ready(fakehub *f, const char *name) {
  ms_client *c = new_client(name);
  if (!c)
    return -1;
  fh_init(f, c, T0);
  if (fh_accept(f) != 0)
    return -1;
  fh_welcome(f);
  return ms_client_get_state(c) == MS_CLIENT_READY ? 0 : -1;
}

static void done(fakehub *f) {
  ms_client_del(f->c);
  f->c = NULL;
  fh_free(f);
}

static void hello_is_sent_after_the_upgrade(void) {
  fakehub f;
  CHECK(ready(&f, "svc-a") == 0);
  const fh_seen *h = fh_last(&f, MS_MSG_HELLO);
  CHECK(h != NULL);
  CHECK_EQ_STR(h->text, "svc-a");
  done(&f);
}

static void request_gets_its_response(void) {
  fakehub f;
  CHECK(ready(&f, "caller") == 0);
  answers x = {0};
  uint64_t id = 0;
  CHECK_EQ_INT(ms_client_request(f.c, "target", "echo", NULL, 0, NULL,
                                 on_answer, &x, &id),
               0);
  fh_advance(&f, 0);
  const fh_seen *r = fh_last(&f, MS_MSG_REQUEST);
  CHECK(r != NULL);
  CHECK_EQ_INT(r->id, id);
  CHECK_EQ_STR(r->text, "echo");
  CHECK_EQ_INT(ms_client_pending(f.c), 1);
  fh_respond_str(&f, id, "pong");
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], 0);
  CHECK_EQ_STR(x.data[0], "pong");
  CHECK_EQ_INT(ms_client_pending(f.c), 0);
  /* A second answer for the same id is dropped. */
  fh_respond_str(&f, id, "again");
  CHECK_EQ_INT(x.n, 1);
  done(&f);
}

static void request_error_from_the_hub_is_its_one_callback(void) {
  fakehub f;
  CHECK(ready(&f, "caller") == 0);
  answers x = {0};
  uint64_t id = 0;
  CHECK_EQ_INT(ms_client_request(f.c, "nobody", "x", NULL, 0, NULL,
                                 on_answer, &x, &id),
               0);
  fh_advance(&f, 0);
  fh_error(&f, id, "TARGET_SERVICE_NOT_FOUND");
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], MS_ERR_TARGET_SERVICE_NOT_FOUND);
  done(&f);
}

static void late_opts(ms_request_opts *o, int64_t timeout, int64_t late,
                      answers *late_answers) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = timeout;
  o->late_ms = late;
  o->on_late = on_answer;
  o->late_user_data = late_answers;
}

static void request_times_out_then_late_answer_goes_to_on_late(void) {
  fakehub f;
  CHECK(ready(&f, "caller") == 0);
  answers x = {0}, late = {0};
  ms_request_opts o;
  late_opts(&o, 100, 1000, &late);
  uint64_t id = 0;
  CHECK_EQ_INT(ms_client_request(f.c, "slow", "work", NULL, 0, &o, on_answer,
                                 &x, &id),
               0);
  fh_advance(&f, 0); /* stamps the request */
  CHECK_EQ_INT(fh_last(&f, MS_MSG_REQUEST)->late_ms, 1000);
  fh_advance(&f, 99);
  CHECK_EQ_INT(x.n, 0);
  fh_advance(&f, 1);
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], MS_ERR_REQUEST_TIMEOUT);
  /* Inside the window: on_late, flagged late, and nothing else. */
  fh_advance(&f, 400);
  fh_respond_str(&f, id, "finally");
  CHECK_EQ_INT(late.n, 1);
  CHECK_EQ_INT(late.late[0], 1);
  CHECK_EQ_STR(late.data[0], "finally");
  CHECK_EQ_INT(x.n, 1);
  ms_client_stats st;
  ms_client_get_stats(f.c, &st);
  CHECK_EQ_INT(st.late_delivered, 1);
  done(&f);
}

static void late_answer_after_the_window_is_dropped(void) {
  fakehub f;
  CHECK(ready(&f, "caller") == 0);
  answers x = {0}, late = {0};
  ms_request_opts o;
  late_opts(&o, 100, 200, &late);
  uint64_t id = 0;
  CHECK_EQ_INT(ms_client_request(f.c, "slow", "work", NULL, 0, &o, on_answer,
                                 &x, &id),
               0);
  fh_advance(&f, 0);
  fh_advance(&f, 100);
  CHECK_EQ_INT(x.n, 1);
  int cancels = fh_count(&f, MS_MSG_CANCEL);
  fh_advance(&f, 200); /* the window closes: the hub is told to stop */
  CHECK_EQ_INT(fh_count(&f, MS_MSG_CANCEL), cancels + 1);
  CHECK_EQ_INT(fh_last(&f, MS_MSG_CANCEL)->id, id);
  fh_respond_str(&f, id, "too late");
  CHECK_EQ_INT(late.n, 0);
  CHECK_EQ_INT(x.n, 1);
  ms_client_stats st;
  ms_client_get_stats(f.c, &st);
  CHECK_EQ_INT(st.unknown_dropped, 1);
  done(&f);
}

static void cancel_gives_cancelled_once_and_tells_the_hub(void) {
  fakehub f;
  CHECK(ready(&f, "caller") == 0);
  answers x = {0};
  uint64_t id = 0;
  CHECK_EQ_INT(ms_client_request(f.c, "target", "x", NULL, 0, NULL,
                                 on_answer, &x, &id),
               0);
  fh_advance(&f, 0);
  CHECK_EQ_INT(ms_client_cancel(f.c, id), 0);
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], MS_ERR_CANCELLED);
  fh_pump(&f);
  CHECK(fh_last(&f, MS_MSG_CANCEL) != NULL);
  CHECK_EQ_INT(fh_last(&f, MS_MSG_CANCEL)->id, id);
  CHECK_EQ_INT(ms_client_cancel(f.c, id), MS_ERR_NOT_FOUND);
  fh_respond_str(&f, id, "ignored");
  CHECK_EQ_INT(x.n, 1);
  done(&f);
}

static void request_while_not_ready_fails_on_the_next_tick(void) {
  ms_client *c = new_client("early");
  CHECK(c != NULL);
  answers x = {0};
  CHECK_EQ_INT(ms_client_request(c, "target", "x", NULL, 0, NULL, on_answer,
                                 &x, NULL),
               0);
  CHECK_EQ_INT(x.n, 0); /* never from inside ms_client_request */
  ms_client_tick(c, T0);
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], MS_ERR_HUB_UNAVAILABLE);
  ms_client_del(c);
}

static void reconnect_fails_inflight_and_registers_again(void) {
  fakehub f;
  CHECK(ready(&f, "svc") == 0);
  answers x = {0};
  CHECK_EQ_INT(ms_client_request(f.c, "target", "x", NULL, 0, NULL,
                                 on_answer, &x, NULL),
               0);
  fh_advance(&f, 0);
  fh_drop(&f);
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], MS_ERR_HUB_UNAVAILABLE);
  CHECK_EQ_INT(ms_client_get_state(f.c), MS_CLIENT_IDLE);
  /* Backoff: not at once, but within the configured maximum. */
  int64_t at = ms_client_next_deadline(f.c);
  CHECK(at > f.now && at <= f.now + 1000);
  CHECK(!ms_client_want_connect(f.c, f.now));
  f.now = at;
  CHECK(ms_client_want_connect(f.c, f.now));
  int hellos = fh_count(&f, MS_MSG_HELLO);
  CHECK_EQ_INT(fh_accept(&f), 0);
  CHECK_EQ_INT(fh_count(&f, MS_MSG_HELLO), hellos + 1);
  fh_welcome(&f);
  CHECK_EQ_INT(ms_client_get_state(f.c), MS_CLIENT_READY);
  ms_client_stats st;
  ms_client_get_stats(f.c, &st);
  CHECK_EQ_INT(st.reconnects, 1);
  done(&f);
}

static void silent_hub_is_pinged_then_abandoned(void) {
  fakehub f;
  CHECK(ready(&f, "svc") == 0);
  /* Default heartbeat 10 s: a ping after one quiet interval, the stream
   * given up after three. */
  fh_pump(&f);
  f.now += 10000;
  ms_client_tick(f.c, f.now); /* nothing delivered from here on */
  CHECK(ms_client_want_write(f.c)); /* the ping */
  size_t len = 0;
  ms_client_peek(f.c, &len);
  ms_client_consume(f.c, len);
  f.now += 20000;
  ms_client_tick(f.c, f.now);
  CHECK_EQ_INT(ms_client_get_state(f.c), MS_CLIENT_IDLE);
  CHECK(!ms_client_want_read(f.c) && !ms_client_want_write(f.c));
  fh_drop(&f);
  done(&f);
}

/* A hub that says nothing but keeps reading a backlog of ours is alive
 * (it answers behind the backlog): the stream is kept while the backed-up
 * output drains, and given up three intervals after it stops draining. */
static void hub_reading_our_backlog_is_alive(void) {
  fakehub f;
  CHECK(ready(&f, "logger") == 0);
  fh_pump(&f);
  for (int i = 0; i < 400; i++)
    CHECK_EQ_INT(ms_log(f.c, MS_LEVEL_INFO, "record %d of a long backlog", i),
                 0);
  size_t len = 0;
  ms_client_peek(f.c, &len);
  CHECK(len > 8000);
  ms_client_consume(f.c, 1000); /* the socket takes some, then is full */
  for (int step = 0; step < 12; step++) { /* 60 s: twice the old limit */
    f.now += 5000;
    ms_client_tick(f.c, f.now);
    CHECK_EQ_INT(ms_client_get_state(f.c), MS_CLIENT_READY);
    ms_client_peek(f.c, &len);
    CHECK(len > 500);
    ms_client_consume(f.c, 500); /* the hub read 500 bytes meanwhile */
  }
  /* It stops reading: gone three intervals after the last drain. */
  f.now += 25000;
  ms_client_tick(f.c, f.now);
  CHECK_EQ_INT(ms_client_get_state(f.c), MS_CLIENT_READY);
  f.now += 5000;
  ms_client_tick(f.c, f.now);
  CHECK_EQ_INT(ms_client_get_state(f.c), MS_CLIENT_IDLE);
  fh_drop(&f);
  done(&f);
}

/* Shipped is not received: a sync (PING behind the records) is
 * confirmed by the hub's PONG; a connection that ends first fails it and
 * counts what it carried unconfirmed. */
static void log_sync_is_confirmed_by_the_hub(void) {
  fakehub f;
  CHECK(ready(&f, "logger") == 0);
  fh_pump(&f);
  CHECK_EQ_INT(ms_log_sync_state(f.c), MS_ERR_STATE); /* none asked */
  CHECK_EQ_INT(ms_log_sync(f.c), 0); /* nothing shipped: confirmed */
  CHECK_EQ_INT(ms_log_sync_state(f.c), 1);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(ms_log(f.c, MS_LEVEL_INFO, "r%d", i), 0);
  CHECK_EQ_INT(ms_log_sync(f.c), 0);
  CHECK_EQ_INT(ms_log_sync_state(f.c), 0);
  CHECK_EQ_INT(ms_log_unconfirmed(f.c), 3);
  fh_pump(&f);
  CHECK_EQ_INT(fh_count(&f, MS_MSG_LOG), 3);
  const fh_seen *ping = fh_last(&f, MS_MSG_PING);
  CHECK(ping != NULL);
  CHECK_EQ_INT(ms_log_sync_state(f.c), 0); /* written, not confirmed */
  ms_enc_pong(fh_pk(&f), ping->id + 1); /* not ours */
  fh_send(&f);
  CHECK_EQ_INT(ms_log_sync_state(f.c), 0);
  ms_enc_pong(fh_pk(&f), ping->id);
  fh_send(&f);
  CHECK_EQ_INT(ms_log_sync_state(f.c), 1);
  CHECK_EQ_INT(ms_log_unconfirmed(f.c), 0);
  /* Two more, asked, and the connection ends before the answer. */
  CHECK_EQ_INT(ms_log(f.c, MS_LEVEL_INFO, "r3"), 0);
  CHECK_EQ_INT(ms_log(f.c, MS_LEVEL_INFO, "r4"), 0);
  CHECK_EQ_INT(ms_log_sync(f.c), 0);
  fh_pump(&f);
  CHECK_EQ_INT(ms_log_unconfirmed_lost(f.c), 0);
  fh_drop(&f);
  f.now += 100;
  ms_client_tick(f.c, f.now);
  CHECK_EQ_INT(ms_log_sync_state(f.c), MS_ERR_CLOSED);
  CHECK_EQ_INT(ms_log_unconfirmed_lost(f.c), 2);
  done(&f);
}

/* A client that never logged has nothing to confirm: a flush at exit
 * must not wait for it. */
static void log_sync_without_logs_is_confirmed(void) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "quiet";
  cfg.seed = 42;
  ms_client *c = NULL;
  CHECK_EQ_INT(ms_client_new(&c, &cfg, NULL, NULL), 0);
  CHECK_EQ_INT(ms_log_sync(c), 0);
  CHECK_EQ_INT(ms_log_sync_state(c), 1);
  CHECK_EQ_INT(ms_log_unconfirmed(c), 0);
  ms_client_del(c);
}

static void logs_wait_for_the_hub_then_ship(void) {
  ms_client *c = new_client("logger");
  CHECK(c != NULL);
  CHECK_EQ_INT(ms_log(c, MS_LEVEL_INFO, "before %d", 1), 0);
  ms_log(c, MS_LEVEL_DEBUG, "filtered");
  CHECK_EQ_INT(ms_log_queued(c), 1);
  fakehub f;
  fh_init(&f, c, T0);
  CHECK_EQ_INT(fh_accept(&f), 0);
  CHECK_EQ_INT(fh_count(&f, MS_MSG_LOG), 0); /* not before WELCOME */
  fh_welcome(&f);
  CHECK_EQ_INT(fh_count(&f, MS_MSG_LOG), 1);
  CHECK_EQ_STR(fh_last(&f, MS_MSG_LOG)->text, "before 1");
  CHECK_EQ_INT(ms_log_queued(c), 0);
  CHECK_EQ_INT(ms_log(c, MS_LEVEL_WARN, "live"), 0);
  fh_pump(&f);
  CHECK_EQ_STR(fh_last(&f, MS_MSG_LOG)->text, "live");
  done(&f);
}

static void log_ring_is_bounded_and_counts_drops(void) {
  ms_client *c = new_client("logger");
  CHECK(c != NULL);
  ms_log_set_queue(c, 3);
  for (int i = 0; i < 5; i++)
    ms_log(c, MS_LEVEL_INFO, "r%d", i);
  CHECK_EQ_INT(ms_log_queued(c), 3);
  CHECK_EQ_INT(ms_log_dropped(c), 2);
  ms_client_del(c);
}

static void on_record(ms_client *c, const ms_record *rec, void *ud) {
  (void)c, (void)rec, (void)ud;
}

static void subscribe_sends_its_whole_filter(void) {
  fakehub f;
  CHECK(ready(&f, "watcher") == 0);
  const char *svcs[] = {"a", "b"};
  ms_subscribe_opts o;
  memset(&o, 0, sizeof o);
  o.services = svcs;
  o.n_services = 2;
  o.min_level = MS_LEVEL_WARN;
  o.contains = "disk";
  uint64_t sid = 0;
  CHECK_EQ_INT(ms_client_subscribe(f.c, "logs", &o,
                                   on_record, NULL, &sid),
               0);
  fh_pump(&f);
  const fh_seen *s = fh_last(&f, MS_MSG_SUBSCRIBE);
  CHECK(s != NULL);
  CHECK_EQ_INT(s->id, sid);
  CHECK_EQ_INT(s->n_services, 2);
  CHECK(s->has_min_level && s->has_contains);
  done(&f);
}

/* ---- what the local sink and the hub get, byte for byte ---- */

typedef struct sunk {
  int n;
  int64_t ts;
  int level;
  char msg[64];
  uint8_t fields[1024]; /* the sink's fields object, packed again */
  size_t fields_len;
  int field_type[32]; /* msgpack_object type of each value */
  int map_type;
} sunk;

static void sink_keep(ms_client *c, int64_t ts, int level, const char *msg,
                      const msgpack_object *fields, void *ud) {
  sunk *k = ud;
  (void)c;
  k->n++;
  k->ts = ts;
  k->level = level;
  snprintf(k->msg, sizeof k->msg, "%s", msg);
  k->map_type = (int)fields->type;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_object(&pk, *fields);
  k->fields_len = sb.size <= sizeof k->fields ? sb.size : 0;
  if (k->fields_len)
    memcpy(k->fields, sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  if (fields->type == MSGPACK_OBJECT_MAP)
    for (uint32_t i = 0; i < fields->via.map.size && i < 32; i++)
      k->field_type[i] = (int)fields->via.map.ptr[i].val.type;
}

static int64_t wall_5(void *ud) {
  (void)ud;
  return 5;
}

/* {path: "/var", nil: nil, n: 42, neg: -7, ratio: 0.5, ok: true, "": 300} */
static const ms_log_field seven[] = {
    MS_FSTR("path", "/var"), MS_FSTR("nil", NULL), MS_FINT("n", 42),
    MS_FINT("neg", -7),      MS_FDBL("ratio", 0.5), MS_FBOOL("ok", 1),
    {NULL, MS_FIELD_INT, NULL, 300, 0.0}};
static const uint8_t seven_mp[] = {
    0x87, 0xa4, 'p',  'a',  't',  'h',  0xa4, '/',  'v',  'a',  'r',
    0xa3, 'n',  'i',  'l',  0xc0, 0xa1, 'n',  0x2a, 0xa3, 'n',  'e',
    'g',  0xf9, 0xa5, 'r',  'a',  't',  'i',  'o',  0xcb, 0x3f, 0xe0,
    0,    0,    0,    0,    0,    0,    0xa2, 'o',  'k',  0xc3, 0xa0,
    0xcd, 0x01, 0x2c};

static void log_sink_gets_the_fields_as_logged(void) {
  ms_client *c = new_client("logger");
  CHECK(c != NULL);
  sunk k;
  memset(&k, 0, sizeof k);
  ms_log_set_sink(c, sink_keep, &k);
  ms_log_set_clock(c, wall_5, NULL);
  CHECK_EQ_INT(ms_log_fields(c, MS_LEVEL_WARN, seven, 7, "disk %s", "full"),
               0);
  CHECK_EQ_INT(k.n, 1);
  CHECK_EQ_INT(k.ts, 5);
  CHECK_EQ_INT(k.level, MS_LEVEL_WARN);
  CHECK_EQ_STR(k.msg, "disk full");
  CHECK_EQ_INT(k.map_type, MSGPACK_OBJECT_MAP);
  CHECK_MEM(k.fields, k.fields_len, seven_mp, sizeof seven_mp);
  static const int types[] = {
      MSGPACK_OBJECT_STR,     MSGPACK_OBJECT_NIL,
      MSGPACK_OBJECT_POSITIVE_INTEGER, MSGPACK_OBJECT_NEGATIVE_INTEGER,
      MSGPACK_OBJECT_FLOAT64, MSGPACK_OBJECT_BOOLEAN,
      MSGPACK_OBJECT_POSITIVE_INTEGER};
  for (int i = 0; i < 7; i++)
    CHECK_EQ_INT(k.field_type[i], types[i]);
  /* No fields: an empty map. */
  CHECK_EQ_INT(ms_log(c, MS_LEVEL_INFO, "plain"), 0);
  CHECK_EQ_INT(k.n, 2);
  CHECK_EQ_STR(k.msg, "plain");
  CHECK_EQ_INT(k.map_type, MSGPACK_OBJECT_MAP);
  CHECK_MEM(k.fields, k.fields_len, "\x80", 1);
  /* Fields as bytes: the same map. */
  CHECK_EQ_INT(ms_log_raw(c, MS_LEVEL_ERROR, "raw", 3, seven_mp,
                          sizeof seven_mp),
               0);
  CHECK_EQ_INT(k.n, 3);
  CHECK_EQ_STR(k.msg, "raw");
  CHECK_MEM(k.fields, k.fields_len, seven_mp, sizeof seven_mp);
  /* Many fields, in order. */
  ms_log_field many[40];
  char keys[40][4];
  uint8_t want[400];
  size_t wn = 0;
  want[wn++] = 0xde; /* map16 */
  want[wn++] = 0;
  want[wn++] = 40;
  for (int i = 0; i < 40; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    many[i] = (ms_log_field)MS_FINT(keys[i], i);
    want[wn++] = (uint8_t)(0xa0 + strlen(keys[i]));
    memcpy(want + wn, keys[i], strlen(keys[i]));
    wn += strlen(keys[i]);
    want[wn++] = (uint8_t)i;
  }
  CHECK_EQ_INT(ms_log_fields(c, MS_LEVEL_INFO, many, 40, "many"), 0);
  CHECK_EQ_INT(k.n, 4);
  CHECK_MEM(k.fields, k.fields_len, want, wn);
  ms_client_del(c);
}

static void log_record_bytes_on_the_wire(void) {
  fakehub f;
  CHECK(ready(&f, "logger") == 0);
  ms_log_set_clock(f.c, wall_5, NULL);
  CHECK_EQ_INT(ms_log_fields(f.c, MS_LEVEL_WARN, seven, 7, "disk %s", "full"),
               0);
  fh_pump(&f);
  uint8_t want[128];
  size_t wn = 0;
  static const uint8_t head[] = {0x95, 0x07, 0x05, 30,  0xa9, 'd', 'i',
                                 's',  'k',  ' ',  'f', 'u',  'l', 'l'};
  memcpy(want, head, sizeof head);
  wn = sizeof head;
  memcpy(want + wn, seven_mp, sizeof seven_mp);
  wn += sizeof seven_mp;
  CHECK_MEM(f.last_log, f.last_log_len, want, wn);
  CHECK_EQ_INT(ms_log(f.c, MS_LEVEL_INFO, "x"), 0);
  fh_pump(&f);
  static const uint8_t plain[] = {0x95, 0x07, 0x05, 20, 0xa1, 'x', 0x80};
  CHECK_MEM(f.last_log, f.last_log_len, plain, sizeof plain);
  done(&f);
}

/* After drops the next record shipped carries their count as one more
 * field, after its own. */
static void dropped_count_rides_on_the_next_record(void) {
  ms_client *c = new_client("logger");
  CHECK(c != NULL);
  ms_log_set_clock(c, wall_5, NULL);
  ms_log_set_queue(c, 1);
  /* 15 fields (a fixmap): with _dropped it needs a map16 header. */
  uint8_t fifteen[64];
  size_t n15 = 0;
  fifteen[n15++] = 0x8f;
  for (int i = 0; i < 15; i++) {
    fifteen[n15++] = 0xa1;
    fifteen[n15++] = (uint8_t)('a' + i);
    fifteen[n15++] = (uint8_t)i;
  }
  CHECK_EQ_INT(ms_log(c, MS_LEVEL_INFO, "one"), 0);
  CHECK_EQ_INT(ms_log_fields(c, MS_LEVEL_INFO, seven, 7, "two"), 0);
  CHECK_EQ_INT(ms_log_raw(c, MS_LEVEL_INFO, "three", 5, fifteen, n15), 0);
  CHECK_EQ_INT(ms_log_dropped(c), 2);
  fakehub f;
  fh_init(&f, c, T0);
  CHECK_EQ_INT(fh_accept(&f), 0);
  fh_welcome(&f);
  CHECK_EQ_INT(fh_count(&f, MS_MSG_LOG), 1);
  uint8_t want[128];
  size_t wn = 0;
  static const uint8_t head[] = {0x95, 0x07, 0x05, 20,  0xa5, 't',
                                 'h',  'r',  'e',  'e', 0xde, 0x00, 0x10};
  memcpy(want, head, sizeof head);
  wn = sizeof head;
  memcpy(want + wn, fifteen + 1, n15 - 1);
  wn += n15 - 1;
  static const uint8_t dropped2[] = {0xa8, '_', 'd', 'r', 'o', 'p',
                                     'p',  'e', 'd', 0x02};
  memcpy(want + wn, dropped2, sizeof dropped2);
  wn += sizeof dropped2;
  CHECK_MEM(f.last_log, f.last_log_len, want, wn);
  /* Reported once: the next record is as logged. */
  CHECK_EQ_INT(ms_log(c, MS_LEVEL_INFO, "x"), 0);
  fh_pump(&f);
  static const uint8_t plain[] = {0x95, 0x07, 0x05, 20, 0xa1, 'x', 0x80};
  CHECK_MEM(f.last_log, f.last_log_len, plain, sizeof plain);
  /* Drops while away again (the client's own warning that the hub was
   * lost is queued first, and pushed out too): then a record with fields,
   * then one without. */
  fh_drop(&f);
  ms_log(c, MS_LEVEL_INFO, "lost");
  ms_log_fields(c, MS_LEVEL_INFO, seven, 7, "two");
  CHECK_EQ_INT(ms_log_dropped(c), 4);
  f.now += 1000;
  ms_client_tick(c, f.now);
  CHECK_EQ_INT(fh_accept(&f), 0);
  fh_welcome(&f);
  wn = 0;
  static const uint8_t head2[] = {0x95, 0x07, 0x05, 20, 0xa3, 't', 'w', 'o',
                                  0x88};
  memcpy(want, head2, sizeof head2);
  wn = sizeof head2;
  memcpy(want + wn, seven_mp + 1, sizeof seven_mp - 1);
  wn += sizeof seven_mp - 1;
  memcpy(want + wn, dropped2, sizeof dropped2);
  wn += sizeof dropped2;
  CHECK_MEM(f.last_log, f.last_log_len, want, wn);
  fh_drop(&f);
  ms_log(c, MS_LEVEL_INFO, "a");
  ms_log(c, MS_LEVEL_INFO, "b");
  f.now += 1000;
  ms_client_tick(c, f.now);
  CHECK_EQ_INT(fh_accept(&f), 0);
  fh_welcome(&f);
  static const uint8_t only[] = {0x95, 0x07, 0x05, 20,  0xa1, 'b', 0x81, 0xa8,
                                 '_',  'd',  'r',  'o', 'p',  'p', 'e',  'd',
                                 0x02};
  CHECK_MEM(f.last_log, f.last_log_len, only, sizeof only);
  done(&f);
}

/* ---- the lifetime rule ---- */

static void client_deleted_from_a_response_callback(void) {
  fakehub f;
  CHECK(ready(&f, "caller") == 0);
  answers x = {0}, y = {0};
  x.del_client = 1;
  x.f = &f;
  uint64_t id1 = 0, id2 = 0;
  ms_client_request(f.c, "t", "a", NULL, 0, NULL, on_answer, &x, &id1);
  ms_client_request(f.c, "t", "b", NULL, 0, NULL, on_answer, &y, &id2);
  fh_advance(&f, 0);
  /* Two answers in one feed: the first deletes the client. */
  msgpack_packer *pk = fh_pk(&f);
  ms_enc_response_raw(pk, id1, (const uint8_t *)"\xc0", 1);
  ms_conn_send(f.srv, 1, (const uint8_t *)f.sb.data, f.sb.size);
  f.sb.size = 0;
  ms_enc_response_raw(&f.pk, id2, (const uint8_t *)"\xc0", 1);
  ms_conn_send(f.srv, 1, (const uint8_t *)f.sb.data, f.sb.size);
  fh_pump(&f);
  CHECK(f.c == NULL);
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], 0);
  /* The other request still got exactly one callback: CANCELLED. */
  CHECK_EQ_INT(y.n, 1);
  CHECK_EQ_INT(y.err[0], MS_ERR_CANCELLED);
  fh_free(&f);
}

/* ms_pump() over the exported client ops while a callback deletes the
 * client: the pump must not touch it afterwards, and says so. */
static void pump_survives_the_client_deleted_in_a_callback(void) {
  fakehub f;
  CHECK(ready(&f, "caller") == 0);
  answers x = {0};
  x.del_client = 1;
  x.f = &f;
  uint64_t id = 0;
  ms_client_request(f.c, "t", "a", NULL, 0, NULL, on_answer, &x, &id);
  fh_advance(&f, 0);
  ms_memory_pair *mp = NULL;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&mp, 1 << 16, &a, &b, NULL), 0);
  ms_enc_response_raw(fh_pk(&f), id, (const uint8_t *)"\xc0", 1);
  ms_conn_send(f.srv, 1, (const uint8_t *)f.sb.data, f.sb.size);
  size_t len = 0;
  const uint8_t *p = ms_conn_peek(f.srv, &len);
  CHECK(b.vt->write(b.self, p, len) == (ptrdiff_t)len);
  ms_conn_consume(f.srv, len);
  ms_client *c = f.c;
  int rv = ms_pump(&ms_client_engine_ops, c, &a, 0, f.now);
  CHECK_EQ_INT(rv, MS_PUMP_FREED);
  CHECK_EQ_INT(x.n, 1);
  ms_memory_pair_del(mp);
  fh_free(&f);
}

static void on_state_del(ms_client *c, const ms_client_state_arg *a,
                         void *ud) {
  int *calls = ud;
  ++*calls;
  if (a->state == MS_CLIENT_IDLE)
    ms_client_del(c);
}

static void client_deleted_from_on_state(void) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "stateful";
  cfg.seed = 7;
  int calls = 0;
  cfg.on_state = on_state_del;
  ms_client *c = NULL;
  CHECK_EQ_INT(ms_client_new(&c, &cfg, &calls, NULL), 0);
  ms_log_set_sink(c, NULL, NULL);
  fakehub f;
  fh_init(&f, c, T0);
  CHECK_EQ_INT(fh_accept(&f), 0);
  fh_welcome(&f);
  answers x = {0};
  ms_client_request(c, "t", "a", NULL, 0, NULL, on_answer, &x, NULL);
  ms_client_tick(c, f.now);
  /* The connection ends: on_state(IDLE) deletes the client from inside
   * ms_client_disconnected; the request still gets its one callback. */
  f.c = NULL;
  ms_client_disconnected(c, f.now);
  CHECK_EQ_INT(x.n, 1);
  CHECK_EQ_INT(x.err[0], MS_ERR_HUB_UNAVAILABLE);
  CHECK(calls >= 2);
  fh_free(&f);
}

static const ms_test_case tests[] = {
      TEST(hello_is_sent_after_the_upgrade),
      TEST(request_gets_its_response),
      TEST(request_error_from_the_hub_is_its_one_callback),
      TEST(request_times_out_then_late_answer_goes_to_on_late),
      TEST(late_answer_after_the_window_is_dropped),
      TEST(cancel_gives_cancelled_once_and_tells_the_hub),
      TEST(request_while_not_ready_fails_on_the_next_tick),
      TEST(reconnect_fails_inflight_and_registers_again),
      TEST(silent_hub_is_pinged_then_abandoned),
      TEST(hub_reading_our_backlog_is_alive),
      TEST(log_sync_is_confirmed_by_the_hub),
      TEST(log_sync_without_logs_is_confirmed),
      TEST(logs_wait_for_the_hub_then_ship),
      TEST(log_ring_is_bounded_and_counts_drops),
      TEST(log_sink_gets_the_fields_as_logged),
      TEST(log_record_bytes_on_the_wire),
      TEST(dropped_count_rides_on_the_next_record),
      TEST(subscribe_sends_its_whole_filter),
      TEST(client_deleted_from_a_response_callback),
      TEST(pump_survives_the_client_deleted_in_a_callback),
      TEST(client_deleted_from_on_state),
};

MS_TEST_MAIN(tests)
