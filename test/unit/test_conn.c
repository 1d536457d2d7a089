/* The WebSocket engine with scripted bytes and a fake clock: handshakes,
 * framing through wslay, close handshakes, limits, timeouts, re-entrancy. */
#include <microstream/ms_conn.h>

#include "ms_internal.h"
#include "ms_test.h"

/* ---- recorder: what callbacks saw, and what they should do ---------- */

typedef struct rec {
  ms_conn *self;
  int opened, enc, echoed;
  int nmsg;
  char log[4096]; /* "T:text|B:bin|" */
  size_t log_len;
  size_t last_len;
  int npong;
  char pong[130];
  int closed;
  ms_conn_close_arg close;
  char close_reason[130];
  int http_requests;
  char http_path[64], http_query[64];
  /* actions */
  int upgrade_status;
  int del_on_open, del_on_message, del_on_close;
  int respond_status; /* on_http_request answers at once when set */
  int echo;
} rec;

static void log_add(rec *r, const char *s, size_t n) {
  n = MS_MIN(n, sizeof r->log - 1 - r->log_len);
  if (n == 0)
    return; /* an empty message may come with a NULL pointer */
  memcpy(r->log + r->log_len, s, n);
  r->log_len += n;
  r->log[r->log_len] = '\0';
}

static int on_upgrade(ms_conn *c, const ms_http_request *req, void *ud) {
  rec *r = ud;
  (void)c;
  (void)req;
  return r->upgrade_status;
}

static void on_http_request(ms_conn *c, const ms_http_request *req,
                            void *ud) {
  rec *r = ud;
  r->http_requests++;
  snprintf(r->http_path, sizeof r->http_path, "%.*s", (int)req->path_len,
           req->path);
  snprintf(r->http_query, sizeof r->http_query, "%.*s", (int)req->query_len,
           req->query);
  if (r->respond_status)
    ms_conn_http_respond(c, r->respond_status, "text/plain", "X-A: b\r\n",
                         "ok\n", 3);
}

static void on_open(ms_conn *c, const ms_conn_open_arg *a, void *ud) {
  rec *r = ud;
  r->opened++;
  r->enc = a->encoding;
  r->echoed = a->subprotocol_echoed;
  if (r->del_on_open)
    ms_conn_del(c);
}

static void on_message(ms_conn *c, const ms_conn_message_arg *a, void *ud) {
  rec *r = ud;
  r->nmsg++;
  r->last_len = a->len;
  log_add(r, a->binary ? "B:" : "T:", 2);
  log_add(r, (const char *)a->data, MS_MIN(a->len, 64));
  log_add(r, "|", 1);
  if (r->echo)
    ms_conn_send(c, a->binary, a->data, a->len);
  if (r->del_on_message)
    ms_conn_del(c);
}

static void on_pong(ms_conn *c, const uint8_t *d, size_t n, void *ud) {
  rec *r = ud;
  (void)c;
  r->npong++;
  snprintf(r->pong, sizeof r->pong, "%.*s", (int)n, (const char *)d);
}

static void on_close(ms_conn *c, const ms_conn_close_arg *a, void *ud) {
  rec *r = ud;
  r->closed++;
  r->close = *a;
  snprintf(r->close_reason, sizeof r->close_reason, "%s", a->reason);
  r->close.reason = r->close_reason;
  if (r->del_on_close)
    ms_conn_del(c);
}

static const ms_conn_callbacks cbs = {on_upgrade, on_http_request, on_open,
                                      on_message, on_pong, on_close};

static ms_conn *new_conn(ms_conn_role role, rec *r, ms_conn_config *cfg) {
  ms_conn_config def;
  if (!cfg) {
    ms_conn_config_init(&def, role);
    def.host = "127.0.0.1:7400";
    cfg = &def;
  }
  memset(r, 0, sizeof *r);
  ms_conn *c = NULL;
  if (ms_conn_new(&c, cfg, &cbs, r, NULL) != 0)
    return NULL;
  r->self = c;
  return c;
}

/* ---- output capture --------------------------------------------------- */

typedef struct out {
  uint8_t *data;
  size_t len;
} out;

static void take_all(ms_conn *c, out *o) {
  size_t n;
  const uint8_t *p;
  while ((p = ms_conn_peek(c, &n)) != NULL && n > 0) {
    o->data = realloc(o->data, o->len + n + 1);
    memcpy(o->data + o->len, p, n);
    o->len += n;
    o->data[o->len] = 0;
    ms_conn_consume(c, n);
  }
}

static void out_free(out *o) {
  free(o->data);
  o->data = NULL;
  o->len = 0;
}

static int contains(const out *o, const char *s) {
  size_t n = strlen(s);
  if (o->len < n)
    return 0;
  for (size_t i = 0; i + n <= o->len; i++)
    if (memcmp(o->data + i, s, n) == 0)
      return 1;
  return 0;
}

/* ---- frames ----------------------------------------------------------- */

/* Append one frame to buf (masked with a fixed key when mask is set). */
static size_t frame(uint8_t *buf, int fin, int opcode, int mask,
                    const void *payload, size_t len) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  size_t i = 0;
  buf[i++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    buf[i++] = (uint8_t)(m | len);
  } else if (len < 65536) {
    buf[i++] = m | 126;
    buf[i++] = (uint8_t)(len >> 8);
    buf[i++] = (uint8_t)len;
  } else {
    buf[i++] = m | 127;
    for (int k = 7; k >= 0; k--)
      buf[i++] = (uint8_t)((uint64_t)len >> (8 * k));
  }
  if (mask) {
    memcpy(buf + i, key, 4);
    i += 4;
  }
  const uint8_t *p = payload;
  for (size_t k = 0; k < len; k++)
    buf[i + k] = mask ? (uint8_t)(p[k] ^ key[k % 4]) : p[k];
  return i + len;
}

#define UPGRADE_HEAD(extra)                                                   \
  "GET /ws?x=1 HTTP/1.1\r\nHost: server.example.com\r\n"                      \
  "Upgrade: websocket\r\nConnection: Upgrade\r\n"                            \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                          \
  "Sec-WebSocket-Version: 13\r\n" extra "\r\n"

static int feed_str(ms_conn *c, const char *s, int64_t now) {
  return ms_conn_feed(c, (const uint8_t *)s, strlen(s), now);
}

/* Move bytes both ways until neither side has output. */
static void shuttle(ms_conn *a, ms_conn *b, int64_t now) {
  for (int round = 0; round < 1000; round++) {
    int moved = 0;
    ms_conn *pair[2][2] = {{a, b}, {b, a}};
    for (int k = 0; k < 2; k++) {
      size_t n;
      const uint8_t *p = ms_conn_peek(pair[k][0], &n);
      if (p && n) {
        uint8_t *copy = malloc(n);
        memcpy(copy, p, n);
        ms_conn_consume(pair[k][0], n);
        if (ms_conn_want_read(pair[k][1]))
          ms_conn_feed(pair[k][1], copy, n, now);
        free(copy);
        moved = 1;
      }
    }
    if (!moved)
      return;
  }
}

/* ---- tests ------------------------------------------------------------ */

