/* The lifetime rule of ms_common.h: every object may be deleted from
 * inside its own callbacks (and a hub from its connections'), and
 * ms_pump() never touches an engine deleted during the pump. Run under
 * ASan, a use after free fails these tests. */
#include "ms_test.h"

#include <microstream/microstream.h>

#define T0 5000

static const char get_custom[] =
    "GET /custom HTTP/1.1\r\nHost: hub\r\n\r\n";

static int on_http_del_hub(ms_hub *h, ms_conn *c, const ms_http_request *req,
                           void *ud) {
  int *calls = ud;
  (void)req;
  ++*calls;
  ms_conn_http_respond(c, 200, "text/plain", NULL, "bye\n", 4);
  ms_hub_del(h);
  /* Calls after the delete, still inside the callback, are harmless. */
  ms_hub_del(h);
  return 0;
}

static ms_hub *hub_with_on_http(int *calls) {
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.on_http = on_http_del_hub;
  ms_hub *h = NULL;
  if (ms_hub_new(&h, &cfg, calls, NULL) != 0)
    return NULL;
  return h;
}

static void hub_deleted_from_on_http_during_feed(void) {
  int calls = 0;
  ms_hub *h = hub_with_on_http(&calls);
  CHECK(h != NULL);
  ms_hub_conn *hc = NULL;
  CHECK_EQ_INT(ms_hub_accept(h, &hc, NULL, T0), 0);
  ms_hub_conn_feed(hc, (const uint8_t *)get_custom, sizeof get_custom - 1,
                   T0);
  /* The hub, and hc with it, are gone now: nothing more to call. */
  CHECK_EQ_INT(calls, 1);
}

static void hub_deleted_from_on_http_during_pump(void) {
  int calls = 0;
  ms_hub *h = hub_with_on_http(&calls);
  CHECK(h != NULL);
  ms_hub_conn *hc = NULL;
  CHECK_EQ_INT(ms_hub_accept(h, &hc, NULL, T0), 0);
  ms_memory_pair *mp = NULL;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&mp, 1 << 16, &a, &b, NULL), 0);
  CHECK(b.vt->write(b.self, (const uint8_t *)get_custom,
                    sizeof get_custom - 1) ==
        (ptrdiff_t)(sizeof get_custom - 1));
  int rv = ms_pump(&ms_hub_conn_engine_ops, hc, &a, 0, T0);
  CHECK_EQ_INT(rv, MS_PUMP_FREED);
  CHECK_EQ_INT(calls, 1);
  ms_memory_pair_del(mp);
}

typedef struct conn_ud {
  int messages;
  int del_on_message;
  int del_on_close;
  int closes;
} conn_ud;

static void c_on_message(ms_conn *c, const ms_conn_message_arg *a, void *ud) {
  conn_ud *u = ud;
  (void)a;
  u->messages++;
  if (u->del_on_message) {
    ms_conn_del(c);
    /* Still inside: calls on c are refused, not crashes. */
    if (ms_conn_send(c, 1, (const uint8_t *)"x", 1) != MS_ERR_STATE)
      u->messages += 100;
  }
}

static void c_on_close(ms_conn *c, const ms_conn_close_arg *a, void *ud) {
  conn_ud *u = ud;
  (void)a;
  u->closes++;
  if (u->del_on_close)
    ms_conn_del(c);
}

/* A client and a server ms_conn with the upgrade done. */
static int conn_pair(ms_conn **cl, ms_conn **sv, conn_ud *cu, conn_ud *su) {
  ms_conn_config cc, sc;
  ms_conn_config_init(&cc, MS_CONN_CLIENT);
  ms_conn_config_init(&sc, MS_CONN_SERVER);
  ms_conn_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.on_message = c_on_message;
  cb.on_close = c_on_close;
  if (ms_conn_new(cl, &cc, &cb, cu, NULL) || ms_conn_new(sv, &sc, &cb, su, NULL))
    return -1;
  ms_conn_start(*cl, T0);
  ms_conn_start(*sv, T0);
  for (int i = 0; i < 4; i++) {
    size_t n;
    const uint8_t *p = ms_conn_peek(*cl, &n);
    if (n) {
      ms_conn_feed(*sv, p, n, T0);
      ms_conn_consume(*cl, n);
    }
    p = ms_conn_peek(*sv, &n);
    if (n) {
      ms_conn_feed(*cl, p, n, T0);
      ms_conn_consume(*sv, n);
    }
  }
  return ms_conn_is_open(*cl) && ms_conn_is_open(*sv) ? 0 : -1;
}

/* Move what cl has queued into a memory pair and pump `engine` (the
 * other side) with ops over it; returns ms_pump's result. */
static int pump_from(ms_conn *cl, const ms_engine_ops *ops, void *engine) {
  size_t n;
  const uint8_t *p = ms_conn_peek(cl, &n);
  ms_memory_pair *mp = NULL;
  ms_transport a, b;
  if (ms_memory_pair_new(&mp, 1 << 16, &a, &b, NULL) != 0)
    return -1000;
  if (b.vt->write(b.self, p, n) != (ptrdiff_t)n) {
    ms_memory_pair_del(mp);
    return -1001;
  }
  ms_conn_consume(cl, n);
  int rv = ms_pump(ops, engine, &a, 0, T0);
  ms_memory_pair_del(mp);
  return rv;
}

static void conn_deleted_from_on_message_during_pump(void) {
  ms_conn *cl = NULL, *sv = NULL;
  conn_ud cu = {0}, su = {0};
  CHECK_EQ_INT(conn_pair(&cl, &sv, &cu, &su), 0);
  su.del_on_message = 1;
  /* Two messages in one read: the first deletes the server conn. */
  ms_conn_send(cl, 1, (const uint8_t *)"one", 3);
  ms_conn_send(cl, 1, (const uint8_t *)"two", 3);
  CHECK_EQ_INT(pump_from(cl, &ms_conn_engine_ops, sv), MS_PUMP_FREED);
  CHECK_EQ_INT(su.messages, 1); /* no callback after the delete */
  ms_conn_del(cl);
}

static void conn_deleted_from_on_close(void) {
  ms_conn *cl = NULL, *sv = NULL;
  conn_ud cu = {0}, su = {0};
  CHECK_EQ_INT(conn_pair(&cl, &sv, &cu, &su), 0);
  su.del_on_close = 1;
  ms_conn_eof(sv, T0); /* on_close deletes sv from inside */
  CHECK_EQ_INT(su.closes, 1);
  ms_conn_del(cl);
}

static void pump_without_hold_hooks_still_works(void) {
  /* An ops struct from before hold/release (both NULL) pumps as before. */
  ms_conn *cl = NULL, *sv = NULL;
  conn_ud cu = {0}, su = {0};
  CHECK_EQ_INT(conn_pair(&cl, &sv, &cu, &su), 0);
  ms_engine_ops old = ms_conn_engine_ops;
  old.hold = NULL;
  old.release = NULL;
  ms_conn_send(cl, 1, (const uint8_t *)"one", 3);
  int rv = pump_from(cl, &old, sv);
  CHECK(rv > 0 && (rv & MS_PUMP_WANT_READ));
  CHECK_EQ_INT(su.messages, 1);
  ms_conn_del(cl);
  ms_conn_del(sv);
}

static const ms_test_case tests[] = {
    TEST(hub_deleted_from_on_http_during_feed),
    TEST(hub_deleted_from_on_http_during_pump),
    TEST(conn_deleted_from_on_message_during_pump),
    TEST(conn_deleted_from_on_close),
    TEST(pump_without_hold_hooks_still_works),
};

MS_TEST_MAIN(tests)
