/*
 * The sans-IO WebSocket connection: HTTP/1.1 upgrade (both roles) and
 * wslay's event API for framing.
 *
 * Data flow. Input: bytes given to ms_conn_feed() first fill the HTTP head
 * buffer; once the head is complete and accepted, the rest goes to wslay,
 * which pulls it through ws_recv() from a borrowed slice. Output: wslay
 * pushes frames through ws_send() into our own buffer, which
 * ms_conn_peek()/ms_conn_consume() expose. We only pull from wslay while
 * that buffer is below OUT_CHUNK so that control frames (pong, close)
 * queued later still overtake queued data at the next frame boundary.
 *
 * Re-entrancy: every public call that may run a callback counts depth;
 * ms_conn_del() inside a callback only marks free_pending and the outermost
 * call frees. Once free_pending is set no further callback runs.
 */
#include <microstream/ms_conn.h>

#include "ms_http.h"
#include "ms_internal.h"
#include "ms_rand.h"
#include "ms_utf8.h"

#include <stdio.h>

#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <wslay/wslay.h>

/* Pull from wslay only while less than this is buffered (see above). */
#define OUT_CHUNK (64 * 1024)

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum conn_state {
  ST_IDLE,      /* client before ms_conn_start */
  ST_HEAD,      /* exchanging the HTTP upgrade */
  ST_HTTP_WAIT, /* server: plain HTTP request, waiting for a response */
  ST_OPEN,      /* WebSocket open */
  ST_CLOSING,   /* we sent a close, waiting for the peer's */
  ST_DONE       /* over; output may still be flushing */
};

struct ms_conn {
  const ms_allocator *mem;
  ms_conn_config cfg; /* strings point at our own copies below */
  char *host, *path, *origin;
  ms_conn_callbacks cb;
  void *user_data;
  ms_rand rng;

  enum conn_state state;
  int started;
  int depth;
  int free_pending;
  int close_reported;
  int user_closed; /* ms_conn_close() was called while open */
  int throttled;   /* output above the high-water mark: stop reading */
  int force_drain; /* ws_send() takes everything regardless of OUT_CHUNK */
  int head_method; /* server: the plain request was HEAD (no body) */
  int fatal;       /* a fatal ms_err, or 0 */
  int fail_err;    /* our own protocol failure (e.g. UTF-8), or 0 */
  uint16_t fail_code;

  /* HTTP head, until the upgrade completes. */
  char *head;
  size_t head_len, head_scan;
  ms_http_header *hdrs;
  char key_accept[29]; /* client: the Sec-WebSocket-Accept we expect */

  /* WebSocket. */
  wslay_event_context_ptr ws; /* NULL while asleep */
  int asleep;           /* ms_conn_hibernate() released the contexts */
  uint64_t in_total;    /* bytes given to wslay since it was created */
  uint64_t in_framed;   /* bytes of the frames it has finished */
  uint64_t frame_size;  /* header + payload of the frame being read */
  int in_frag;          /* inside a fragmented message */
  const uint8_t *in_ptr; /* slice borrowed from ms_conn_feed() */
  size_t in_len;
  ms_encoding enc;

  /* The peer's close frame. */
  uint16_t recv_code;
  char recv_reason[124];
  size_t recv_reason_len;

  /* Output. */
  ms_buf out;
  size_t out_off;

  int64_t now; /* last time given to us; starts the close timer */
  int now_depth;       /* inside a call that brought `now` */
  int rearm_close;     /* close/linger timers set outside such a call: */
  int rearm_linger;    /* re-armed from the next real time (ms_conn_tick) */
  int64_t hs_deadline;
  int64_t close_deadline;
  int64_t linger_deadline; /* ST_DONE: give up flushing the last output */
};

/* ---- small helpers ---------------------------------------------------- */

/* A deadline `ms` from now. Outside a call that brought the time, c->now
 * may be old: the deadline is then "due" (so the transport ticks at once)
 * and *rearm makes ms_conn_tick set it properly from the real time. */
static int64_t add_ms(int64_t now, int64_t ms);
static int64_t arm(ms_conn *c, int64_t ms, int *rearm) {
  if (c->now_depth > 0 || ms <= 0) {
    *rearm = 0;
    return add_ms(c->now, ms);
  }
  *rearm = 1;
  return c->now;
}

static int64_t add_ms(int64_t now, int64_t ms) {
  if (ms <= 0)
    return MS_NO_DEADLINE;
  if (now > MS_NO_DEADLINE - ms)
    return MS_NO_DEADLINE;
  return now + ms;
}

static const char *enc_name(ms_encoding e) {
  switch (e) {
  case MS_ENC_MSGPACK: return MS_SUBPROTO_MSGPACK;
  case MS_ENC_JSON: return MS_SUBPROTO_JSON;
  default: return NULL;
  }
}

static ms_encoding enc_from_name(const char *s, size_t len) {
  /* Subprotocol names are case-sensitive (RFC 6455 section 11.3.4). */
  if (len == strlen(MS_SUBPROTO_MSGPACK) &&
      memcmp(s, MS_SUBPROTO_MSGPACK, len) == 0)
    return MS_ENC_MSGPACK;
  if (len == strlen(MS_SUBPROTO_JSON) && memcmp(s, MS_SUBPROTO_JSON, len) == 0)
    return MS_ENC_JSON;
  return MS_ENC_NONE;
}

static size_t out_buffered(const ms_conn *c) { return c->out.len - c->out_off; }

static void discard_output(ms_conn *c) {
  ms_buf_reset(&c->out);
  c->out_off = 0;
  if (c->ws)
    wslay_event_shutdown_write(c->ws);
}

static void enter(ms_conn *c) { c->depth++; }

static void destroy(ms_conn *c);

/* Returns 1 when c was freed: the caller must not touch it any more. */
static int leave(ms_conn *c) {
  if (--c->depth == 0 && c->free_pending) {
    destroy(c);
    return 1;
  }
  return 0;
}

static void update_throttle(ms_conn *c) {
  size_t p = ms_conn_out_pending(c);
  if (p > c->cfg.out_high_water)
    c->throttled = 1;
  else if (p <= c->cfg.out_low_water)
    c->throttled = 0;
}