static void accept_key_matches_rfc6455_example(void) {
  char key[29];
  ms_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, key);
  CHECK_EQ_STR(key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void server_handshake_then_masked_frame_in_same_feed(void) {
  rec r;
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  CHECK_EQ_INT(ms_conn_start(s, 0), 0);
  uint8_t in[512];
  static const char head[] =
      UPGRADE_HEAD("Sec-WebSocket-Protocol: microstream.v1\r\n");
  memcpy(in, head, sizeof head - 1);
  size_t n = sizeof head - 1;
  n += frame(in + n, 1, 1, 1, "Hello", 5);
  CHECK_EQ_INT(ms_conn_feed(s, in, n, 1), 0);
  CHECK_EQ_INT(r.opened, 1);
  CHECK_EQ_INT(r.enc, MS_ENC_MSGPACK);
  CHECK_EQ_INT(r.echoed, 1);
  CHECK(ms_conn_is_open(s));
  CHECK_EQ_STR(r.log, "T:Hello|");
  out o = {0};
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 101 Switching Protocols\r\n"));
  CHECK(contains(&o, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  CHECK(contains(&o, "Sec-WebSocket-Protocol: microstream.v1\r\n"));
  CHECK(o.len >= 4 && memcmp(o.data + o.len - 4, "\r\n\r\n", 4) == 0);
  out_free(&o);
  /* The server's frames are unmasked. */
  CHECK_EQ_INT(ms_conn_send(s, 1, (const uint8_t *)"abc", 3), 0);
  CHECK(ms_conn_want_write(s));
  /* Framed at once (header + payload) when nothing else is queued. */
  CHECK_EQ_INT(ms_conn_out_pending(s), 5);
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x82\x03" "abc", 5);
  CHECK_EQ_INT(ms_conn_out_pending(s), 0);
  CHECK(!ms_conn_want_write(s));
  CHECK(ms_conn_want_read(s));
  CHECK_EQ_INT(ms_conn_next_deadline(s), MS_NO_DEADLINE);
  out_free(&o);
  ms_conn_del(s);
}

static void client_and_server_exchange_messages_ping_and_close(void) {
  rec rc, rs;
  ms_conn_config cc;
  ms_conn_config_init(&cc, MS_CONN_CLIENT);
  cc.host = "hub.local:7400";
  cc.origin = "http://hub.local";
  cc.offer[0] = MS_ENC_JSON;
  cc.offer[1] = MS_ENC_MSGPACK;
  ms_conn *c = new_conn(MS_CONN_CLIENT, &rc, &cc);
  ms_conn *s = new_conn(MS_CONN_SERVER, &rs, NULL);
  CHECK(c && s);
  CHECK(!ms_conn_want_read(c));
  CHECK_EQ_INT(ms_conn_send(c, 1, (const uint8_t *)"x", 1), MS_ERR_STATE);
  CHECK_EQ_INT(ms_conn_start(c, 0), 0);
  CHECK_EQ_INT(ms_conn_start(s, 0), 0);
  /* Check the request the client writes. */
  size_t n;
  const uint8_t *p = ms_conn_peek(c, &n);
  out req = {0};
  req.data = malloc(n + 1);
  memcpy(req.data, p, n);
  req.len = n;
  req.data[n] = 0;
  CHECK(contains(&req, "GET /ws HTTP/1.1\r\n"));
  CHECK(contains(&req, "Host: hub.local:7400\r\n"));
  CHECK(contains(&req, "Origin: http://hub.local\r\n"));
  CHECK(contains(&req, "Sec-WebSocket-Version: 13\r\n"));
  CHECK(contains(&req,
                 "Sec-WebSocket-Protocol: microstream.json.v1, microstream.v1"));
  out_free(&req);

  shuttle(c, s, 1);
  CHECK_EQ_INT(rc.opened, 1);
  CHECK_EQ_INT(rs.opened, 1);
  CHECK_EQ_INT(rc.enc, MS_ENC_JSON);
  CHECK_EQ_INT(rs.enc, MS_ENC_JSON);
  CHECK_EQ_INT(ms_conn_encoding(c), MS_ENC_JSON);
  CHECK_EQ_INT(ms_conn_get_role(c), MS_CONN_CLIENT);

  CHECK_EQ_INT(ms_conn_send(c, 0, (const uint8_t *)"hello", 5), 0);
  CHECK_EQ_INT(ms_conn_send(c, 1, (const uint8_t *)"\x00\x01", 2), 0);
  CHECK_EQ_INT(ms_conn_send(s, 0, (const uint8_t *)"back", 4), 0);
  CHECK_EQ_INT(ms_conn_ping(c, (const uint8_t *)"p1", 2), 0);
  CHECK_EQ_INT(ms_conn_ping(s, (const uint8_t *)"p2", 2), 0);
  shuttle(c, s, 2);
  CHECK_EQ_INT(rs.nmsg, 2);
  CHECK_MEM(rs.log, rs.log_len, "T:hello|B:\0\1|", 13);
  CHECK_EQ_STR(rc.log, "T:back|");
  CHECK_EQ_INT(rc.npong, 1);
  CHECK_EQ_STR(rc.pong, "p1");
  CHECK_EQ_INT(rs.npong, 1);
  CHECK_EQ_STR(rs.pong, "p2");

  /* Client closes with a code and a reason. */
  CHECK_EQ_INT(ms_conn_close(c, 4002, "bye now"), 0);
  CHECK(!ms_conn_is_open(c));
  CHECK_EQ_INT(ms_conn_send(c, 1, (const uint8_t *)"x", 1), MS_ERR_STATE);
  CHECK_EQ_INT(ms_conn_close(c, 1000, NULL), MS_ERR_STATE);
  /* Closed outside a call that brought the time: due at once, so the
   * transport ticks, and the close timer runs from that real time. */
  CHECK_EQ_INT(ms_conn_next_deadline(c), 2);
  ms_conn_tick(c, 3);
  CHECK_EQ_INT(ms_conn_next_deadline(c), 3 + 5000);
  shuttle(c, s, 3);
  CHECK_EQ_INT(rs.closed, 1);
  CHECK_EQ_INT(rs.close.err, 0);
  CHECK_EQ_INT(rs.close.code, 4002);
  CHECK_EQ_STR(rs.close.reason, "bye now");
  CHECK_EQ_INT(rs.close.by_peer, 1);
  CHECK_EQ_INT(rc.closed, 1);
  CHECK_EQ_INT(rc.close.err, 0);
  CHECK_EQ_INT(rc.close.code, 4002);
  CHECK_EQ_INT(rc.close.by_peer, 0);
  CHECK(!ms_conn_want_read(c) && !ms_conn_want_write(c));
  CHECK(!ms_conn_want_read(s) && !ms_conn_want_write(s));
  CHECK_EQ_INT(ms_conn_next_deadline(c), MS_NO_DEADLINE);
  /* eof afterwards does not report twice */
  ms_conn_eof(s, 4);
  CHECK_EQ_INT(rs.closed, 1);
  ms_conn_del(c);
  ms_conn_del(s);
}

/* Feed a script to a fresh server in chunks of `step` (0 = all at once)
 * and return the output and message log. */
static void run_server_script(const uint8_t *in, size_t len, size_t step,
                              out *o, rec *r) {
  ms_conn *s = new_conn(MS_CONN_SERVER, r, NULL);
  if (!s)
    return;
  r->echo = 1;
  ms_conn_start(s, 0);
  if (step == 0)
    step = len;
  for (size_t off = 0; off < len; off += step)
    ms_conn_feed(s, in + off, MS_MIN(step, len - off), 1);
  take_all(s, o);
  ms_conn_del(s);
}

static void byte_at_a_time_gives_identical_results(void) {
  static uint8_t in[4096];
  static const char head[] =
      UPGRADE_HEAD("Sec-WebSocket-Protocol: microstream.json.v1\r\n");
  memcpy(in, head, sizeof head - 1);
  size_t n = sizeof head - 1;
  n += frame(in + n, 1, 1, 1, "first", 5);
  n += frame(in + n, 0, 2, 1, "frag", 4);
  n += frame(in + n, 1, 9, 1, "ping", 4);
  n += frame(in + n, 1, 0, 1, "ment", 4);
  uint8_t mid[300];
  memset(mid, 'm', sizeof mid);
  n += frame(in + n, 1, 2, 1, mid, sizeof mid); /* 16-bit length */
  n += frame(in + n, 1, 8, 1, "\x03\xe8" "done", 6);
  rec r1, r2;
  out o1 = {0}, o2 = {0};
  run_server_script(in, n, 0, &o1, &r1);
  run_server_script(in, n, 1, &o2, &r2);
  CHECK_EQ_INT(r1.nmsg, 3);
  CHECK(strncmp(r1.log, "T:first|B:fragment|B:mmm", 24) == 0);
  CHECK_EQ_INT(r1.closed, 1);
  CHECK_EQ_INT(r1.close.code, 1000);
  CHECK_EQ_STR(r1.close.reason, "done");
  CHECK_EQ_INT(r2.nmsg, r1.nmsg);
  CHECK_EQ_STR(r2.log, r1.log);
  CHECK_EQ_INT(r2.closed, 1);
  CHECK_EQ_INT(r2.close.code, 1000);
  CHECK_MEM(o1.data, o1.len, o2.data, o2.len);
  /* The output ends with the echoed close. The peer's close overtakes what
   * was still queued (echoes, the pong), which is then never sent. */
  CHECK(o1.len > 8);
  CHECK_MEM(o1.data + o1.len - 8, 8, "\x88\x06\x03\xe8" "done", 8);
  out_free(&o1);
  out_free(&o2);

  /* Client side: the 101 response and server frames, byte by byte. */
  for (int pass = 0; pass < 2; pass++) {
    rec rc, rs;
    ms_conn *c = new_conn(MS_CONN_CLIENT, &rc, NULL);
    ms_conn *s = new_conn(MS_CONN_SERVER, &rs, NULL);
    CHECK(c && s);
    ms_conn_start(c, 0);
    out q = {0}, a = {0};
    take_all(c, &q);
    ms_conn_feed(s, q.data, q.len, 0);
    ms_conn_send(s, 0, (const uint8_t *)"one", 3);
    ms_conn_send(s, 1, mid, sizeof mid);
    take_all(s, &a);
    if (pass == 0) {
      ms_conn_feed(c, a.data, a.len, 1);
    } else {
      for (size_t i = 0; i < a.len; i++)
        ms_conn_feed(c, a.data + i, 1, 1);
    }
    CHECK_EQ_INT(rc.opened, 1);
    CHECK_EQ_INT(rc.nmsg, 2);
    CHECK(strncmp(rc.log, "T:one|B:mmm", 11) == 0);
    CHECK_EQ_INT(rc.last_len, sizeof mid);
    out_free(&q);
    out_free(&a);
    ms_conn_del(c);
    ms_conn_del(s);
  }
}

/* Random frame scripts, each fed whole (whole frames are read without
 * wslay), byte by byte (wslay reads every frame) and in random pieces:
 * the messages, pongs, close and output must be the same every way. */
typedef struct lcg {
  uint32_t s;
} lcg;

static uint32_t lcg_next(lcg *g) {
  g->s = g->s * 1103515245u + 12345u;
  return g->s >> 8;
}

/* One frame, sometimes one the peer must refuse. */
static size_t random_frame(lcg *g, uint8_t *buf, int *in_frag) {
  static uint8_t pay[70000];
  uint32_t k = lcg_next(g) % 100;
  size_t len;
  uint32_t r = lcg_next(g) % 10;
  len = r < 4 ? lcg_next(g) % 126 : r < 7 ? 126 + lcg_next(g) % 400
        : r < 9 ? 4000 + lcg_next(g) % 6000 : 66000 + lcg_next(g) % 4000;
  for (size_t i = 0; i < len; i++)
    pay[i] = (uint8_t)('a' + (i + k) % 26);
  if (k < 3) { /* invalid UTF-8 in a text frame */
    pay[len / 2] = 0xed;
    if (len / 2 + 2 < len) {
      pay[len / 2 + 1] = 0xa0;
      pay[len / 2 + 2] = 0x80;
    }
    return frame(buf, 1, 1, 1, pay, len ? len : 1);
  }
  if (k < 5) /* unmasked */
    return frame(buf, 1, 2, 0, pay, len);
  if (k < 7) { /* RSV1 */
    size_t n = frame(buf, 1, 2, 1, pay, len);
    buf[0] |= 0x40;
    return n;
  }
  if (k < 9) { /* reserved opcode */
    return frame(buf, 1, 3, 1, pay, len);
  }
  if (k < 11) { /* 16-bit length for a short payload */
    size_t n = frame(buf + 2, 1, 2, 1, pay, 5);
    buf[0] = 0x82;
    buf[1] = 0x80 | 126;
    buf[2] = 0;
    buf[3] = 5;
    return n + 2;
  }
  if (k < 20) /* control frames */
    return frame(buf, 1, k < 15 ? 9 : 10, 1, pay, len % 126);
  if (k < 30) { /* fragments */
    int op = *in_frag ? 0 : 1 + (int)(k & 1);
    int fin = k >= 25;
    *in_frag = !fin;
    return frame(buf, fin, op, 1, pay, len % 3000);
  }
  if (k < 33) /* a new message inside a fragmented one */
    return frame(buf, 1, 2, 1, pay, len % 300);
  if (*in_frag) {
    *in_frag = 0;
    return frame(buf, 1, 0, 1, pay, len % 300);
  }
  if (k < 40) { /* valid multi-byte UTF-8 */
    size_t n = 0;
    for (; n + 3 <= len % 600; n += 3)
      memcpy(pay + n, "\xe2\x82\xac", 3);
    return frame(buf, 1, 1, 1, pay, n);
  }
  return frame(buf, 1, 1 + (int)(k & 1), 1, pay, len);
}

/* Feed a script to a fresh server: in the pieces that `cuts` (ascending
 * offsets, ending with len) gives, draining the output after each. */
static void run_server_cuts(const uint8_t *in, const size_t *cuts,
                            size_t ncuts, size_t max_message, out *o,
                            rec *r) {
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.max_message = max_message;
  ms_conn *s = new_conn(MS_CONN_SERVER, r, &cfg);
  if (!s)
    return;
  r->echo = 1;
  ms_conn_start(s, 0);
  size_t off = 0;
  for (size_t i = 0; i < ncuts; i++) {
    ms_conn_feed(s, in + off, cuts[i] - off, 1);
    off = cuts[i];
    take_all(s, o);
  }
  ms_conn_del(s);
}

static void same_events(const rec *a, const rec *b) {
  CHECK_EQ_INT(a->nmsg, b->nmsg);
  CHECK_EQ_STR(a->log, b->log);
  CHECK_EQ_INT(a->last_len, b->last_len);
  CHECK_EQ_INT(a->npong, b->npong);
  CHECK_EQ_INT(a->closed, b->closed);
  CHECK_EQ_INT(a->close.err, b->close.err);
  CHECK_EQ_INT(a->close.code, b->close.code);
}

static void whole_frames_read_directly_match_wslay(void) {
  static uint8_t in[1 << 20];
  static size_t cuts[1 << 20];
  static size_t bounds[64];
  static const char head[] = UPGRADE_HEAD("");
  for (uint32_t seed = 1; seed <= 80; seed++) {
    lcg g = {seed};
    size_t n = sizeof head - 1, nb = 0;
    memcpy(in, head, n);
    bounds[nb++] = n;
    int in_frag = 0;
    int frames = 1 + (int)(lcg_next(&g) % 12);
    for (int i = 0; i < frames && n < sizeof in - 80000; i++) {
      n += random_frame(&g, in + n, &in_frag);
      bounds[nb++] = n;
    }
    if (seed % 3 == 0) {
      n += frame(in + n, 1, 8, 1, "\x03\xe8" "bye", 5);
      bounds[nb++] = n;
    }
    size_t max_message = seed % 4 == 0 ? 5000 : 1 << 20;
    rec ref, r;
    out oref = {0}, o = {0};
    /* Reference: byte by byte, so wslay reads every frame. */
    for (size_t i = 0; i < n; i++)
      cuts[i] = i + 1;
    run_server_cuts(in, cuts, n, max_message, &oref, &ref);
    CHECK(ref.opened);
    /* Frame by frame: each frame read directly, same output. */
    run_server_cuts(in, bounds, nb, max_message, &o, &r);
    same_events(&r, &ref);
    CHECK_MEM(o.data, o.len, oref.data, oref.len);
    out_free(&o);
    /* All at once, and in random pieces: the same events (output may
     * differ in order: wslay sends queued control frames first). */
    cuts[0] = n;
    run_server_cuts(in, cuts, 1, max_message, &o, &r);
    same_events(&r, &ref);
    out_free(&o);
    size_t nc = 0;
    for (size_t off = 0; off < n; nc++) {
      off += 1 + lcg_next(&g) % 9000;
      cuts[nc] = MS_MIN(off, n);
    }
    run_server_cuts(in, cuts, nc, max_message, &o, &r);
    same_events(&r, &ref);
    out_free(&o);
    out_free(&oref);
  }
}

static ms_conn *open_server(rec *r, ms_conn_config *cfg, out *o) {
  ms_conn *s = new_conn(MS_CONN_SERVER, r, cfg);
  if (!s)
    return NULL;
  ms_conn_start(s, 0);
  feed_str(s, UPGRADE_HEAD(""), 1);
  take_all(s, o);
  out_free(o);
  return r->opened ? s : NULL;
}

static void fragmented_message_with_interleaved_ping(void) {
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  uint8_t in[256];
  size_t n = 0;
  n += frame(in + n, 0, 1, 1, "Hel", 3);
  n += frame(in + n, 1, 9, 1, "hb", 2);
  n += frame(in + n, 0, 0, 1, "lo ", 3);
  n += frame(in + n, 1, 0, 1, "world", 5);
  CHECK_EQ_INT(ms_conn_feed(s, in, n, 2), 0);
  CHECK_EQ_STR(r.log, "T:Hello world|");
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x8a\x02hb", 4);
  out_free(&o);
  ms_conn_del(s);
}

static void oversized_message_closes_1009(void) {
  rec r;
  out o = {0};
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.max_message = 16;
  ms_conn *s = open_server(&r, &cfg, &o);
  CHECK(s);
  uint8_t in[64], big[17];
  memset(big, 'x', sizeof big);
  /* Exactly the limit passes; one more byte does not, even fragmented. */
  size_t n = frame(in, 1, 2, 1, big, 16);
  ms_conn_feed(s, in, n, 2);
  CHECK_EQ_INT(r.nmsg, 1);
  n = frame(in, 0, 2, 1, big, 10);
  n += frame(in + n, 1, 0, 1, big, 7);
  ms_conn_feed(s, in, n, 2);
  CHECK_EQ_INT(r.nmsg, 1);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_TOO_BIG);
  CHECK_EQ_INT(r.close.code, 1009);
  CHECK(!ms_conn_want_read(s));
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x88\x02\x03\xf1", 4);
  CHECK(!ms_conn_want_write(s));
  CHECK_EQ_INT(ms_conn_send(s, 1, big, 16), MS_ERR_STATE);
  out_free(&o);
  ms_conn_del(s);
  /* Sending over the limit is refused locally. */
  s = open_server(&r, &cfg, &o);
  CHECK(s);
  CHECK_EQ_INT(ms_conn_send(s, 1, big, 17), MS_ERR_TOO_BIG);
  ms_conn_del(s);
}

static void too_many_fragments_close_1009(void) {
  rec r;
  out o = {0};
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.max_fragments = 8;
  ms_conn *s = open_server(&r, &cfg, &o);
  CHECK(s);
  uint8_t in[16];
  /* Eight frames make a message; a ninth of the next one is too many. */
  size_t n = frame(in, 0, 2, 1, "a", 1);
  ms_conn_feed(s, in, n, 2);
  for (int i = 0; i < 6; i++) {
    n = frame(in, 0, 0, 1, "b", 1);
    ms_conn_feed(s, in, n, 2);
  }
  n = frame(in, 1, 0, 1, "c", 1);
  ms_conn_feed(s, in, n, 2);
  CHECK_EQ_INT(r.nmsg, 1);
  CHECK_EQ_INT(r.closed, 0);
  n = frame(in, 0, 2, 1, "a", 1);
  ms_conn_feed(s, in, n, 3);
  for (int i = 0; i < 20 && !r.closed; i++) {
    n = frame(in, 0, 0, 1, "b", 1);
    ms_conn_feed(s, in, n, 3);
  }
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.code, 1009);
  CHECK_EQ_INT(r.nmsg, 1);
  CHECK(!ms_conn_want_read(s));
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x88\x02\x03\xf1", 4);
  out_free(&o);
  ms_conn_del(s);
}

static void unfinished_message_closes_1008_at_its_deadline(void) {
  rec r;
  out o = {0};
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.message_timeout_ms = 1000;
  ms_conn *s = open_server(&r, &cfg, &o);
  CHECK(s);
  uint8_t in[16];
  size_t n = frame(in, 0, 2, 1, "a", 1);
  ms_conn_feed(s, in, n, 100);
  CHECK_EQ_INT(ms_conn_next_deadline(s), 1100);
  /* More fragments do not move the deadline. */
  n = frame(in, 0, 0, 1, "b", 1);
  ms_conn_feed(s, in, n, 900);
  ms_conn_tick(s, 1099);
  CHECK_EQ_INT(r.closed, 0);
  ms_conn_tick(s, 1100);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.code, 1008);
  CHECK_EQ_INT(r.close.err, MS_ERR_TIMEOUT);
  CHECK(!ms_conn_want_read(s));
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x88\x02\x03\xf0", 4);
  out_free(&o);
  ms_conn_del(s);
  /* A message that completes in time leaves no deadline behind. */
  s = open_server(&r, &cfg, &o);
  CHECK(s);
  n = frame(in, 0, 2, 1, "a", 1);
  ms_conn_feed(s, in, n, 100);
  n = frame(in, 1, 0, 1, "b", 1);
  ms_conn_feed(s, in, n, 200);
  CHECK_EQ_INT(ms_conn_next_deadline(s), MS_NO_DEADLINE);
  ms_conn_del(s);
}

