/* The memory transport and ms_pump(), with a scripted engine and with two
 * real ms_conn engines talking through a memory pair. */
#include "ms_test.h"

#include <microstream/ms_conn.h>
#include <microstream/ms_transport.h>

/* ---- memory pair ---------------------------------------------------------- */

static void memory_pair_carries_bytes_both_ways(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 16, &a, &b, NULL), 0);
  CHECK_EQ_INT(a.vt->get_fd(a.self), -1);
  uint8_t buf[32];
  CHECK_EQ_INT(b.vt->read(b.self, buf, sizeof(buf)), MS_ERR_WOULDBLOCK);
  CHECK_EQ_INT(a.vt->write(a.self, (const uint8_t *)"hello", 5), 5);
  CHECK_EQ_INT(ms_memory_pair_buffered(p, 1), 5);
  CHECK_EQ_INT(ms_memory_pair_buffered(p, 0), 0);
  CHECK_EQ_INT(b.vt->read(b.self, buf, 3), 3);
  CHECK_MEM(buf, 3, "hel", 3);
  CHECK_EQ_INT(b.vt->read(b.self, buf, sizeof(buf)), 2);
  CHECK_MEM(buf, 2, "lo", 2);
  CHECK_EQ_INT(b.vt->write(b.self, (const uint8_t *)"back", 4), 4);
  CHECK_EQ_INT(ms_memory_pair_buffered(p, 0), 4);
  CHECK_EQ_INT(a.vt->read(a.self, buf, sizeof(buf)), 4);
  CHECK_MEM(buf, 4, "back", 4);
  a.vt->close(a.self);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
}

static void memory_pair_is_bounded_and_wraps(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 8, &a, &b, NULL), 0);
  /* Short write at capacity, then would-block. */
  CHECK_EQ_INT(a.vt->write(a.self, (const uint8_t *)"0123456789", 10), 8);
  CHECK_EQ_INT(a.vt->write(a.self, (const uint8_t *)"x", 1), MS_ERR_WOULDBLOCK);
  uint8_t buf[16];
  CHECK_EQ_INT(b.vt->read(b.self, buf, 5), 5);
  CHECK_MEM(buf, 5, "01234", 5);
  /* The next write wraps around the end of the ring. */
  CHECK_EQ_INT(a.vt->write(a.self, (const uint8_t *)"abcdef", 6), 5);
  CHECK_EQ_INT(ms_memory_pair_buffered(p, 1), 8);
  CHECK_EQ_INT(b.vt->read(b.self, buf, sizeof(buf)), 8);
  CHECK_MEM(buf, 8, "567abcde", 8);
  a.vt->close(a.self);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
}

static void memory_pair_close_gives_eof_after_buffered_bytes(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 64, &a, &b, NULL), 0);
  CHECK_EQ_INT(a.vt->write(a.self, (const uint8_t *)"last", 4), 4);
  a.vt->close(a.self);
  uint8_t buf[16];
  CHECK_EQ_INT(b.vt->read(b.self, buf, sizeof(buf)), 4);
  CHECK_MEM(buf, 4, "last", 4);
  CHECK_EQ_INT(b.vt->read(b.self, buf, sizeof(buf)), 0); /* end of stream */
  CHECK_EQ_INT(b.vt->read(b.self, buf, sizeof(buf)), 0);
  /* Writing toward a closed end fails. */
  CHECK_EQ_INT(b.vt->write(b.self, (const uint8_t *)"x", 1), MS_ERR_IO);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
  ms_memory_pair_del(NULL);
}

static void memory_pair_rejects_bad_arguments(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 0, &a, &b, NULL), MS_ERR_INVALID_ARG);
  CHECK_EQ_INT(ms_memory_pair_new(NULL, 8, &a, &b, NULL), MS_ERR_INVALID_ARG);
}

/* ---- ms_pump with a scripted engine ------------------------------------ */

typedef struct fake_engine {
  uint8_t in[1 << 20];
  size_t nin;
  size_t read_limit; /* want_read is 0 once nin reaches it */
  const uint8_t *out;
  size_t nout;
  int eofs;
  int feeds;
  int fail_feed;
} fake_engine;