static int has_ctl(const char *s) {
  for (; s && *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7F)
      return 1;
  return 0;
}

/* ---- configuration and lifetime --------------------------------------- */

void ms_conn_config_init(ms_conn_config *cfg, ms_conn_role role) {
  memset(cfg, 0, sizeof *cfg);
  cfg->role = role;
  cfg->max_message = 1024 * 1024;
  cfg->max_header_bytes = 8192;
  cfg->max_headers = 64;
  cfg->out_high_water = 1024 * 1024;
  cfg->out_low_water = 256 * 1024;
  cfg->handshake_timeout_ms = 10000;
  cfg->close_timeout_ms = 5000;
  cfg->path = "/ws";
  cfg->offer[0] = MS_ENC_MSGPACK;
  cfg->offer[1] = MS_ENC_NONE;
  cfg->offer[2] = MS_ENC_NONE;
  cfg->accept_mask = (1u << MS_ENC_MSGPACK) | (1u << MS_ENC_JSON);
}

int ms_conn_new(ms_conn **pconn, const ms_conn_config *cfg,
                const ms_conn_callbacks *cb, void *user_data,
                const ms_allocator *mem) {
  if (!pconn || !cfg)
    return MS_ERR_INVALID_ARG;
  *pconn = NULL;
  if (cfg->role != MS_CONN_CLIENT && cfg->role != MS_CONN_SERVER)
    return MS_ERR_INVALID_ARG;
  /* Strings go into header lines verbatim: refuse CR/LF injection. */
  if (has_ctl(cfg->host) || has_ctl(cfg->path) || has_ctl(cfg->origin))
    return MS_ERR_INVALID_ARG;
  if (cfg->path && cfg->path[0] != '/')
    return MS_ERR_INVALID_ARG;
  for (size_t i = 0; i < MS_ARRAY_LEN(cfg->offer); i++)
    if (cfg->offer[i] != MS_ENC_NONE && !enc_name(cfg->offer[i]))
      return MS_ERR_INVALID_ARG;

  mem = ms_mem_or_default(mem);
  ms_conn *c = ms_calloc(mem, 1, sizeof *c);
  if (!c)
    return MS_ERR_NOMEM;
  c->mem = mem;
  c->cfg = *cfg;
  if (cb)
    c->cb = *cb;
  c->user_data = user_data;

  /* Zero means "default" so a partly filled config still works. */
  ms_conn_config def;
  ms_conn_config_init(&def, cfg->role);
  if (!c->cfg.max_message)
    c->cfg.max_message = def.max_message;
  if (!c->cfg.max_header_bytes)
    c->cfg.max_header_bytes = def.max_header_bytes;
  if (!c->cfg.max_headers)
    c->cfg.max_headers = def.max_headers;
  if (!c->cfg.out_high_water)
    c->cfg.out_high_water = def.out_high_water;
  if (c->cfg.out_low_water > c->cfg.out_high_water)
    c->cfg.out_low_water = c->cfg.out_high_water;
  if (!c->cfg.accept_mask)
    c->cfg.accept_mask = def.accept_mask;

  const char *host = cfg->host ? cfg->host : "localhost";
  const char *path = cfg->path ? cfg->path : def.path;
  c->host = ms_strndup(mem, host, strlen(host));
  c->path = ms_strndup(mem, path, strlen(path));
  if (cfg->origin)
    c->origin = ms_strndup(mem, cfg->origin, strlen(cfg->origin));
  if (!c->host || !c->path || (cfg->origin && !c->origin)) {
    destroy(c);
    return MS_ERR_NOMEM;
  }
  c->cfg.host = c->host;
  c->cfg.path = c->path;
  c->cfg.origin = c->origin;

  ms_rand_init(&c->rng);
  ms_buf_init(&c->out, mem);
  c->state = cfg->role == MS_CONN_SERVER ? ST_HEAD : ST_IDLE;
  c->hs_deadline = MS_NO_DEADLINE;
  c->close_deadline = MS_NO_DEADLINE;
  c->linger_deadline = MS_NO_DEADLINE;
  c->recv_code = MS_CLOSE_ABNORMAL;
  *pconn = c;
  return 0;
}

static void free_head(ms_conn *c) {
  ms_free(c->mem, c->head);
  ms_free(c->mem, c->hdrs);
  c->head = NULL;
  c->hdrs = NULL;
  c->head_len = c->head_scan = 0;
}

static void destroy(ms_conn *c) {
  if (c->ws)
    wslay_event_context_free(c->ws);
  free_head(c);
  ms_buf_free(&c->out);
  ms_free(c->mem, c->host);
  ms_free(c->mem, c->path);
  ms_free(c->mem, c->origin);
  ms_free(c->mem, c);
}

void ms_conn_del(ms_conn *c) {
  if (!c)
    return;
  if (c->depth > 0) {
    c->free_pending = 1;
    /* Stop wslay's receive loop so no more messages are parsed. */
    if (c->ws)
      wslay_event_shutdown_read(c->ws);
    return;
  }
  destroy(c);
}

/* ---- close reporting -------------------------------------------------- */

/* The one on_close of this connection; the state becomes ST_DONE. */
static void report_close(ms_conn *c, int err, uint16_t code,
                         const char *reason, size_t reason_len, int by_peer,
                         int http_status) {
  if (c->close_reported)
    return;
  c->close_reported = 1;
  c->state = ST_DONE;
  c->hs_deadline = MS_NO_DEADLINE;
  c->close_deadline = MS_NO_DEADLINE;
  /* A peer that never reads must not keep a finished connection alive. */
  c->linger_deadline = arm(c, c->cfg.close_timeout_ms, &c->rearm_linger);
  if (c->ws)
    wslay_event_shutdown_read(c->ws);
  if (!c->cb.on_close || c->free_pending)
    return;
  char text[128];
  reason_len = MS_MIN(reason_len, sizeof text - 1);
  if (reason_len)
    memcpy(text, reason, reason_len);
  text[reason_len] = '\0';
  ms_conn_close_arg arg = {err, code, text, reason_len, by_peer, http_status};
  c->cb.on_close(c, &arg, c->user_data);
}