static void invalid_utf8_text_closes_1007(void) {
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  uint8_t in[64];
  size_t n = frame(in, 1, 1, 1, "ok\xc0\xaf", 4);
  ms_conn_feed(s, in, n, 2);
  CHECK_EQ_INT(r.nmsg, 0);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_UTF8);
  CHECK_EQ_INT(r.close.code, 1007);
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x88\x02\x03\xef", 4);
  out_free(&o);
  /* Binary messages are not checked; text we send is. */
  ms_conn_del(s);
  s = open_server(&r, NULL, &o);
  CHECK(s);
  n = frame(in, 1, 2, 1, "\xc0\xaf", 2);
  ms_conn_feed(s, in, n, 2);
  CHECK_EQ_INT(r.nmsg, 1);
  CHECK_EQ_INT(ms_conn_send(s, 0, (const uint8_t *)"\xff", 1),
               MS_ERR_INVALID_ARG);
  ms_conn_del(s);
}

static void unmasked_client_frame_is_protocol_error_1002(void) {
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  uint8_t in[64];
  size_t n = frame(in, 1, 2, 0, "abc", 3);
  ms_conn_feed(s, in, n, 2);
  CHECK_EQ_INT(r.nmsg, 0);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_PROTO);
  CHECK_EQ_INT(r.close.code, 1002);
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x88\x02\x03\xea", 4);
  CHECK(!ms_conn_want_read(s) && !ms_conn_want_write(s));
  out_free(&o);
  ms_conn_del(s);
  /* A control frame longer than 125 bytes is a framing error too. */
  s = open_server(&r, NULL, &o);
  CHECK(s);
  uint8_t big[200] = {0};
  uint8_t buf[256];
  n = frame(buf, 1, 9, 1, big, 126);
  ms_conn_feed(s, buf, n, 2);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_PROTO);
  CHECK_EQ_INT(r.close.code, 1002);
  ms_conn_del(s);
}