static int fe_feed(void *e, const uint8_t *d, size_t n, int64_t now) {
  fake_engine *f = e;
  (void)now;
  f->feeds++;
  if (f->fail_feed)
    return MS_ERR_NOMEM;
  memcpy(f->in + f->nin, d, n);
  f->nin += n;
  return 0;
}
static const uint8_t *fe_peek(void *e, size_t *len) {
  fake_engine *f = e;
  *len = f->nout;
  return f->nout ? f->out : NULL;
}
static void fe_consume(void *e, size_t n) {
  fake_engine *f = e;
  f->out += n;
  f->nout -= n;
}
static int fe_want_read(const void *e) {
  const fake_engine *f = e;
  return !f->eofs && f->nin < f->read_limit;
}
static int fe_want_write(const void *e) {
  return ((const fake_engine *)e)->nout > 0;
}
static void fe_eof(void *e, int64_t now) {
  (void)now;
  ((fake_engine *)e)->eofs++;
}
static const ms_engine_ops fe_ops = {fe_feed,       fe_peek, fe_consume,
                                     fe_want_read,  fe_want_write, fe_eof,
                                     NULL,          NULL};

static fake_engine g_fe;

static void pump_reads_until_would_block_then_writes(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 1 << 20, &a, &b, NULL), 0);
  fake_engine *f = &g_fe;
  memset(f, 0, sizeof(*f));
  f->read_limit = sizeof(f->in);
  static uint8_t big[200000];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (uint8_t)(i * 7);
  CHECK_EQ_INT(a.vt->write(a.self, big, sizeof(big)), sizeof(big));
  f->out = (const uint8_t *)"reply";
  f->nout = 5;
  int m = ms_pump(&fe_ops, f, &b, 0, 1);
  CHECK_EQ_INT(m, MS_PUMP_WANT_READ);
  CHECK_MEM(f->in, f->nin, big, sizeof(big));
  CHECK(f->feeds >= 4); /* 64 KiB reads */
  CHECK_EQ_INT(f->nout, 0);
  uint8_t buf[8];
  CHECK_EQ_INT(a.vt->read(a.self, buf, sizeof(buf)), 5);
  CHECK_MEM(buf, 5, "reply", 5);
  a.vt->close(a.self);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
}

static void pump_respects_max_read_and_want_read(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 1 << 20, &a, &b, NULL), 0);
  fake_engine *f = &g_fe;
  memset(f, 0, sizeof(*f));
  f->read_limit = sizeof(f->in);
  static uint8_t data[300000];
  CHECK_EQ_INT(a.vt->write(a.self, data, sizeof(data)), sizeof(data));
  /* max_read bounds one call. */
  CHECK_EQ_INT(ms_pump(&fe_ops, f, &b, 1000, 0), MS_PUMP_WANT_READ);
  CHECK_EQ_INT(f->nin, 1000);
  /* 0 means 256 KiB. */
  CHECK_EQ_INT(ms_pump(&fe_ops, f, &b, 0, 0), MS_PUMP_WANT_READ);
  CHECK_EQ_INT(f->nin, 1000 + 256 * 1024);
  /* An engine that stops wanting input is not fed more. */
  f->read_limit = f->nin;
  CHECK_EQ_INT(ms_pump(&fe_ops, f, &b, 0, 0), MS_PUMP_DONE);
  CHECK_EQ_INT(f->nin, 1000 + 256 * 1024);
  CHECK_EQ_INT(ms_memory_pair_buffered(p, 1), sizeof(data) - f->nin);
  a.vt->close(a.self);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
}

static void pump_reports_end_of_stream_and_write_failure(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 64, &a, &b, NULL), 0);
  fake_engine *f = &g_fe;
  memset(f, 0, sizeof(*f));
  f->read_limit = sizeof(f->in);
  CHECK_EQ_INT(a.vt->write(a.self, (const uint8_t *)"bye", 3), 3);
  a.vt->close(a.self);
  f->out = (const uint8_t *)"late";
  f->nout = 4;
  int m = ms_pump(&fe_ops, f, &b, 0, 0);
  CHECK_EQ_INT(f->nin, 3);
  /* eof once for the end of stream, once for the failed write. */
  CHECK_EQ_INT(f->eofs, 2);
  CHECK_EQ_INT(m, MS_PUMP_WANT_WRITE);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
}