/* ---- output ----------------------------------------------------------- */

static int out_append(ms_conn *c, const void *p, size_t n) {
  if (c->out_off == c->out.len && c->out_off) {
    ms_buf_reset(&c->out);
    c->out_off = 0;
  }
  return ms_buf_append(&c->out, p, n);
}

static void set_fatal(ms_conn *c, int err) {
  if (!c->fatal)
    c->fatal = err;
  c->state = ST_DONE;
  discard_output(c);
}

/* Let wslay frame queued messages into our buffer: up to OUT_CHUNK, or
 * everything when force is set (before a close, so it cannot overtake
 * data; after a failure, to learn which close code wslay sent). */
static void pull(ms_conn *c, int force) {
  if (!c->ws || c->fatal)
    return;
  if (!force && out_buffered(c) >= OUT_CHUNK)
    return;
  c->force_drain = force;
  while (wslay_event_want_write(c->ws)) {
    size_t before = out_buffered(c);
    int r = wslay_event_send(c->ws);
    if (r != 0) {
      set_fatal(c, MS_ERR_NOMEM);
      break;
    }
    if (!force || out_buffered(c) == before)
      break;
  }
  c->force_drain = 0;
}

/* ---- wslay callbacks -------------------------------------------------- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(flags);
  if (c->in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = MS_MIN(len, c->in_len);
  memcpy(buf, c->in_ptr, n);
  c->in_ptr += n;
  c->in_len -= n;
  return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(flags);
  if (!c->force_drain && out_buffered(c) >= OUT_CHUNK) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (out_append(c, data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                      void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(ctx);
  ms_rand_bytes(&c->rng, buf, len);
  return 0;
}

/* Fail the WebSocket connection ourselves (RFC 6455 7.1.7). */
static void ws_fail(ms_conn *c, int err, uint16_t code) {
  if (!c->fail_err) {
    c->fail_err = err;
    c->fail_code = code;
  }
  wslay_event_queue_close(c->ws, code, NULL, 0);
  wslay_event_shutdown_read(c->ws);
}

static void ws_on_msg(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg,
                      void *user_data) {
  ms_conn *c = user_data;
  if (c->free_pending) {
    wslay_event_shutdown_read(ctx);
    return;
  }
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME:
  case WSLAY_BINARY_FRAME: {
    if (c->user_closed || c->state != ST_OPEN)
      return; /* no messages after ms_conn_close() */
    int binary = arg->opcode == WSLAY_BINARY_FRAME;
    /* wslay checks UTF-8 too; this keeps the guarantee ours. */
    if (!binary && !ms_utf8_valid(arg->msg, arg->msg_length)) {
      ws_fail(c, MS_ERR_UTF8, MS_CLOSE_INVALID_UTF8);
      return;
    }
    if (c->cb.on_message) {
      ms_conn_message_arg m = {binary, arg->msg, arg->msg_length};
      c->cb.on_message(c, &m, c->user_data);
    }
    break;
  }
  case WSLAY_PONG:
    if (c->cb.on_pong)
      c->cb.on_pong(c, arg->msg, arg->msg_length, c->user_data);
    break;
  case WSLAY_CONNECTION_CLOSE:
    c->recv_code = arg->status_code ? arg->status_code : MS_CLOSE_NO_STATUS;
    c->recv_reason_len = 0;
    /* wslay checks the reason only within one read: check it whole, and
     * a 1-byte body, which RFC 6455 (5.5.1) does not allow. */
    if (arg->msg_length == 1) {
      if (!c->fail_err) {
        c->fail_err = MS_ERR_PROTO;
        c->fail_code = MS_CLOSE_PROTOCOL_ERROR;
      }
      break;
    }
    if (arg->msg_length > 2 && !ms_utf8_valid(arg->msg + 2, arg->msg_length - 2)) {
      if (!c->fail_err) {
        c->fail_err = MS_ERR_UTF8;
        c->fail_code = MS_CLOSE_INVALID_UTF8;
      }
      break;
    }
    if (arg->msg_length > 2) {
      c->recv_reason_len = MS_MIN(arg->msg_length - 2,
                                  sizeof c->recv_reason - 1);
      memcpy(c->recv_reason, arg->msg + 2, c->recv_reason_len);
    }
    break;
  default:
    break; /* pings are answered by wslay */
  }
  if (c->free_pending)
    wslay_event_shutdown_read(ctx);
}

/* After wslay_event_recv(): once wslay stops reading, the close handshake
 * finished or the connection failed; report it. */
static void after_recv(ms_conn *c) {
  if (c->free_pending || c->close_reported || c->fatal)
    return;
  if (wslay_event_get_read_enabled(c->ws))
    return;
  pull(c, 1);
  if (c->fatal)
    return;
  if (c->fail_err) {
    report_close(c, c->fail_err, c->fail_code, NULL, 0, 0, 0);
  } else if (wslay_event_get_close_received(c->ws)) {
    report_close(c, 0, c->recv_code, c->recv_reason, c->recv_reason_len,
                 !c->user_closed, 0);
  } else {
    /* wslay failed the connection; the code it sent says why. */
    uint16_t sent = wslay_event_get_status_code_sent(c->ws);
    if (sent == MS_CLOSE_TOO_BIG)
      report_close(c, MS_ERR_TOO_BIG, MS_CLOSE_TOO_BIG, NULL, 0, 0, 0);
    else if (sent == MS_CLOSE_INVALID_UTF8)
      report_close(c, MS_ERR_UTF8, MS_CLOSE_INVALID_UTF8, NULL, 0, 0, 0);
    else
      report_close(c, MS_ERR_PROTO, MS_CLOSE_PROTOCOL_ERROR, NULL, 0, 0, 0);
  }
}

static int ws_create(ms_conn *c);

/* Recreate wslay's contexts for a connection ms_conn_hibernate() put to
 * sleep. Between whole frames, with nothing queued, wslay's state is its
 * configuration alone, so a fresh context continues the stream. */