/* Run one upgrade request; returns the server output in o. */
static void upgrade_with(const char *request, rec *r, out *o,
                         ms_conn_config *cfg) {
  ms_conn *s = new_conn(MS_CONN_SERVER, r, cfg);
  if (!s)
    return;
  ms_conn_start(s, 0);
  feed_str(s, request, 1);
  take_all(s, o);
  ms_conn_del(s);
}

static void subprotocol_negotiation(void) {
  rec r;
  out o = {0};
  /* The client's first supported choice wins. */
  upgrade_with(UPGRADE_HEAD("Sec-WebSocket-Protocol: x.y, microstream.json.v1,"
                            " microstream.v1\r\n"),
               &r, &o, NULL);
  CHECK_EQ_INT(r.opened, 1);
  CHECK_EQ_INT(r.enc, MS_ENC_JSON);
  CHECK(contains(&o, "Sec-WebSocket-Protocol: microstream.json.v1\r\n"));
  out_free(&o);
  /* Offers spread over repeated headers. */
  upgrade_with(UPGRADE_HEAD("Sec-WebSocket-Protocol: other\r\n"
                            "Sec-WebSocket-Protocol: microstream.v1\r\n"),
               &r, &o, NULL);
  CHECK_EQ_INT(r.enc, MS_ENC_MSGPACK);
  CHECK(contains(&o, "Sec-WebSocket-Protocol: microstream.v1\r\n"));
  out_free(&o);
  /* None offered: msgpack, nothing echoed. */
  upgrade_with(UPGRADE_HEAD(""), &r, &o, NULL);
  CHECK_EQ_INT(r.opened, 1);
  CHECK_EQ_INT(r.enc, MS_ENC_MSGPACK);
  CHECK_EQ_INT(r.echoed, 0);
  CHECK(!contains(&o, "Sec-WebSocket-Protocol"));
  out_free(&o);
  /* Only unknown ones: 400 with a plain-text reason. */
  upgrade_with(UPGRADE_HEAD("Sec-WebSocket-Protocol: chat, MICROSTREAM.V1\r\n"),
               &r, &o, NULL);
  CHECK_EQ_INT(r.opened, 0);
  CHECK(contains(&o, "HTTP/1.1 400 Bad Request\r\n"));
  CHECK(contains(&o, "Content-Type: text/plain"));
  CHECK(contains(&o, "subprotocol"));
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_HANDSHAKE);
  CHECK_EQ_INT(r.close.http_status, 400);
  out_free(&o);
  /* accept_mask: json not accepted, so msgpack is picked. */
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.accept_mask = 1u << MS_ENC_MSGPACK;
  upgrade_with(UPGRADE_HEAD("Sec-WebSocket-Protocol: microstream.json.v1, "
                            "microstream.v1\r\n"),
               &r, &o, &cfg);
  CHECK_EQ_INT(r.enc, MS_ENC_MSGPACK);
  out_free(&o);
}