static void pump_write_stops_when_transport_is_full(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 10, &a, &b, NULL), 0);
  fake_engine *f = &g_fe;
  memset(f, 0, sizeof(*f));
  f->out = (const uint8_t *)"0123456789abcdef";
  f->nout = 16;
  CHECK_EQ_INT(ms_pump_write(&fe_ops, f, &b, 0), MS_PUMP_WANT_WRITE);
  CHECK_EQ_INT(f->nout, 6);
  CHECK_EQ_INT(ms_pump_write(&fe_ops, f, &b, 0), MS_PUMP_WANT_WRITE);
  CHECK_EQ_INT(f->nout, 6);
  uint8_t buf[16];
  CHECK_EQ_INT(a.vt->read(a.self, buf, sizeof(buf)), 10);
  CHECK_EQ_INT(ms_pump_write(&fe_ops, f, &b, 0), MS_PUMP_DONE);
  CHECK_EQ_INT(a.vt->read(a.self, buf, sizeof(buf)), 6);
  CHECK_MEM(buf, 6, "abcdef", 6);
  a.vt->close(a.self);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
}

static void pump_returns_fatal_engine_error(void) {
  ms_memory_pair *p;
  ms_transport a, b;
  CHECK_EQ_INT(ms_memory_pair_new(&p, 64, &a, &b, NULL), 0);
  fake_engine *f = &g_fe;
  memset(f, 0, sizeof(*f));
  f->read_limit = 10;
  f->fail_feed = 1;
  CHECK_EQ_INT(a.vt->write(a.self, (const uint8_t *)"x", 1), 1);
  CHECK_EQ_INT(ms_pump(&fe_ops, f, &b, 0, 0), MS_ERR_NOMEM);
  a.vt->close(a.self);
  b.vt->close(b.self);
  ms_memory_pair_del(p);
}

/* ---- two ms_conn engines over a memory pair ---------------------------- */

typedef struct peer {
  ms_conn *c;
  int opened;
  int closed;
  uint16_t close_code;
  char close_reason[128];
  int echo;
  int nmsgs;
  int last_binary;
  uint8_t last[300000];
  size_t last_len;
  int pongs;
} peer;

static void p_on_open(ms_conn *c, const ms_conn_open_arg *arg, void *ud) {
  (void)c;
  (void)arg;
  ((peer *)ud)->opened = 1;
}
static void p_on_message(ms_conn *c, const ms_conn_message_arg *arg,
                         void *ud) {
  peer *pr = ud;
  pr->nmsgs++;
  pr->last_binary = arg->binary;
  if (arg->len <= sizeof(pr->last)) {
    memcpy(pr->last, arg->data, arg->len);
    pr->last_len = arg->len;
  }
  if (pr->echo)
    ms_conn_send(c, arg->binary, arg->data, arg->len);
}
static void p_on_pong(ms_conn *c, const uint8_t *d, size_t n, void *ud) {
  (void)c;
  (void)d;
  (void)n;
  ((peer *)ud)->pongs++;
}
static void p_on_close(ms_conn *c, const ms_conn_close_arg *arg, void *ud) {
  peer *pr = ud;
  (void)c;
  pr->closed = 1;
  pr->close_code = arg->code;
  snprintf(pr->close_reason, sizeof(pr->close_reason), "%.*s",
           (int)arg->reason_len, arg->reason);
}

static peer g_cli, g_srv;

/* Pump both ends until nothing is buffered or queued on either side
 * for two rounds in a row. */
static void pump_both(const ms_transport *ta, const ms_transport *tb,
                      ms_memory_pair *mp) {
  int quiet = 0;
  for (int i = 0; i < 10000 && quiet < 2; i++) {
    ms_pump(&ms_conn_engine_ops, g_cli.c, ta, 0, 1);
    ms_pump(&ms_conn_engine_ops, g_srv.c, tb, 0, 1);
    int idle = ms_memory_pair_buffered(mp, 0) == 0 &&
               ms_memory_pair_buffered(mp, 1) == 0 &&
               ms_conn_out_pending(g_cli.c) == 0 &&
               ms_conn_out_pending(g_srv.c) == 0;
    quiet = idle ? quiet + 1 : 0;
  }
}