static int wake(ms_conn *c) {
  if (!c->asleep)
    return 0;
  if (ws_create(c) != 0) {
    set_fatal(c, MS_ERR_NOMEM);
    return MS_ERR_NOMEM;
  }
  c->asleep = 0;
  return 0;
}

static int feed_ws(ms_conn *c, const uint8_t *data, size_t len) {
  if (len == 0)
    return 0;
  if (c->asleep && wake(c) != 0)
    return MS_ERR_NOMEM;
  if (!c->ws || !wslay_event_get_read_enabled(c->ws))
    return 0;
  c->in_total += len;
  c->in_ptr = data;
  c->in_len = len;
  int r = wslay_event_recv(c->ws);
  c->in_ptr = NULL;
  c->in_len = 0;
  if (r == WSLAY_ERR_NOMEM) {
    set_fatal(c, MS_ERR_NOMEM);
    return MS_ERR_NOMEM;
  }
  /* Any other failure is a framing error for which wslay has already
   * queued a close (our recv callback never fails). */
  after_recv(c);
  return c->fatal;
}

/* Frame accounting: wslay reads ahead into its own buffer, so the only
 * way to know it holds nothing half-read is to count whole frames against
 * the bytes it was given (for ms_conn_hibernate). */
static void ws_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a,
                           void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(ctx);
  uint64_t hdr = 2;
  if (a->payload_length > 0xffff)
    hdr += 8;
  else if (a->payload_length >= 126)
    hdr += 2;
  if (c->cfg.role == MS_CONN_SERVER)
    hdr += 4; /* clients mask every frame */
  c->frame_size = hdr + a->payload_length;
  if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME)
    c->in_frag = !a->fin;
  else if (a->opcode == WSLAY_CONTINUATION_FRAME && a->fin)
    c->in_frag = 0;
}

static void ws_frame_end(wslay_event_context_ptr ctx, void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(ctx);
  c->in_framed += c->frame_size;
  c->frame_size = 0;
}

static int ws_create(ms_conn *c) {
  struct wslay_event_callbacks cbs = {ws_recv,        ws_send,
                                      ws_genmask,     ws_frame_start,
                                      NULL,           ws_frame_end,
                                      ws_on_msg};
  c->in_total = c->in_framed = c->frame_size = 0;
  c->in_frag = 0;
  int r = c->cfg.role == MS_CONN_SERVER
              ? wslay_event_context_server_init(&c->ws, &cbs, c)
              : wslay_event_context_client_init(&c->ws, &cbs, c);
  if (r != 0) {
    c->ws = NULL;
    return MS_ERR_NOMEM;
  }
  wslay_event_config_set_max_recv_msg_length(c->ws, c->cfg.max_message);
  return 0;
}

/* ---- handshake -------------------------------------------------------- */