static void client_checks_the_101_response(void) {
  /* Scripted responses to a real client request. */
  static const struct {
    const char *resp;
    int opens;
    int status;
  } cases[] = {
      {"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 0, 403},
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
       0, 101},
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
       "Sec-WebSocket-Protocol: microstream.json.v1\r\n\r\n",
       0, 101}, /* not offered */
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Sec-WebSocket-Accept: %s\r\n\r\n",
       0, 101}, /* no Connection */
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Connection: upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
       1, 0},
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Connection: upgrade\r\nSec-WebSocket-Accept: %s\r\n"
       "Sec-WebSocket-Protocol: microstream.v1\r\n\r\n",
       1, 0},
  };
  for (size_t i = 0; i < MS_ARRAY_LEN(cases); i++) {
    rec r;
    ms_conn *c = new_conn(MS_CONN_CLIENT, &r, NULL);
    CHECK(c);
    ms_conn_start(c, 0);
    out q = {0};
    take_all(c, &q);
    const char *k = strstr((const char *)q.data, "Sec-WebSocket-Key: ");
    CHECK(k);
    k += 19;
    char accept[29];
    ms_ws_accept_key(k, 24, accept);
    char resp[512];
    /* Put the right accept value where the script says %s. */
    const char *mark = strstr(cases[i].resp, "%s");
    if (mark)
      snprintf(resp, sizeof resp, "%.*s%s%s", (int)(mark - cases[i].resp),
               cases[i].resp, accept, mark + 2);
    else
      snprintf(resp, sizeof resp, "%s", cases[i].resp);
    /* A frame right behind the head must not be lost. */
    size_t n = strlen(resp);
    n += frame((uint8_t *)resp + n, 1, 1, 0, "hi", 2);
    ms_conn_feed(c, (const uint8_t *)resp, n, 1);
    if (r.opened != cases[i].opens)
      printf("# case %zu\n", i);
    CHECK_EQ_INT(r.opened, cases[i].opens);
    if (cases[i].opens) {
      CHECK_EQ_INT(r.enc, MS_ENC_MSGPACK);
      CHECK_EQ_STR(r.log, "T:hi|");
      CHECK(ms_conn_want_read(c));
    } else {
      CHECK_EQ_INT(r.closed, 1);
      CHECK_EQ_INT(r.close.err, MS_ERR_HANDSHAKE);
      CHECK_EQ_INT(r.close.http_status, cases[i].status);
      CHECK(!ms_conn_want_read(c) && !ms_conn_want_write(c));
    }
    out_free(&q);
    ms_conn_del(c);
  }
}

static void client_without_offer_sends_no_protocol_header(void) {
  rec r;
  ms_conn_config cc;
  ms_conn_config_init(&cc, MS_CONN_CLIENT);
  cc.offer[0] = MS_ENC_NONE;
  cc.path = "/custom?q=1";
  ms_conn *c = new_conn(MS_CONN_CLIENT, &r, &cc);
  CHECK(c);
  ms_conn_start(c, 0);
  out q = {0};
  take_all(c, &q);
  CHECK(contains(&q, "GET /custom?q=1 HTTP/1.1\r\n"));
  CHECK(contains(&q, "Host: localhost\r\n"));
  CHECK(!contains(&q, "Sec-WebSocket-Protocol"));
  CHECK(!contains(&q, "Origin"));
  out_free(&q);
  ms_conn_del(c);
  /* Header injection through config strings is refused. */
  cc.host = "a\r\nX: y";
  ms_conn *bad = NULL;
  CHECK_EQ_INT(ms_conn_new(&bad, &cc, &cbs, NULL, NULL), MS_ERR_INVALID_ARG);
  CHECK(bad == NULL);
}

static void bad_upgrades_get_http_errors(void) {
  static const struct {
    const char *req;
    int status;
  } cases[] = {
      {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400}, /* missing key */
      {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n",
       400}, /* key not 16 bytes */
      {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Sec-WebSocket-Version: 8\r\n\r\n",
       426},
      {"POST /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET /ws HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
       "Connection: keep-alive\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET /ws HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400},
      {"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Sec-WebSocket-Version: 13\r\n\r\n",
       400}, /* no Host (RFC 6455 4.2.1) */
      {"GARBAGE\r\n\r\n", 400},
  };
  for (size_t i = 0; i < MS_ARRAY_LEN(cases); i++) {
    rec r;
    out o = {0};
    upgrade_with(cases[i].req, &r, &o, NULL);
    char line[64];
    snprintf(line, sizeof line, "HTTP/1.1 %d ", cases[i].status);
    if (!contains(&o, line))
      printf("# case %zu: %s\n", i, o.data ? (char *)o.data : "(none)");
    CHECK(contains(&o, line));
    CHECK(contains(&o, "Connection: close\r\n"));
    CHECK_EQ_INT(r.opened, 0);
    CHECK_EQ_INT(r.closed, 1);
    CHECK_EQ_INT(r.close.err, MS_ERR_HANDSHAKE);
    CHECK_EQ_INT(r.close.http_status, cases[i].status);
    if (cases[i].status == 426)
      CHECK(contains(&o, "Sec-WebSocket-Version: 13\r\n"));
    out_free(&o);
  }
  /* on_upgrade may refuse. */
  rec r;
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  r.upgrade_status = 403;
  feed_str(s, UPGRADE_HEAD(""), 1);
  out o = {0};
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 403 Forbidden\r\n"));
  CHECK_EQ_INT(r.close.http_status, 403);
  CHECK(!ms_conn_want_read(s) && !ms_conn_want_write(s));
  out_free(&o);
  ms_conn_del(s);
  /* A peer that never reads the refusal: output is dropped in time. */
  s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  ms_conn_start(s, 0);
  feed_str(s, "POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 50);
  CHECK(ms_conn_want_write(s));
  CHECK_EQ_INT(ms_conn_next_deadline(s), 50 + 5000);
  ms_conn_tick(s, 5049);
  CHECK(ms_conn_want_write(s));
  ms_conn_tick(s, 5050);
  CHECK(!ms_conn_want_write(s));
  CHECK_EQ_INT(ms_conn_next_deadline(s), MS_NO_DEADLINE);
  ms_conn_del(s);
}

static void header_limits_give_431(void) {
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.max_header_bytes = 256;
  cfg.max_headers = 4;
  rec r;
  out o = {0};
  /* Too large: never terminated within the limit, fed in pieces. */
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, &cfg);
  CHECK(s);
  feed_str(s, "GET /ws HTTP/1.1\r\n", 1);
  for (int i = 0; i < 40 && !r.closed; i++)
    feed_str(s, "X-Filler: 0123456789\r\n", 1);
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 431 "));
  CHECK_EQ_INT(r.close.http_status, 431);
  CHECK(!ms_conn_want_read(s));
  out_free(&o);
  ms_conn_del(s);
  /* Too many headers. */
  upgrade_with(UPGRADE_HEAD("A: 1\r\n"), &r, &o, &cfg);
  CHECK(contains(&o, "HTTP/1.1 431 "));
  CHECK_EQ_INT(r.close.err, MS_ERR_HANDSHAKE);
  out_free(&o);
}

static void bare_lf_head_gets_400_at_once(void) {
  rec r;
  out o = {0};
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  /* No blank CRLF line will ever come: answered at the first bare LF,
   * not at the handshake deadline. */
  feed_str(s, "GET /healthz HTTP/1.1\nHost: a\n", 1);
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 400 "));
  CHECK_EQ_INT(r.close.http_status, 400);
  CHECK(!ms_conn_want_read(s));
  out_free(&o);
  ms_conn_del(s);
}

static void plain_get_goes_to_on_http_request(void) {
  rec r;
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  ms_conn_start(s, 0);
  feed_str(s, "GET /healthz?v=1 HTTP/1.1\r\nHost: a\r\n\r\n", 1);
  CHECK_EQ_INT(r.http_requests, 1);
  CHECK_EQ_STR(r.http_path, "/healthz");
  CHECK_EQ_STR(r.http_query, "v=1");
  CHECK_EQ_INT(r.closed, 0);
  /* Waiting for the answer: still alive, nothing to write. */
  CHECK(ms_conn_want_read(s));
  CHECK(!ms_conn_want_write(s));
  CHECK_EQ_INT(ms_conn_send(s, 1, (const uint8_t *)"x", 1), MS_ERR_STATE);
  CHECK_EQ_INT(ms_conn_http_respond(s, 200, "text/plain", "X-A: b\r\n",
                                    "ok\n", 3),
               0);
  CHECK_EQ_INT(ms_conn_http_respond(s, 200, NULL, NULL, NULL, 0),
               MS_ERR_STATE);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, 0);
  CHECK_EQ_INT(r.close.http_status, 200);
  CHECK(!ms_conn_want_read(s));
  CHECK(ms_conn_want_write(s));
  out o = {0};
  take_all(s, &o);
  CHECK_EQ_STR((const char *)o.data,
               "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n"
               "Content-Type: text/plain\r\nX-A: b\r\n\r\nok\n");
  CHECK(!ms_conn_want_write(s));
  out_free(&o);
  ms_conn_del(s);

  /* Answered from inside the callback. */
  s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  r.respond_status = 204;
  feed_str(s, "GET / HTTP/1.1\r\n\r\n", 1);
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 204 No Content\r\n"));
  CHECK(!ms_conn_want_read(s) && !ms_conn_want_write(s));
  out_free(&o);
  ms_conn_del(s);

  /* No on_http_request: 404. */
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  ms_conn_callbacks nocb = cbs;
  nocb.on_http_request = NULL;
  CHECK_EQ_INT(ms_conn_new(&s, &cfg, &nocb, &r, NULL), 0);
  feed_str(s, "GET /x HTTP/1.1\r\n\r\n", 1);
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 404 Not Found\r\n"));
  out_free(&o);
  ms_conn_del(s);
}