static void pump_drives_two_conns_through_handshake_and_messages(void) {
  ms_memory_pair *mp;
  ms_transport ta, tb;
  /* A small pair forces short writes and several pumps per message. */
  CHECK_EQ_INT(ms_memory_pair_new(&mp, 4096, &ta, &tb, NULL), 0);
  memset(&g_cli, 0, sizeof(g_cli));
  memset(&g_srv, 0, sizeof(g_srv));
  g_srv.echo = 1;
  ms_conn_callbacks cb;
  memset(&cb, 0, sizeof(cb));
  cb.on_open = p_on_open;
  cb.on_message = p_on_message;
  cb.on_pong = p_on_pong;
  cb.on_close = p_on_close;
  ms_conn_config cc, sc;
  ms_conn_config_init(&cc, MS_CONN_CLIENT);
  cc.host = "127.0.0.1:1";
  ms_conn_config_init(&sc, MS_CONN_SERVER);
  CHECK_EQ_INT(ms_conn_new(&g_cli.c, &cc, &cb, &g_cli, NULL), 0);
  CHECK_EQ_INT(ms_conn_new(&g_srv.c, &sc, &cb, &g_srv, NULL), 0);
  CHECK_EQ_INT(ms_conn_start(g_cli.c, 1), 0);
  CHECK_EQ_INT(ms_conn_start(g_srv.c, 1), 0);
  pump_both(&ta, &tb, mp);
  CHECK(g_cli.opened);
  CHECK(g_srv.opened);

  CHECK_EQ_INT(ms_conn_send(g_cli.c, 0, (const uint8_t *)"hi there", 8), 0);
  pump_both(&ta, &tb, mp);
  CHECK_EQ_INT(g_cli.nmsgs, 1);
  CHECK_EQ_INT(g_cli.last_binary, 0);
  CHECK_MEM(g_cli.last, g_cli.last_len, "hi there", 8);

  static uint8_t big[200000];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (uint8_t)(i ^ (i >> 8));
  CHECK_EQ_INT(ms_conn_send(g_cli.c, 1, big, sizeof(big)), 0);
  pump_both(&ta, &tb, mp);
  CHECK_EQ_INT(g_cli.nmsgs, 2);
  CHECK_EQ_INT(g_cli.last_binary, 1);
  CHECK_MEM(g_cli.last, g_cli.last_len, big, sizeof(big));

  CHECK_EQ_INT(ms_conn_ping(g_cli.c, (const uint8_t *)"p", 1), 0);
  pump_both(&ta, &tb, mp);
  CHECK_EQ_INT(g_cli.pongs, 1);

  CHECK_EQ_INT(ms_conn_close(g_cli.c, 4002, "bye"), 0);
  pump_both(&ta, &tb, mp);
  CHECK(g_srv.closed);
  CHECK_EQ_INT(g_srv.close_code, 4002);
  CHECK_EQ_STR(g_srv.close_reason, "bye");
  CHECK(g_cli.closed);
  CHECK_EQ_INT(g_cli.close_code, 4002);
  /* Client done: wants neither read nor write. */
  CHECK_EQ_INT(ms_pump(&ms_conn_engine_ops, g_cli.c, &ta, 0, 1),
               MS_PUMP_DONE);
  ta.vt->close(ta.self);
  /* Server sees end of stream and finishes too. */
  CHECK_EQ_INT(ms_pump(&ms_conn_engine_ops, g_srv.c, &tb, 0, 1),
               MS_PUMP_DONE);
  tb.vt->close(tb.self);
  ms_conn_del(g_cli.c);
  ms_conn_del(g_srv.c);
  ms_memory_pair_del(mp);
}

static const ms_test_case tests[] = {
    TEST(memory_pair_carries_bytes_both_ways),
    TEST(memory_pair_is_bounded_and_wraps),
    TEST(memory_pair_close_gives_eof_after_buffered_bytes),
    TEST(memory_pair_rejects_bad_arguments),
    TEST(pump_reads_until_would_block_then_writes),
    TEST(pump_respects_max_read_and_want_read),
    TEST(pump_reports_end_of_stream_and_write_failure),
    TEST(pump_write_stops_when_transport_is_full),
    TEST(pump_returns_fatal_engine_error),
    TEST(pump_drives_two_conns_through_handshake_and_messages),
};
MS_TEST_MAIN(tests)