void ms_ws_accept_key(const char *key, size_t key_len, char out[29]) {
  struct sha1_ctx sha;
  uint8_t digest[SHA1_DIGEST_SIZE];
  sha1_init(&sha);
  sha1_update(&sha, key_len, (const uint8_t *)key);
  sha1_update(&sha, strlen(WS_GUID), (const uint8_t *)WS_GUID);
  sha1_digest(&sha, sizeof digest, digest);
  base64_encode_raw(out, sizeof digest, digest);
  out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

/* Sec-WebSocket-Key must be the base64 form of 16 bytes (RFC 6455 4.1). */
static int key_valid(const char *key, size_t len) {
  if (len != 24 || key[22] != '=' || key[23] != '=')
    return 0;
  for (size_t i = 0; i < 22; i++) {
    char ch = key[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
      return 0;
  }
  struct base64_decode_ctx b64;
  uint8_t raw[BASE64_DECODE_LENGTH(24)];
  size_t n = sizeof raw;
  base64_decode_init(&b64);
  if (!base64_decode_update(&b64, &n, raw, len, key) ||
      !base64_decode_final(&b64))
    return 0;
  return n == 16;
}

/* A complete HTTP response with a plain body (errors and the user's). */
static int write_response(ms_conn *c, int status, const char *content_type,
                          const char *extra, const void *body,
                          size_t body_len, int with_body) {
  int rv = ms_buf_appendf(&c->out,
                          "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n",
                          status, ms_http_reason(status), body_len);
  if (!rv && content_type)
    rv = ms_buf_appendf(&c->out, "Content-Type: %s\r\n", content_type);
  if (!rv && extra && extra[0]) {
    size_t n = strlen(extra);
    rv = ms_buf_append(&c->out, extra, n);
    if (!rv && (n < 2 || extra[n - 2] != '\r' || extra[n - 1] != '\n'))
      rv = ms_buf_append(&c->out, "\r\n", 2);
  }
  if (!rv)
    rv = ms_buf_append(&c->out, "\r\n", 2);
  if (!rv && with_body && body_len)
    rv = ms_buf_append(&c->out, body, body_len);
  return rv;
}

/* Server: refuse the upgrade with status and a one-line reason. */
static int refuse(ms_conn *c, int status, const char *reason,
                  const char *extra) {
  char body[160];
  int n = snprintf(body, sizeof body, "%s\n", reason);
  if (n < 0)
    n = 0;
  int rv = write_response(c, status, "text/plain; charset=utf-8", extra, body,
                          MS_MIN((size_t)n, sizeof body - 1), 1);
  if (rv) {
    set_fatal(c, rv);
    return rv;
  }
  report_close(c, MS_ERR_HANDSHAKE, 0, reason, strlen(reason), 0, status);
  return 0;
}

/* Server: pick the subprotocol. Returns 0 (enc set, MS_ENC_NONE when none
 * was offered) or -1 when only unsupported ones were offered. */
static int pick_subprotocol(ms_conn *c, const ms_http_request *req,
                            ms_encoding *enc) {
  int offered = 0;
  *enc = MS_ENC_NONE;
  for (size_t i = 0; i < req->nheaders; i++) {
    const ms_http_header *h = &req->headers[i];
    if (!ms_http_ieq(h->name, h->name_len, "Sec-WebSocket-Protocol"))
      continue;
    size_t pos = 0;
    const char *t;
    size_t tl;
    while (ms_http_list_next(h->value, h->value_len, &pos, &t, &tl)) {
      offered = 1;
      ms_encoding e = enc_from_name(t, tl);
      if (e != MS_ENC_NONE && (c->cfg.accept_mask & (1u << e))) {
        *enc = e;
        return 0;
      }
    }
  }
  return offered ? -1 : 0;
}

static int open_ws(ms_conn *c, ms_encoding enc, int echoed,
                   const ms_http_request *req) {
  c->state = ST_OPEN;
  c->enc = enc == MS_ENC_NONE ? MS_ENC_MSGPACK : enc;
  c->hs_deadline = MS_NO_DEADLINE;
  if (c->cb.on_open && !c->free_pending) {
    ms_conn_open_arg arg = {c->enc, echoed, req};
    c->cb.on_open(c, &arg, c->user_data);
  }
  return 0;
}

static int server_head(ms_conn *c, size_t head_len) {
  ms_http_request req;
  size_t hl;
  int rv = ms_http_parse_request(c->head, head_len, c->cfg.max_header_bytes,
                                 c->hdrs, c->cfg.max_headers, &req, &hl);
  if (rv == MS_ERR_TOO_BIG)
    return refuse(c, 431, "too many header fields", NULL);
  if (rv)
    return refuse(c, 400, "malformed HTTP request", NULL);

  size_t up_len;
  const char *up = ms_http_find_header(req.headers, req.nheaders, "Upgrade",
                                       &up_len);
  if (!up) {
    /* A plain request: the application answers it. */
    c->state = ST_HTTP_WAIT;
    c->head_method = ms_http_ieq(req.method, req.method_len, "HEAD");
    if (c->cb.on_http_request) {
      c->cb.on_http_request(c, &req, c->user_data);
      return c->fatal;
    }
    static const char nf[] = "not found\n";
    return ms_conn_http_respond(c, 404, "text/plain; charset=utf-8", NULL, nf,
                                sizeof nf - 1);
  }
  if (!ms_http_ieq(req.method, req.method_len, "GET"))
    return refuse(c, 400, "a WebSocket upgrade must use GET", NULL);
  if (req.minor_version < 1)
    return refuse(c, 400, "a WebSocket upgrade needs HTTP/1.1", NULL);
  size_t host_len;
  if (!ms_http_find_header(req.headers, req.nheaders, "Host", &host_len) ||
      ms_http_count_header(req.headers, req.nheaders, "Host") != 1)
    return refuse(c, 400, "a WebSocket upgrade needs one Host header", NULL);
  if (!ms_http_list_has(up, up_len, "websocket"))
    return refuse(c, 400, "only the websocket upgrade is supported", NULL);
  if (!ms_http_headers_have_token(req.headers, req.nheaders, "Connection",
                                  "upgrade"))
    return refuse(c, 400, "Connection header lacks upgrade", NULL);
  size_t vlen;
  const char *ver = ms_http_find_header(req.headers, req.nheaders,
                                        "Sec-WebSocket-Version", &vlen);
  if (!ver || vlen != 2 || memcmp(ver, "13", 2) != 0 ||
      ms_http_count_header(req.headers, req.nheaders,
                           "Sec-WebSocket-Version") != 1)
    return refuse(c, 426, "unsupported WebSocket version",
                  "Sec-WebSocket-Version: 13\r\n");
  size_t klen;
  const char *key = ms_http_find_header(req.headers, req.nheaders,
                                        "Sec-WebSocket-Key", &klen);
  if (!key || !key_valid(key, klen) ||
      ms_http_count_header(req.headers, req.nheaders, "Sec-WebSocket-Key") !=
          1)
    return refuse(c, 400, "missing or invalid Sec-WebSocket-Key", NULL);
  ms_encoding enc;
  if (pick_subprotocol(c, &req, &enc) != 0)
    return refuse(c, 400,
                  "no supported subprotocol (" MS_SUBPROTO_MSGPACK
                  " or " MS_SUBPROTO_JSON ")",
                  NULL);
  if (c->cb.on_upgrade) {
    int st = c->cb.on_upgrade(c, &req, c->user_data);
    if (c->free_pending)
      return 0;
    if (st != 0) {
      if (st < 400 || st > 599)
        st = 500;
      return refuse(c, st, "upgrade refused", NULL);
    }
  }

  char accept[29];
  ms_ws_accept_key(key, klen, accept);
  rv = ms_buf_appendf(&c->out,
                      "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n",
                      accept);
  if (!rv && enc != MS_ENC_NONE)
    rv = ms_buf_appendf(&c->out, "Sec-WebSocket-Protocol: %s\r\n",
                        enc_name(enc));
  if (!rv)
    rv = ms_buf_append(&c->out, "\r\n", 2);
  if (!rv)
    rv = ws_create(c);
  if (rv) {
    set_fatal(c, rv);
    return rv;
  }
  return open_ws(c, enc, enc != MS_ENC_NONE, &req);
}

static int client_fail(ms_conn *c, int status, const char *why) {
  report_close(c, MS_ERR_HANDSHAKE, 0, why, strlen(why), 0, status);
  return 0;
}

static int client_head(ms_conn *c, size_t head_len) {
  ms_http_response res;
  size_t hl;
  int rv = ms_http_parse_response(c->head, head_len, c->cfg.max_header_bytes,
                                  c->hdrs, c->cfg.max_headers, &res, &hl);
  if (rv)
    return client_fail(c, 0, "malformed HTTP response");
  if (res.status != 101)
    return client_fail(c, res.status, "upgrade refused");
  size_t n;
  const char *v = ms_http_find_header(res.headers, res.nheaders, "Upgrade", &n);
  if (!v || !ms_http_list_has(v, n, "websocket") ||
      !ms_http_headers_have_token(res.headers, res.nheaders, "Connection",
                                  "upgrade"))
    return client_fail(c, 101, "response lacks Upgrade/Connection");
  v = ms_http_find_header(res.headers, res.nheaders, "Sec-WebSocket-Accept",
                          &n);
  if (!v || n != 28 || memcmp(v, c->key_accept, 28) != 0 ||
      ms_http_count_header(res.headers, res.nheaders,
                           "Sec-WebSocket-Accept") != 1)
    return client_fail(c, 101, "bad Sec-WebSocket-Accept");
  /* We offer no extension, so none may be accepted (RFC 6455 4.1). */
  if (ms_http_find_header(res.headers, res.nheaders, "Sec-WebSocket-Extensions",
                          &n))
    return client_fail(c, 101, "unexpected extension");
  ms_encoding enc = MS_ENC_NONE;
  size_t np = ms_http_count_header(res.headers, res.nheaders,
                                   "Sec-WebSocket-Protocol");
  if (np > 1)
    return client_fail(c, 101, "more than one subprotocol");
  if (np == 1) {
    v = ms_http_find_header(res.headers, res.nheaders, "Sec-WebSocket-Protocol",
                            &n);
    enc = enc_from_name(v, n);
    int offered = 0;
    for (size_t i = 0; i < MS_ARRAY_LEN(c->cfg.offer); i++) {
      if (c->cfg.offer[i] == MS_ENC_NONE)
        break;
      if (c->cfg.offer[i] == enc)
        offered = 1;
    }
    if (enc == MS_ENC_NONE || !offered)
      return client_fail(c, 101, "subprotocol not offered");
  }
  if ((rv = ws_create(c)) != 0) {
    set_fatal(c, rv);
    return rv;
  }
  return open_ws(c, enc, enc != MS_ENC_NONE, NULL);
}

static int feed_head(ms_conn *c, const uint8_t *data, size_t len) {
  size_t max = c->cfg.max_header_bytes;
  if (!c->head) {
    c->head = ms_malloc(c->mem, max);
    c->hdrs = ms_calloc(c->mem, c->cfg.max_headers, sizeof *c->hdrs);
    if (!c->head || !c->hdrs) {
      set_fatal(c, MS_ERR_NOMEM);
      return MS_ERR_NOMEM;
    }
  }
  size_t take = MS_MIN(len, max - c->head_len);
  memcpy(c->head + c->head_len, data, take);
  c->head_len += take;
  size_t hl;
  if (ms_http_find_end(c->head, c->head_len, &c->head_scan, &hl) != 0) {
    if (c->head_len < max)
      return 0;
    if (c->cfg.role == MS_CONN_SERVER)
      return refuse(c, 431, "request head too large", NULL);
    return client_fail(c, 0, "response head too large");
  }
  int rv = c->cfg.role == MS_CONN_SERVER ? server_head(c, hl)
                                         : client_head(c, hl);
  if (rv || c->free_pending)
    return rv;
  if (c->state == ST_OPEN || c->state == ST_CLOSING) {
    /* Bytes after the head belong to the WebSocket: first what was copied
     * into the head buffer, then the rest of this feed. */
    rv = feed_ws(c, (const uint8_t *)c->head + hl, c->head_len - hl);
    if (!rv && !c->free_pending)
      rv = feed_ws(c, data + take, len - take);
    free_head(c);
  }
  return rv;
}

/* ---- public calls ----------------------------------------------------- */

int ms_conn_start(ms_conn *c, int64_t now) {
  if (!c)
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->started)
    return MS_ERR_STATE;
  c->started = 1;
  c->now = now;
  if (c->state == ST_HEAD || c->state == ST_IDLE)
    c->hs_deadline = add_ms(now, c->cfg.handshake_timeout_ms);
  if (c->cfg.role == MS_CONN_SERVER)
    return 0;

  uint8_t raw[16];
  char key[25];
  ms_rand_bytes(&c->rng, raw, sizeof raw);
  base64_encode_raw(key, sizeof raw, raw);
  key[24] = '\0';
  ms_ws_accept_key(key, 24, c->key_accept);
  int rv = ms_buf_appendf(&c->out,
                          "GET %s HTTP/1.1\r\nHost: %s\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: %s\r\n"
                          "Sec-WebSocket-Version: 13\r\n",
                          c->path, c->host, key);
  if (!rv && c->cfg.offer[0] != MS_ENC_NONE) {
    rv = ms_buf_append(&c->out, "Sec-WebSocket-Protocol: ", 24);
    for (size_t i = 0; !rv && i < MS_ARRAY_LEN(c->cfg.offer); i++) {
      if (c->cfg.offer[i] == MS_ENC_NONE)
        break;
      rv = ms_buf_appendf(&c->out, "%s%s", i ? ", " : "",
                          enc_name(c->cfg.offer[i]));
    }
    if (!rv)
      rv = ms_buf_append(&c->out, "\r\n", 2);
  }
  if (!rv && c->origin)
    rv = ms_buf_appendf(&c->out, "Origin: %s\r\n", c->origin);
  if (!rv)
    rv = ms_buf_append(&c->out, "\r\n", 2);
  if (rv) {
    set_fatal(c, rv);
    return rv;
  }
  c->state = ST_HEAD;
  return 0;
}

int ms_conn_feed(ms_conn *c, const uint8_t *data, size_t len, int64_t now) {
  if (!c || (!data && len))
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->free_pending)
    return 0;
  c->now = now;
  enter(c);
  c->now_depth++;
  int rv = 0;
  switch (c->state) {
  case ST_IDLE:
    rv = MS_ERR_STATE;
    break;
  case ST_HEAD:
    rv = feed_head(c, data, len);
    break;
  case ST_OPEN:
  case ST_CLOSING:
    rv = feed_ws(c, data, len);
    break;
  default:
    break; /* nothing more is read: drop */
  }
  if (!c->free_pending)
    update_throttle(c);
  c->now_depth--;
  leave(c);
  return rv;
}