static void keep_alive_answers_serve_the_next_request(void) {
  rec r;
  out o = {0};
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  ms_conn_start(s, 0);
  feed_str(s, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n", 10);
  CHECK_EQ_INT(r.http_requests, 1);
  CHECK_EQ_INT(ms_conn_http_respond_keep(s, 200, "text/plain", NULL, "1", 1),
               1);
  CHECK_EQ_INT(r.closed, 0);
  take_all(s, &o);
  CHECK_EQ_STR((const char *)o.data,
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
               "Content-Type: text/plain\r\n\r\n1");
  out_free(&o);
  /* Idle limit: the handshake timeout, from the answer (answered outside
   * a call that brought the time: due at once, set from the next tick). */
  CHECK(ms_conn_want_read(s));
  CHECK(ms_conn_next_deadline(s) <= 10);
  ms_conn_tick(s, 20);
  CHECK_EQ_INT(r.closed, 0);
  CHECK_EQ_INT(ms_conn_next_deadline(s), 20 + 10000);
  /* The next request, with a body, on the same connection. */
  feed_str(s, "POST /b?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", 500);
  CHECK_EQ_INT(r.http_requests, 1);
  feed_str(s, "c", 600);
  CHECK_EQ_INT(r.http_requests, 2);
  CHECK_EQ_STR(r.http_path, "/b");
  CHECK_EQ_INT(ms_conn_http_respond_keep(s, 200, NULL, NULL, "ok", 2), 1);
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 200 OK\r\n"));
  CHECK(!contains(&o, "Connection: close"));
  out_free(&o);
  /* Idle past the limit: finished (no answer to nothing). */
  ms_conn_tick(s, 600);
  ms_conn_tick(s, 600 + 9999);
  CHECK_EQ_INT(r.closed, 0);
  ms_conn_tick(s, 600 + 10000);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_TIMEOUT);
  CHECK(!ms_conn_want_read(s));
  ms_conn_del(s);

  /* "Connection: close", HTTP/1.0, or a pipelined request after it: the
   * answer closes (pipelined bytes are not read). */
  static const char *const closing[] = {
      "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
      "GET / HTTP/1.0\r\n\r\n",
      "GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n",
  };
  for (size_t i = 0; i < MS_ARRAY_LEN(closing); i++) {
    s = new_conn(MS_CONN_SERVER, &r, NULL);
    CHECK(s);
    ms_conn_start(s, 0);
    feed_str(s, closing[i], 1);
    CHECK_EQ_INT(r.http_requests, 1);
    CHECK_EQ_INT(ms_conn_http_respond_keep(s, 200, NULL, NULL, "ok", 2), 0);
    CHECK_EQ_INT(r.closed, 1);
    CHECK_EQ_INT(r.close.http_status, 200);
    take_all(s, &o);
    CHECK(contains(&o, "Connection: close\r\n"));
    CHECK(!ms_conn_want_read(s));
    out_free(&o);
    ms_conn_del(s);
  }
  /* Bytes while the answer is owed: pipelined too. */
  s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  ms_conn_start(s, 0);
  feed_str(s, "GET / HTTP/1.1\r\n\r\n", 1);
  feed_str(s, "GET /2 HTTP/1.1\r\n\r\n", 2);
  CHECK_EQ_INT(ms_conn_http_respond_keep(s, 200, NULL, NULL, "ok", 2), 0);
  CHECK_EQ_INT(r.closed, 1);
  ms_conn_del(s);

  /* At most MS_CONN_HTTP_MAX_KEEP requests on one connection. */
  s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  ms_conn_start(s, 0);
  int kept = 0;
  for (int i = 0; i < MS_CONN_HTTP_MAX_KEEP + 5 && !r.closed; i++) {
    feed_str(s, "GET / HTTP/1.1\r\n\r\n", 1);
    if (ms_conn_http_respond_keep(s, 204, NULL, NULL, NULL, 0) == 1)
      kept++;
    take_all(s, &o);
    out_free(&o);
  }
  CHECK_EQ_INT(kept, MS_CONN_HTTP_MAX_KEEP - 1);
  CHECK_EQ_INT(r.http_requests, MS_CONN_HTTP_MAX_KEEP);
  CHECK_EQ_INT(r.closed, 1);
  ms_conn_del(s);

  /* A WebSocket upgrade after a kept-alive answer. */
  s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  ms_conn_start(s, 0);
  feed_str(s, "GET /x HTTP/1.1\r\n\r\n", 1);
  CHECK_EQ_INT(ms_conn_http_respond_keep(s, 200, NULL, NULL, "ok", 2), 1);
  take_all(s, &o);
  out_free(&o);
  feed_str(s, UPGRADE_HEAD(""), 2);
  take_all(s, &o);
  CHECK(contains(&o, "HTTP/1.1 101 "));
  CHECK_EQ_INT(r.opened, 1);
  out_free(&o);
  ms_conn_del(s);
}

static void handshake_timeout_finishes(void) {
  rec r;
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  ms_conn_start(s, 100);
  CHECK_EQ_INT(ms_conn_next_deadline(s), 100 + 10000);
  feed_str(s, "GET /ws HTTP/1.1\r\n", 200);
  ms_conn_tick(s, 10099);
  CHECK_EQ_INT(r.closed, 0);
  CHECK(ms_conn_want_read(s));
  ms_conn_tick(s, 10100);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_TIMEOUT);
  CHECK(!ms_conn_want_read(s) && !ms_conn_want_write(s));
  CHECK_EQ_INT(ms_conn_next_deadline(s), MS_NO_DEADLINE);
  ms_conn_del(s);

  ms_conn *c = new_conn(MS_CONN_CLIENT, &r, NULL);
  CHECK(c);
  ms_conn_start(c, 0);
  ms_conn_tick(c, 9999);
  CHECK_EQ_INT(r.closed, 0);
  ms_conn_tick(c, 10000);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_TIMEOUT);
  CHECK(!ms_conn_want_read(c) && !ms_conn_want_write(c));
  ms_conn_del(c);
}

