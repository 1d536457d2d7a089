/* After a delete from inside a callback, until the outermost call
 * returns, every public call on the deleted object is refused: an error
 * return (MS_ERR_STATE, or an empty answer for queries), no effect, no
 * callback, no use after free. Each test deletes its object from a
 * callback and then calls every public function on it; ASan and UBSan
 * catch what a plain check cannot. */
#include "ms_test.h"

#include "fakehub.h"

#include <microstream/microstream.h>
#include <microstream/ms_hub_cluster.h>

#define T0 5000

static int bad; /* failed expectations inside callbacks */
#define EXPECT(cond)                                                  \
  do {                                                                \
    if (!(cond)) {                                                    \
      printf("#   %s:%d: expected: %s\n", __FILE__, __LINE__, #cond); \
      bad++;                                                          \
    }                                                                 \
  } while (0)

/* ---- hub ---- */

typedef struct hub_t {
  ms_hub_conn *other; /* a second connection, idle */
  int http_calls;
  int events_after_delete;
  int wakeups_after_delete;
  int deleted;
  int done;
} hub_t;

static void hub_wakeup(void *ud) {
  hub_t *t = ud;
  if (t->deleted)
    t->wakeups_after_delete++;
}

static void hub_event(ms_hub *h, int level, const char *text, void *ud) {
  hub_t *t = ud;
  (void)h;
  (void)level;
  (void)text;
  if (t->deleted)
    t->events_after_delete++;
}

static void more_fn(ms_hub *h, ms_conn *c, int done, void *sd) {
  (void)h;
  (void)c;
  (void)done;
  (void)sd;
}

static int cl_hook(void *ctx) {
  (void)ctx;
  return 0;
}

static int hub_on_http(ms_hub *h, ms_conn *c, const ms_http_request *req,
                       void *ud) {
  hub_t *t = ud;
  t->http_calls++;
  ms_hub_conn *hc = ms_conn_user_data(c);
  ms_hub_del(h);
  t->deleted = 1;

  ms_hub_conn *x = NULL;
  EXPECT(ms_hub_accept(h, &x, NULL, T0) == MS_ERR_STATE && x == NULL);
  EXPECT(ms_hub_accept_peer(h, &x, NULL, "10.0.0.1", 0, T0) == MS_ERR_STATE &&
         x == NULL);
  ms_hub_conn *both[2] = {hc, t->other};
  for (int i = 0; i < 2; i++) {
    ms_hub_conn *k = both[i];
    EXPECT(ms_hub_conn_feed(k, (const uint8_t *)"GET / HTTP/1.1\r\n", 16,
                            T0) == MS_ERR_STATE);
    size_t n = 99;
    EXPECT(ms_hub_conn_peek(k, &n) == NULL && n == 0);
    ms_hub_conn_consume(k, 0);
    EXPECT(ms_hub_conn_want_read(k) == 0);
    EXPECT(ms_hub_conn_want_write(k) == 0);
    ms_hub_conn_stream_failed(k, "TLS handshake: test");
    ms_hub_conn_eof(k, T0);
    ms_hub_conn_release(k);
    EXPECT(ms_hub_conn_transport_data(k) == NULL);
    EXPECT(ms_hub_conn_service(k) == NULL);
  }
  EXPECT(ms_hub_http_stream(h, c, more_fn, NULL) == MS_ERR_STATE);
  EXPECT(ms_hub_next_dirty(h) == NULL);
  EXPECT(ms_hub_tick(h, T0 + 600000) == MS_ERR_STATE);
  EXPECT(ms_hub_next_deadline(h) == MS_NO_DEADLINE);
  EXPECT(ms_hub_resume_input(h, T0) == 0);
  ms_hub_shutdown(h, T0);
  ms_hub_set_wakeup(h, hub_wakeup, t);
  ms_hub_stats st;
  ms_hub_get_stats(h, &st);
  EXPECT(st.connections == 2); /* nothing was released or closed */
  ms_buf b;
  memset(&b, 0, sizeof b);
  EXPECT(ms_hub_metrics_text(h, &b) == MS_ERR_STATE && b.len == 0);
  EXPECT(ms_hub_services_json(h, &b) == MS_ERR_STATE && b.len == 0);
  EXPECT(ms_hub_stats_json(h, &b) == MS_ERR_STATE && b.len == 0);
  ms_buf_free(&b);
  ms_hub_set_wallclock(h, NULL, NULL);
  EXPECT(ms_hub_auth_required(h) == 0);
  ms_hub_auth a;
  EXPECT(ms_hub_authorize(h, "t", 1, NULL, 0, MS_SCOPE_WATCH, NULL, T0, &a) ==
         MS_ERR_STATE);
  EXPECT(a.scopes == 0);
  const char *why = NULL;
  EXPECT(ms_hub_http_guard(h, req, 0, 0, NULL, T0, &why) == 503 && why);
  ms_token_key key;
  memset(&key, 0, sizeof key);
  EXPECT(ms_hub_set_keys(h, &key, 1) == MS_ERR_STATE);
  const char *origin = "https://example.org";
  EXPECT(ms_hub_set_access_lists(h, &origin, 1, NULL, 0) == MS_ERR_STATE);
  ms_hub_cluster_ops ops;
  memset(&ops, 0, sizeof ops);
  EXPECT(ms_hub_set_cluster(h, NULL, NULL) == MS_ERR_STATE);
  EXPECT(ms_hub_cluster_claimed(h, 1, 0, NULL, T0) == MS_ERR_STATE);
  EXPECT(ms_hub_cluster_resolved(h, 1, "hub-x", 0, T0) == MS_ERR_STATE);
  EXPECT(ms_hub_cluster_deliver(h, "hub-x", (const uint8_t *)"\x90", 1, T0) ==
         MS_ERR_STATE);
  ms_hub_cluster_hub_down(h, NULL, MS_ERR_TARGET_DISCONNECTED, T0);
  ms_hub_cluster_lost(h, "svc", 3, T0);
  EXPECT(ms_hub_cluster_record(h, MS_CLUSTER_LOGS, 7,
                               (const uint8_t *)"\x90", 1, T0) ==
         MS_ERR_STATE);
  EXPECT(ms_hub_cluster_record_shown(h, MS_CLUSTER_LOGS, 7,
                                     (const uint8_t *)"\x90", 1, T0) ==
         MS_ERR_STATE);
  EXPECT(ms_hub_cluster_presence_lost(h, "svc", 3, "hub-x", T0) ==
         MS_ERR_STATE);
  ms_hub_cluster_rejoined(h, "svc", 3, T0);
  ms_hub_cluster_streams(h, 0, T0);
  ms_hub_cluster_skip(h, MS_CLUSTER_LOGS, 9, T0);
  ms_hub_cluster_missed(h, MS_CLUSTER_LOGS, 2, T0);
  EXPECT(ms_hub_cluster_last_seq(h, MS_CLUSTER_LOGS) == 0);
  ms_hub_cluster_stats cs;
  ms_hub_get_cluster_stats(h, &cs);
  EXPECT(cs.hubs_down == 0 && cs.names_lost == 0);
  EXPECT(ms_hub_user_data(h) == t);
  EXPECT(ms_hub_id(h) != NULL);
  ms_hub_del(h);
  ms_hub_del(h);
  (void)cl_hook;
  /* The connection's own calls still answer (the hub owns it). */
  EXPECT(ms_conn_http_respond(c, 200, "text/plain", NULL, "ok\n", 3) == 0);
  t->done = 1;
  return 0;
}

static void every_hub_call_after_delete_from_callback_is_refused(void) {
  hub_t t;
  memset(&t, 0, sizeof t);
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.on_http = hub_on_http;
  cfg.on_event = hub_event;
  ms_hub *h = NULL;
  CHECK_EQ_INT(ms_hub_new(&h, &cfg, &t, NULL), 0);
  ms_hub_set_wakeup(h, hub_wakeup, &t);
  ms_hub_conn *hc = NULL;
  CHECK_EQ_INT(ms_hub_accept(h, &hc, NULL, T0), 0);
  CHECK_EQ_INT(ms_hub_accept(h, &t.other, NULL, T0), 0);
  static const char get[] = "GET /custom HTTP/1.1\r\nHost: hub\r\n\r\n";
  bad = 0;
  /* Freed on return from this feed: nothing more to call. */
  ms_hub_conn_feed(hc, (const uint8_t *)get, sizeof get - 1, T0);
  CHECK_EQ_INT(t.http_calls, 1);
  CHECK_EQ_INT(t.done, 1);
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(t.events_after_delete, 0);
  CHECK_EQ_INT(t.wakeups_after_delete, 0);
}

/* ---- client ---- */

typedef struct client_t {
  fakehub *f;
  uint64_t id_other;
  int first_calls, other_calls, other_err;
  int handler_calls, reply_rv, reply_rv2;
  int done;
} client_t;

static void other_cb(ms_client *c, const ms_response_arg *a, void *ud) {
  client_t *t = ud;
  (void)c;
  t->other_calls++;
  t->other_err = a->err;
}

static void sink(ms_client *c, int64_t ts, int level, const char *m,
                 const msgpack_object *f, void *ud) {
  (void)c;
  (void)ts;
  (void)level;
  (void)m;
  (void)f;
  (void)ud;
}

static void rec_fn(ms_client *c, const ms_record *r, void *ud) {
  (void)c;
  (void)r;
  (void)ud;
}

static void handler(ms_client *c, ms_reply *r, const ms_request_arg *a,
                    void *ud) {
  (void)c;
  (void)r;
  (void)a;
  (void)ud;
}

static void wake_fn(void *ud) { (void)ud; }

static void call_everything_on_deleted_client(ms_client *c, client_t *t) {
  uint64_t id = 0;
  EXPECT(ms_client_request(c, "svc", "ev", NULL, 0, NULL, other_cb, t, &id) ==
         MS_ERR_STATE);
  EXPECT(ms_client_cancel(c, t->id_other) == MS_ERR_STATE);
  EXPECT(t->other_calls == 0); /* its one callback comes with the free */
  EXPECT(ms_client_on(c, "ev", handler, NULL) == MS_ERR_STATE);
  ms_client_on_message(c, NULL, NULL);
  ms_client_set_wakeup(c, wake_fn, NULL);
  EXPECT(ms_client_send_raw(c, (const uint8_t *)"\x90", 1) == MS_ERR_STATE);
  EXPECT(ms_client_set_endpoint(c, "other:1", "/x") == MS_ERR_STATE);
  ms_client_stop(c, T0);
  ms_client_start(c, T0);
  EXPECT(ms_client_want_connect(c, T0 + 100000) == 0);
  ms_client_connecting(c, T0);
  EXPECT(ms_client_connected(c, T0) == MS_ERR_STATE);
  ms_client_disconnected_err(c, T0, MS_ERR_IO);
  ms_client_disconnected(c, T0);
  EXPECT(ms_client_feed(c, (const uint8_t *)"\x82\x00", 2, T0) ==
         MS_ERR_STATE);
  size_t n = 99;
  EXPECT(ms_client_peek(c, &n) == NULL && n == 0);
  ms_client_consume(c, 0);
  EXPECT(ms_client_want_read(c) == 0);
  EXPECT(ms_client_want_write(c) == 0);
  EXPECT(ms_client_tick(c, T0 + 600000) == MS_ERR_STATE);
  EXPECT(ms_client_next_deadline(c) == MS_NO_DEADLINE);
  EXPECT(ms_client_get_state(c) == MS_CLIENT_READY); /* nothing changed */
  EXPECT(ms_client_user_data(c) == t);
  EXPECT(ms_client_service(c) != NULL);
  EXPECT(ms_client_tls(c) == NULL);
  ms_client_stats st;
  ms_client_get_stats(c, &st);
  (void)ms_client_pending(c);
  int level = ms_log_get_level(c);
  ms_log_set_level(c, MS_LEVEL_ERROR);
  EXPECT(ms_log_get_level(c) == level);
  ms_log_set_sink(c, sink, NULL);
  ms_log_set_queue(c, 1);
  ms_log_set_clock(c, NULL, NULL);
  ms_log_set_defaults(c, sink, NULL, NULL, NULL);
  EXPECT(ms_log(c, MS_LEVEL_ERROR, "x %d", 1) == MS_ERR_STATE);
  ms_log_field fld;
  memset(&fld, 0, sizeof fld);
  fld.key = "k";
  fld.type = MS_FIELD_STR;
  fld.s = "v";
  EXPECT(ms_log_fields(c, MS_LEVEL_ERROR, &fld, 1, "y") == MS_ERR_STATE);
  EXPECT(ms_log_raw(c, MS_LEVEL_ERROR, "z", 1, NULL, 0) == MS_ERR_STATE);
  EXPECT(ms_log_queued(c) == 0);
  (void)ms_log_dropped(c);
  ms_subscribe_opts so;
  memset(&so, 0, sizeof so);
  uint64_t sid = 0;
  EXPECT(ms_client_subscribe(c, "logs", &so, rec_fn, NULL, &sid) ==
         MS_ERR_STATE);
  EXPECT(ms_client_unsubscribe(c, 1) == MS_ERR_STATE);
  ms_client_del(c);
  ms_client_del(c);
}

static void first_cb(ms_client *c, const ms_response_arg *a, void *ud) {
  client_t *t = ud;
  (void)a;
  t->first_calls++;
  int seen = t->f->n_seen;
  ms_client_del(c);
  t->f->c = NULL; /* the fake hub must not feed it again */
  call_everything_on_deleted_client(c, t);
  EXPECT(ms_client_peek(c, &(size_t){0}) == NULL);
  EXPECT(t->f->n_seen == seen);
  t->done = 1;
}

static void every_client_call_after_delete_from_callback_is_refused(void) {
  fakehub f;
  client_t t;
  memset(&t, 0, sizeof t);
  t.f = &f;
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "me";
  ms_client *c = NULL;
  CHECK_EQ_INT(ms_client_new(&c, &cfg, &t, NULL), 0);
  fh_init(&f, c, T0);
  CHECK_EQ_INT(fh_accept(&f), 0);
  fh_welcome(&f);
  CHECK(ms_client_get_state(c) == MS_CLIENT_READY);
  uint64_t id1 = 0;
  CHECK_EQ_INT(ms_client_request(c, "svc", "one", NULL, 0, NULL, first_cb, &t,
                                 &id1),
               0);
  CHECK_EQ_INT(ms_client_request(c, "svc", "two", NULL, 0, NULL, other_cb, &t,
                                 &t.id_other),
               0);
  fh_advance(&f, 1);
  CHECK_EQ_INT(fh_count(&f, MS_MSG_REQUEST), 2);
  bad = 0;
  /* The answer to the first: its callback deletes the client. */
  fh_respond_str(&f, fh_last(&f, MS_MSG_REQUEST)->id - 1, "hi");
  CHECK_EQ_INT(t.first_calls, 1);
  CHECK_EQ_INT(t.done, 1);
  CHECK_EQ_INT(bad, 0);
  /* The other request got its one callback, at the free. */
  CHECK_EQ_INT(t.other_calls, 1);
  CHECK_EQ_INT(t.other_err, MS_ERR_CANCELLED);
  fh_free(&f);
}

static void handler_del(ms_client *c, ms_reply *r, const ms_request_arg *a,
                        void *ud) {
  client_t *t = ud;
  (void)a;
  t->handler_calls++;
  ms_reply_retain(r);
  ms_client_del(c);
  t->f->c = NULL;
  /* The reply cannot go out through a deleted client. */
  EXPECT(ms_reply_cancelled(r));
  t->reply_rv = ms_reply_send_str(r, "late");
  t->reply_rv2 = ms_reply_error(r, "X", "y", NULL, 0);
  ms_reply_release(r);
  call_everything_on_deleted_client(c, t);
  t->done = 1;
}

static void client_deleted_from_handler_sends_no_reply(void) {
  fakehub f;
  client_t t;
  memset(&t, 0, sizeof t);
  t.f = &f;
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "me";
  ms_client *c = NULL;
  CHECK_EQ_INT(ms_client_new(&c, &cfg, &t, NULL), 0);
  CHECK_EQ_INT(ms_client_on(c, "ev", handler_del, &t), 0);
  fh_init(&f, c, T0);
  CHECK_EQ_INT(fh_accept(&f), 0);
  fh_welcome(&f);
  CHECK_EQ_INT(ms_client_request(c, "svc", "q", NULL, 0, NULL, other_cb, &t,
                                 &t.id_other),
               0);
  fh_advance(&f, 1);
  CHECK_EQ_INT(t.other_calls, 0);
  int responses = fh_count(&f, MS_MSG_RESPONSE) + fh_count(&f, MS_MSG_ERROR);
  bad = 0;
  ms_enc_request(fh_pk(&f), 77, (ms_str){"caller", 6}, (ms_str){"ev", 2},
                 NULL, 5000, NULL);
  fh_send(&f);
  CHECK_EQ_INT(t.handler_calls, 1);
  CHECK_EQ_INT(t.done, 1);
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(t.reply_rv, MS_ERR_CLOSED);
  CHECK_EQ_INT(t.reply_rv2, MS_ERR_STATE); /* already answered (dropped) */
  CHECK_EQ_INT(fh_count(&f, MS_MSG_RESPONSE) + fh_count(&f, MS_MSG_ERROR),
               responses);
  CHECK_EQ_INT(t.other_calls, 1);
  fh_free(&f);
}

/* ---- conn ---- */

typedef struct conn_t {
  int messages, closes_after_delete, deleted, done;
  int ud_marker;
} conn_t;

static void sv_on_message(ms_conn *c, const ms_conn_message_arg *a, void *ud) {
  conn_t *t = ud;
  (void)a;
  t->messages++;
  if (t->deleted)
    return;
  ms_conn_del(c);
  t->deleted = 1;
  EXPECT(ms_conn_send(c, 1, (const uint8_t *)"x", 1) == MS_ERR_STATE);
  EXPECT(ms_conn_send(c, 0, (const uint8_t *)"x", 1) == MS_ERR_STATE);
  EXPECT(ms_conn_ping(c, (const uint8_t *)"p", 1) == MS_ERR_STATE);
  EXPECT(ms_conn_close(c, MS_CLOSE_NORMAL, "bye") == MS_ERR_STATE);
  EXPECT(ms_conn_start(c, T0) == MS_ERR_STATE);
  EXPECT(ms_conn_feed(c, (const uint8_t *)"\x82\x00", 2, T0) == MS_ERR_STATE);
  size_t n = 99;
  EXPECT(ms_conn_peek(c, &n) == NULL && n == 0);
  ms_conn_consume(c, 1);
  EXPECT(ms_conn_want_read(c) == 0);
  EXPECT(ms_conn_want_write(c) == 0);
  (void)ms_conn_out_pending(c);
  EXPECT(ms_conn_tick(c, T0 + 600000) == MS_ERR_STATE);
  EXPECT(ms_conn_next_deadline(c) == MS_NO_DEADLINE);
  EXPECT(ms_conn_http_respond(c, 200, "text/plain", NULL, "x", 1) ==
         MS_ERR_STATE);
  EXPECT(ms_conn_http_begin(c, 200, "text/plain", NULL) == MS_ERR_STATE);
  EXPECT(ms_conn_http_write(c, "x", 1) == MS_ERR_STATE);
  EXPECT(ms_conn_http_end(c, 1) == MS_ERR_STATE);
  EXPECT(ms_conn_hibernate(c) == MS_ERR_STATE);
  EXPECT(ms_conn_is_hibernating(c) == 0);
  EXPECT(ms_conn_is_open(c) == 0);
  (void)ms_conn_encoding(c);
  EXPECT(ms_conn_get_role(c) == MS_CONN_SERVER);
  ms_conn_set_user_data(c, &t->ud_marker);
  EXPECT(ms_conn_user_data(c) == t);
  ms_conn_eof(c, T0);
  ms_conn_del(c);
  ms_conn_del(c);
  t->done = 1;
}

static void sv_on_close(ms_conn *c, const ms_conn_close_arg *a, void *ud) {
  conn_t *t = ud;
  (void)c;
  (void)a;
  if (t->deleted)
    t->closes_after_delete++;
}

static void every_conn_call_after_delete_from_callback_is_refused(void) {
  ms_conn_config cc, sc;
  ms_conn_config_init(&cc, MS_CONN_CLIENT);
  ms_conn_config_init(&sc, MS_CONN_SERVER);
  ms_conn_callbacks ccb, scb;
  memset(&ccb, 0, sizeof ccb);
  memset(&scb, 0, sizeof scb);
  scb.on_message = sv_on_message;
  scb.on_close = sv_on_close;
  conn_t t;
  memset(&t, 0, sizeof t);
  ms_conn *cl = NULL, *sv = NULL;
  CHECK_EQ_INT(ms_conn_new(&cl, &cc, &ccb, NULL, NULL), 0);
  CHECK_EQ_INT(ms_conn_new(&sv, &sc, &scb, &t, NULL), 0);
  ms_conn_start(cl, T0);
  ms_conn_start(sv, T0);
  for (int i = 0; i < 4; i++) {
    size_t n;
    const uint8_t *p = ms_conn_peek(cl, &n);
    if (n) {
      ms_conn_feed(sv, p, n, T0);
      ms_conn_consume(cl, n);
    }
    p = ms_conn_peek(sv, &n);
    if (n) {
      ms_conn_feed(cl, p, n, T0);
      ms_conn_consume(sv, n);
    }
  }
  CHECK(ms_conn_is_open(sv));
  /* Two messages and a close in one read: only the first is seen. */
  ms_conn_send(cl, 1, (const uint8_t *)"one", 3);
  ms_conn_send(cl, 1, (const uint8_t *)"two", 3);
  ms_conn_close(cl, MS_CLOSE_NORMAL, "done");
  size_t n;
  const uint8_t *p = ms_conn_peek(cl, &n);
  CHECK(n > 0);
  bad = 0;
  ms_conn_feed(sv, p, n, T0); /* sv is freed on return */
  CHECK_EQ_INT(t.messages, 1);
  CHECK_EQ_INT(t.done, 1);
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(t.closes_after_delete, 0);
  ms_conn_del(cl);
}

static const ms_test_case tests[] = {
    TEST(every_hub_call_after_delete_from_callback_is_refused),
    TEST(every_client_call_after_delete_from_callback_is_refused),
    TEST(client_deleted_from_handler_sends_no_reply),
    TEST(every_conn_call_after_delete_from_callback_is_refused),
};

MS_TEST_MAIN(tests)