void ms_conn_eof(ms_conn *c, int64_t now) {
  if (!c || c->free_pending)
    return;
  c->now = now;
  enter(c);
  c->now_depth++;
  discard_output(c);
  if (!c->fatal && c->state != ST_IDLE)
    report_close(c, MS_ERR_CLOSED, MS_CLOSE_ABNORMAL, NULL, 0, 0, 0);
  c->state = ST_DONE;
  c->now_depth--;
  leave(c);
}

const uint8_t *ms_conn_peek(ms_conn *c, size_t *len) {
  if (!c || c->fatal || c->free_pending) {
    if (len)
      *len = 0;
    return NULL;
  }
  pull(c, 0);
  size_t n = out_buffered(c);
  if (len)
    *len = n;
  return n ? (const uint8_t *)c->out.data + c->out_off : NULL;
}

void ms_conn_consume(ms_conn *c, size_t n) {
  if (!c)
    return;
  n = MS_MIN(n, out_buffered(c));
  c->out_off += n;
  if (c->out_off == c->out.len) {
    ms_buf_reset(&c->out);
    c->out_off = 0;
  } else if (c->out_off > OUT_CHUNK && c->out_off > c->out.len / 2) {
    /* Keep the buffer from creeping forward forever. */
    size_t left = out_buffered(c);
    memmove(c->out.data, c->out.data + c->out_off, left);
    c->out.len = left;
    c->out_off = 0;
  }
  update_throttle(c);
}