static void close_timeout_finishes_without_peer(void) {
  rec rc, rs;
  ms_conn *c = new_conn(MS_CONN_CLIENT, &rc, NULL);
  ms_conn *s = new_conn(MS_CONN_SERVER, &rs, NULL);
  CHECK(c && s);
  ms_conn_start(c, 0);
  ms_conn_start(s, 0);
  shuttle(c, s, 10);
  CHECK_EQ_INT(rc.opened, 1);
  CHECK_EQ_INT(ms_conn_close(c, 1000, "bye"), 0);
  /* The peer never answers. The close happens long after the last time
   * the connection was given: the timer still counts from the real time
   * of the next tick, not from that stale one. */
  CHECK_EQ_INT(ms_conn_next_deadline(c), 10);
  ms_conn_tick(c, 60000);
  CHECK_EQ_INT(rc.closed, 0);
  CHECK_EQ_INT(ms_conn_next_deadline(c), 60000 + 5000);
  CHECK(ms_conn_want_read(c));
  CHECK(ms_conn_want_write(c));
  ms_conn_tick(c, 64999);
  CHECK_EQ_INT(rc.closed, 0);
  ms_conn_tick(c, 65000);
  CHECK_EQ_INT(rc.closed, 1);
  CHECK_EQ_INT(rc.close.err, MS_ERR_TIMEOUT);
  CHECK_EQ_INT(rc.close.code, 1006);
  CHECK(!ms_conn_want_read(c) && !ms_conn_want_write(c));
  ms_conn_del(c);
  /* The server sees end of stream: 1006, MS_ERR_CLOSED. */
  ms_conn_eof(s, 6000);
  CHECK_EQ_INT(rs.closed, 1);
  CHECK_EQ_INT(rs.close.err, MS_ERR_CLOSED);
  CHECK_EQ_INT(rs.close.code, 1006);
  CHECK(!ms_conn_want_read(s) && !ms_conn_want_write(s));
  ms_conn_del(s);
}

static void output_high_water_stops_reading(void) {
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.out_high_water = 1000;
  cfg.out_low_water = 100;
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, &cfg, &o);
  CHECK(s);
  uint8_t data[600] = {0};
  CHECK_EQ_INT(ms_conn_send(s, 1, data, sizeof data), 0);
  CHECK(ms_conn_want_read(s));
  CHECK_EQ_INT(ms_conn_send(s, 1, data, sizeof data), 0);
  CHECK(ms_conn_out_pending(s) >= 1200);
  CHECK(!ms_conn_want_read(s));
  CHECK(ms_conn_want_write(s));
  /* Partial writes: still above low water, still not reading. */
  size_t n;
  ms_conn_peek(s, &n);
  CHECK(n > 600);
  ms_conn_consume(s, 600);
  CHECK(ms_conn_out_pending(s) > 100);
  CHECK(!ms_conn_want_read(s));
  ms_conn_peek(s, &n);
  ms_conn_consume(s, n);
  CHECK_EQ_INT(ms_conn_out_pending(s), 0);
  CHECK(ms_conn_want_read(s));
  ms_conn_del(s);
}

static void control_frames_overtake_queued_data(void) {
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  /* Queue more than one output chunk, then receive a ping. */
  static uint8_t big[70000];
  for (int i = 0; i < 4; i++)
    CHECK_EQ_INT(ms_conn_send(s, 1, big, sizeof big), 0);
  size_t n;
  ms_conn_peek(s, &n);
  CHECK(n > 0 && n < 4 * sizeof big);
  uint8_t in[16];
  size_t k = frame(in, 1, 9, 1, "hb", 2);
  ms_conn_feed(s, in, k, 2);
  take_all(s, &o);
  /* The pong is ahead of the last data messages. */
  size_t pong_at = 0;
  for (size_t i = 0; i + 4 <= o.len; i++)
    if (memcmp(o.data + i, "\x8a\x02hb", 4) == 0) {
      pong_at = i;
      break;
    }
  CHECK(pong_at > 0);
  CHECK(pong_at < o.len - 2 * sizeof big);
  out_free(&o);
  ms_conn_del(s);
}

static void close_keeps_queued_messages_ahead(void) {
  rec rc, rs;
  ms_conn *c = new_conn(MS_CONN_CLIENT, &rc, NULL);
  ms_conn *s = new_conn(MS_CONN_SERVER, &rs, NULL);
  CHECK(c && s);
  ms_conn_start(c, 0);
  shuttle(c, s, 0);
  static uint8_t big[100000];
  CHECK_EQ_INT(ms_conn_send(s, 1, big, sizeof big), 0);
  CHECK_EQ_INT(ms_conn_send(s, 0, (const uint8_t *)"last", 4), 0);
  CHECK_EQ_INT(ms_conn_close(s, 4009, "dup"), 0);
  shuttle(c, s, 1);
  CHECK_EQ_INT(rc.nmsg, 2);
  CHECK_EQ_INT(rc.last_len, 4);
  CHECK_MEM(rc.log + rc.log_len - 7, 7, "T:last|", 7);
  CHECK_EQ_INT(rc.closed, 1);
  CHECK_EQ_INT(rc.close.code, 4009);
  CHECK_EQ_STR(rc.close.reason, "dup");
  CHECK_EQ_INT(rc.close.by_peer, 1);
  CHECK_EQ_INT(rs.closed, 1);
  CHECK_EQ_INT(rs.close.by_peer, 0);
  ms_conn_del(c);
  ms_conn_del(s);
}