int ms_conn_want_read(const ms_conn *c) {
  if (!c || c->fatal || c->free_pending)
    return 0;
  switch (c->state) {
  case ST_HEAD:
  case ST_HTTP_WAIT:
    /* HTTP_WAIT: the application still owes a response; keep the stream
     * alive (extra input is dropped). */
    return 1;
  case ST_OPEN:
  case ST_CLOSING:
    if (c->asleep)
      return !c->throttled;
    return !c->throttled && c->ws && wslay_event_get_read_enabled(c->ws);
  default:
    return 0;
  }
}

int ms_conn_want_write(const ms_conn *c) {
  if (!c || c->fatal || c->free_pending)
    return 0;
  if (out_buffered(c) > 0)
    return 1;
  return c->ws && wslay_event_want_write(c->ws);
}

size_t ms_conn_out_pending(const ms_conn *c) {
  if (!c)
    return 0;
  size_t n = out_buffered(c);
  /* After the close frame wslay sends nothing more: what is still queued
   * will never leave. */
  if (c->ws && wslay_event_get_write_enabled(c->ws))
    n += wslay_event_get_queued_msg_length(c->ws);
  return n;
}

int ms_conn_tick(ms_conn *c, int64_t now) {
  if (!c)
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->free_pending)
    return 0;
  c->now = now;
  enter(c);
  c->now_depth++;
  if (c->rearm_close) {
    c->rearm_close = 0;
    c->close_deadline = add_ms(now, c->cfg.close_timeout_ms);
  }
  if (c->rearm_linger) {
    c->rearm_linger = 0;
    c->linger_deadline = add_ms(now, c->cfg.close_timeout_ms);
  }
  if (now >= c->hs_deadline &&
      (c->state == ST_HEAD || c->state == ST_HTTP_WAIT)) {
    /* Nothing useful can be said to a peer that did not finish its
     * request in time: just finish. */
    discard_output(c);
    report_close(c, MS_ERR_TIMEOUT, MS_CLOSE_ABNORMAL, NULL, 0, 0, 0);
  } else if (now >= c->close_deadline && c->state == ST_CLOSING) {
    discard_output(c);
    report_close(c, MS_ERR_TIMEOUT, MS_CLOSE_ABNORMAL, NULL, 0, 0, 0);
  } else if (now >= c->linger_deadline && c->state == ST_DONE) {
    discard_output(c);
  }
  c->now_depth--;
  leave(c);
  return 0;
}

int64_t ms_conn_next_deadline(const ms_conn *c) {
  if (!c || c->fatal)
    return MS_NO_DEADLINE;
  if (c->state == ST_DONE)
    return ms_conn_want_write(c) ? c->linger_deadline : MS_NO_DEADLINE;
  return MS_MIN(c->hs_deadline, c->close_deadline);
}

/* Frame one data message straight into our output buffer. Only while
 * wslay has nothing queued or half-sent (so frames cannot interleave) and
 * our buffer is below OUT_CHUNK (so control frames keep their priority
 * when output backs up): the common case, which then costs one copy
 * instead of wslay's allocation and two copies. */
static int frame_direct(ms_conn *c, int opcode, const uint8_t *data,
                        size_t len) {
  uint8_t hdr[14];
  size_t h = 0;
  int masked = c->cfg.role == MS_CONN_CLIENT;
  uint8_t mbit = masked ? 0x80 : 0;
  hdr[h++] = (uint8_t)(0x80 | opcode);
  if (len < 126) {
    hdr[h++] = (uint8_t)(mbit | len);
  } else if (len <= 0xffff) {
    hdr[h++] = (uint8_t)(mbit | 126);
    hdr[h++] = (uint8_t)(len >> 8);
    hdr[h++] = (uint8_t)len;
  } else {
    hdr[h++] = (uint8_t)(mbit | 127);
    for (int i = 7; i >= 0; i--)
      hdr[h++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  uint8_t mask[4] = {0, 0, 0, 0};
  if (masked) {
    ms_rand_bytes(&c->rng, mask, sizeof mask);
    memcpy(hdr + h, mask, 4);
    h += 4;
  }
  if (out_append(c, hdr, h) != 0)
    return MS_ERR_NOMEM;
  size_t at = c->out.len;
  if (ms_buf_append(&c->out, data, len) != 0) {
    c->out.len -= h; /* take the header back */
    return MS_ERR_NOMEM;
  }
  if (masked) {
    uint8_t *p = (uint8_t *)c->out.data + at;
    for (size_t i = 0; i < len; i++)
      p[i] ^= mask[i & 3];
  }
  return 0;
}

int ms_conn_send(ms_conn *c, int binary, const uint8_t *data, size_t len) {
  if (!c || (!data && len))
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->state != ST_OPEN || c->user_closed || c->free_pending ||
      (!c->ws && !c->asleep))
    return MS_ERR_STATE;
  if (len > c->cfg.max_message)
    return MS_ERR_TOO_BIG;
  /* The peer would fail the connection with 1007: refuse it here. */
  if (!binary && !ms_utf8_valid(data, len))
    return MS_ERR_INVALID_ARG;
  if (c->asleep && c->cfg.role == MS_CONN_SERVER) {
    /* Nothing queued, nothing half-read: a server frame needs no wslay
     * state, so a sleeping connection can send without waking. */
    int rv = frame_direct(c, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
                          data, len);
    update_throttle(c);
    return rv;
  }
  if (c->asleep && wake(c) != 0)
    return MS_ERR_NOMEM;
  if (!wslay_event_want_write(c->ws) && out_buffered(c) < OUT_CHUNK &&
      wslay_event_get_write_enabled(c->ws)) {
    int rv = frame_direct(c, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
                          data, len);
    update_throttle(c);
    return rv;
  }
  struct wslay_event_msg msg = {
      binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, data, len};
  int r = wslay_event_queue_msg(c->ws, &msg);
  if (r == WSLAY_ERR_NOMEM)
    return MS_ERR_NOMEM;
  if (r != 0)
    return MS_ERR_STATE;
  update_throttle(c);
  return 0;
}

int ms_conn_ping(ms_conn *c, const uint8_t *data, size_t len) {
  if (!c || (!data && len) || len > 125)
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->state != ST_OPEN || c->user_closed || c->free_pending ||
      (!c->ws && !c->asleep))
    return MS_ERR_STATE;
  if (c->asleep && wake(c) != 0)
    return MS_ERR_NOMEM;
  struct wslay_event_msg msg = {WSLAY_PING, data, len};
  int r = wslay_event_queue_msg(c->ws, &msg);
  if (r == WSLAY_ERR_NOMEM)
    return MS_ERR_NOMEM;
  return r ? MS_ERR_STATE : 0;
}

static int close_code_valid(uint16_t code) {
  if (code >= 3000 && code <= 4999)
    return 1;
  return code >= 1000 && code <= 1011 && code != 1004 && code != 1005 &&
         code != 1006;
}

int ms_conn_close(ms_conn *c, uint16_t code, const char *reason) {
  if (!c)
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->state == ST_IDLE || c->state == ST_HEAD ||
      c->state == ST_HTTP_WAIT) {
    /* No WebSocket yet: just finish (a half-sent upgrade is of no use). */
    c->state = ST_DONE;
    c->hs_deadline = MS_NO_DEADLINE;
    c->close_reported = 1;
    discard_output(c);
    return 0;
  }
  if (c->state != ST_OPEN || c->user_closed || (!c->ws && !c->asleep))
    return MS_ERR_STATE;
  if (code != 0 && !close_code_valid(code))
    return MS_ERR_INVALID_ARG;
  if (c->asleep && wake(c) != 0)
    return MS_ERR_NOMEM;
  size_t rlen = reason && code ? strlen(reason) : 0;
  if (rlen > 123) {
    rlen = 123;
    /* Do not cut a UTF-8 sequence in half. */
    while (rlen > 0 && ((unsigned char)reason[rlen] & 0xC0) == 0x80)
      rlen--;
  }
  /* The peer would fail the connection with 1007. */
  if (rlen && !ms_utf8_valid((const uint8_t *)reason, rlen))
    return MS_ERR_INVALID_ARG;
  /* wslay sends control frames before queued data: push the data out
   * first so the close does not overtake it. */
  pull(c, 1);
  if (c->fatal)
    return c->fatal;
  int r = wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, rlen);
  if (r == WSLAY_ERR_NOMEM)
    return MS_ERR_NOMEM;
  if (r != 0)
    return MS_ERR_STATE; /* wslay is already closing (failure) */
  c->user_closed = 1;
  c->state = ST_CLOSING;
  c->close_deadline = arm(c, c->cfg.close_timeout_ms, &c->rearm_close);
  pull(c, 1);
  return c->fatal;
}

int ms_conn_http_respond(ms_conn *c, int status, const char *content_type,
                         const char *extra_headers, const void *body,
                         size_t body_len) {
  if (!c || (!body && body_len) || status < 100 || status > 999)
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->cfg.role != MS_CONN_SERVER || c->state != ST_HTTP_WAIT)
    return MS_ERR_STATE;
  int rv = write_response(c, status, content_type, extra_headers, body,
                          body_len, !c->head_method);
  if (rv) {
    set_fatal(c, rv);
    return rv;
  }
  enter(c);
  report_close(c, 0, 0, NULL, 0, 0, status);
  leave(c);
  return 0;
}

int ms_conn_hibernate(ms_conn *c) {
  if (!c || c->depth > 0 || c->free_pending || c->fatal)
    return MS_ERR_STATE;
  if (c->asleep)
    return 0;
  if (c->state != ST_OPEN || c->user_closed || !c->ws || c->fail_err)
    return MS_ERR_STATE;
  if (out_buffered(c) > 0 || wslay_event_want_write(c->ws) ||
      !wslay_event_get_read_enabled(c->ws) ||
      !wslay_event_get_write_enabled(c->ws) ||
      wslay_event_get_close_received(c->ws) ||
      wslay_event_get_close_sent(c->ws))
    return MS_ERR_STATE;
  if (c->in_framed != c->in_total || c->in_frag)
    return MS_ERR_STATE; /* wslay holds part of a frame or message */
  wslay_event_context_free(c->ws);
  c->ws = NULL;
  ms_buf_free(&c->out);
  c->out_off = 0;
  c->asleep = 1;
  return 0;
}

int ms_conn_is_hibernating(const ms_conn *c) { return c && c->asleep; }

int ms_conn_is_open(const ms_conn *c) {
  return c && !c->fatal && c->state == ST_OPEN && !c->user_closed;
}

ms_encoding ms_conn_encoding(const ms_conn *c) {
  return c ? c->enc : MS_ENC_NONE;
}

ms_conn_role ms_conn_get_role(const ms_conn *c) {
  return c ? c->cfg.role : MS_CONN_CLIENT;
}

void *ms_conn_user_data(const ms_conn *c) { return c ? c->user_data : NULL; }

void ms_conn_set_user_data(ms_conn *c, void *user_data) {
  if (c)
    c->user_data = user_data;
}