static void free_inside_callbacks_is_deferred(void) {
  /* from on_open, with a frame behind the head: no message callback. */
  rec r;
  ms_conn *s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  r.del_on_open = 1;
  uint8_t in[512];
  static const char head[] = UPGRADE_HEAD("");
  memcpy(in, head, sizeof head - 1);
  size_t n = sizeof head - 1;
  n += frame(in + n, 1, 1, 1, "one", 3);
  CHECK_EQ_INT(ms_conn_feed(s, in, n, 1), 0);
  CHECK_EQ_INT(r.opened, 1);
  CHECK_EQ_INT(r.nmsg, 0);
  CHECK_EQ_INT(r.closed, 0);

  /* from on_message: the second message of the same feed is not delivered */
  out o = {0};
  s = open_server(&r, NULL, &o);
  CHECK(s);
  r.del_on_message = 1;
  n = frame(in, 1, 1, 1, "one", 3);
  n += frame(in + n, 1, 1, 1, "two", 3);
  n += frame(in + n, 1, 8, 1, "\x03\xe8", 2);
  CHECK_EQ_INT(ms_conn_feed(s, in, n, 2), 0);
  CHECK_EQ_INT(r.nmsg, 1);
  CHECK_EQ_INT(r.closed, 0);

  /* from on_close after a peer close */
  s = open_server(&r, NULL, &o);
  CHECK(s);
  r.del_on_close = 1;
  n = frame(in, 1, 2, 1, "m", 1);
  n += frame(in + n, 1, 8, 1, "\x03\xe8", 2);
  CHECK_EQ_INT(ms_conn_feed(s, in, n, 2), 0);
  CHECK_EQ_INT(r.nmsg, 1);
  CHECK_EQ_INT(r.closed, 1);

  /* from on_close reached through eof and through a refused upgrade */
  s = open_server(&r, NULL, &o);
  CHECK(s);
  r.del_on_close = 1;
  ms_conn_eof(s, 3);
  CHECK_EQ_INT(r.closed, 1);
  s = new_conn(MS_CONN_SERVER, &r, NULL);
  CHECK(s);
  r.del_on_close = 1;
  feed_str(s, "POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 1);
  CHECK_EQ_INT(r.closed, 1);

  /* from on_close at a close timeout */
  rec rc, rs;
  ms_conn *c = new_conn(MS_CONN_CLIENT, &rc, NULL);
  s = new_conn(MS_CONN_SERVER, &rs, NULL);
  CHECK(c && s);
  ms_conn_start(c, 0);
  shuttle(c, s, 0);
  rc.del_on_close = 1;
  ms_conn_close(c, 1000, NULL);
  ms_conn_tick(c, 1);    /* arms the close timer */
  ms_conn_tick(c, 6000); /* and it fires */
  CHECK_EQ_INT(rc.closed, 1);
  ms_conn_del(s);
  /* Under ASan a use after free or a leak fails this test. */
}

/* An idle server connection releases wslay's state and picks the stream
 * up again: messages before, during and after sleep arrive intact. */
static void hibernate_releases_state_and_resumes(void) {
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  out_free(&o);
  uint8_t f[64];
  size_t n = frame(f, 1, 1, 1, "one", 3);
  ms_conn_feed(s, f, n, 1);
  CHECK_EQ_STR(r.log, "T:one|");
  CHECK_EQ_INT(ms_conn_hibernate(s), 0);
  CHECK(ms_conn_is_hibernating(s));
  CHECK(ms_conn_want_read(s));
  CHECK(!ms_conn_want_write(s));
  CHECK_EQ_INT(ms_conn_out_pending(s), 0);
  CHECK_EQ_INT(ms_conn_next_deadline(s), MS_NO_DEADLINE);
  /* A server frame goes out without waking. */
  CHECK_EQ_INT(ms_conn_send(s, 1, (const uint8_t *)"zz", 2), 0);
  CHECK(ms_conn_is_hibernating(s));
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x82\x02zz", 4);
  out_free(&o);
  /* A whole frame is read and answered without waking it, and leaves no
   * buffer behind once the answer is taken. */
  r.echo = 1;
  n = frame(f, 1, 2, 1, "asleep", 6);
  ms_conn_feed(s, f, n, 2);
  CHECK(ms_conn_is_hibernating(s));
  CHECK_EQ_STR(r.log, "T:one|B:asleep|");
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x82\x06" "asleep", 8);
  out_free(&o);
  CHECK(ms_conn_is_hibernating(s));
  r.echo = 0;
  /* Input wakes it, byte by byte across the boundary. */
  n = frame(f, 1, 1, 1, "two", 3);
  for (size_t i = 0; i < n; i++)
    ms_conn_feed(s, f + i, 1, 2);
  CHECK(!ms_conn_is_hibernating(s));
  CHECK_EQ_STR(r.log, "T:one|B:asleep|T:two|");
  /* Half a frame inside: it must not sleep. */
  n = frame(f, 1, 2, 1, "three", 5);
  ms_conn_feed(s, f, 4, 3);
  CHECK_EQ_INT(ms_conn_hibernate(s), MS_ERR_STATE);
  ms_conn_feed(s, f + 4, n - 4, 3);
  CHECK_EQ_INT(r.nmsg, 4);
  /* Inside a fragmented message: it must not sleep either. */
  n = frame(f, 0, 1, 1, "fr", 2);
  ms_conn_feed(s, f, n, 4);
  CHECK_EQ_INT(ms_conn_hibernate(s), MS_ERR_STATE);
  n = frame(f, 1, 0, 1, "ag", 2);
  ms_conn_feed(s, f, n, 4);
  CHECK_EQ_INT(r.nmsg, 5);
  CHECK_EQ_INT(ms_conn_hibernate(s), 0);
  /* A ping from the peer (an idle client's heartbeat) is answered
   * without waking it, and so is a pong to our own ping. */
  n = frame(f, 1, 9, 1, "pi", 2);
  ms_conn_feed(s, f, n, 5);
  CHECK(ms_conn_is_hibernating(s));
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x8a\x02pi", 4);
  out_free(&o);
  CHECK_EQ_INT(ms_conn_ping(s, (const uint8_t *)"hb", 2), 0);
  CHECK(ms_conn_is_hibernating(s));
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x89\x02hb", 4);
  out_free(&o);
  int pongs = r.npong;
  n = frame(f, 1, 10, 1, "hb", 2);
  ms_conn_feed(s, f, n, 5);
  CHECK(ms_conn_is_hibernating(s));
  CHECK_EQ_INT(r.npong, pongs + 1);
  /* A ping split across reads wakes it and is answered as usual. */
  n = frame(f, 1, 9, 1, "pj", 2);
  ms_conn_feed(s, f, 3, 6);
  ms_conn_feed(s, f + 3, n - 3, 6);
  CHECK(!ms_conn_is_hibernating(s));
  take_all(s, &o);
  CHECK_MEM(o.data, o.len, "\x8a\x02pj", 4);
  out_free(&o);
  /* Output pending: it keeps its state. */
  ms_conn_send(s, 0, (const uint8_t *)"q", 1);
  CHECK_EQ_INT(ms_conn_hibernate(s), MS_ERR_STATE);
  take_all(s, &o);
  out_free(&o);
  CHECK_EQ_INT(ms_conn_hibernate(s), 0);
  /* Closing a sleeping connection works as usual. */
  CHECK_EQ_INT(ms_conn_close(s, 4050, "bye"), 0);
  take_all(s, &o);
  CHECK(o.len >= 2 && (uint8_t)o.data[0] == 0x88);
  out_free(&o);
  ms_conn_del(s);
}

/* Invalid UTF-8 in a whole text frame that reaches a sleeping connection:
 * it wakes and fails the connection with 1007, as when awake. */
static void invalid_utf8_while_asleep_closes_1007(void) {
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  out_free(&o);
  CHECK_EQ_INT(ms_conn_hibernate(s), 0);
  uint8_t f[64];
  size_t n = frame(f, 1, 1, 1, "a\xed\xa0\x80", 4);
  ms_conn_feed(s, f, n, 1);
  CHECK_EQ_INT(r.nmsg, 0);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_UTF8);
  CHECK_EQ_INT(r.close.code, 1007);
  take_all(s, &o);
  CHECK(o.len >= 4 && o.data[0] == 0x88);
  out_free(&o);
  ms_conn_del(s);
}

static void close_reason_is_checked_whole(void) {
  /* Invalid UTF-8 in a close reason, fed one byte at a time. */
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  out_free(&o);
  uint8_t body[6] = {0x03, 0xe8, 'a', 0xff, 0xfe, 'z'};
  uint8_t f[32];
  size_t n = frame(f, 1, 8, 1, body, sizeof body);
  for (size_t i = 0; i < n; i++)
    ms_conn_feed(s, f + i, 1, 1);
  CHECK_EQ_INT(r.closed, 1);
  CHECK_EQ_INT(r.close.err, MS_ERR_UTF8);
  CHECK_EQ_INT(r.close.code, MS_CLOSE_INVALID_UTF8);
  ms_conn_del(s);
  /* A one-byte close body is a protocol error. */
  rec r2;
  s = open_server(&r2, NULL, &o);
  CHECK(s);
  out_free(&o);
  n = frame(f, 1, 8, 1, "x", 1);
  ms_conn_feed(s, f, n, 1);
  CHECK_EQ_INT(r2.closed, 1);
  CHECK_EQ_INT(r2.close.err, MS_ERR_PROTO);
  ms_conn_del(s);
}

static void close_codes_and_reasons_we_send_are_valid(void) {
  rec r;
  out o = {0};
  ms_conn *s = open_server(&r, NULL, &o);
  CHECK(s);
  out_free(&o);
  CHECK_EQ_INT(ms_conn_close(s, 1012, NULL), MS_ERR_INVALID_ARG);
  CHECK_EQ_INT(ms_conn_close(s, 1005, NULL), MS_ERR_INVALID_ARG);
  CHECK_EQ_INT(ms_conn_close(s, 4000, "bad \xff reason"), MS_ERR_INVALID_ARG);
  CHECK_EQ_INT(ms_conn_close(s, 4000, "fine"), 0);
  ms_conn_del(s);
}

static const ms_test_case tests[] = {
    TEST(hibernate_releases_state_and_resumes),
    TEST(invalid_utf8_while_asleep_closes_1007),
    TEST(close_reason_is_checked_whole),
    TEST(close_codes_and_reasons_we_send_are_valid),
    TEST(accept_key_matches_rfc6455_example),
    TEST(server_handshake_then_masked_frame_in_same_feed),
    TEST(client_and_server_exchange_messages_ping_and_close),
    TEST(byte_at_a_time_gives_identical_results),
    TEST(whole_frames_read_directly_match_wslay),
    TEST(fragmented_message_with_interleaved_ping),
    TEST(too_many_fragments_close_1009),
    TEST(unfinished_message_closes_1008_at_its_deadline),
    TEST(oversized_message_closes_1009),
    TEST(invalid_utf8_text_closes_1007),
    TEST(unmasked_client_frame_is_protocol_error_1002),
    TEST(subprotocol_negotiation),
    TEST(client_checks_the_101_response),
    TEST(client_without_offer_sends_no_protocol_header),
    TEST(bad_upgrades_get_http_errors),
    TEST(header_limits_give_431),
    TEST(bare_lf_head_gets_400_at_once),
    TEST(plain_get_goes_to_on_http_request),
    TEST(keep_alive_answers_serve_the_next_request),
    TEST(handshake_timeout_finishes),
    TEST(close_timeout_finishes_without_peer),
    TEST(output_high_water_stops_reading),
    TEST(control_frames_overtake_queued_data),
    TEST(close_keeps_queued_messages_ahead),
    TEST(free_inside_callbacks_is_deferred),
};

MS_TEST_MAIN(tests)
