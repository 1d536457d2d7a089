/*
 * The WebSocket session of ms_conn on wslay's event API.
 *
 * Input: once the upgrade is done, whole unfragmented data frames are read
 * here directly (read_direct); everything else goes to wslay, which pulls
 * it through ws_recv() from a borrowed slice. Output: wslay pushes frames
 * through ws_send() into the connection's own buffer, which
 * ms_conn_peek()/ms_conn_consume() expose. We only pull from wslay while
 * that buffer is below MS_CONN_OUT_CHUNK so that control frames (pong,
 * close) queued later still overtake queued data at the next frame
 * boundary.
 */
#include "ms_conn_int.h"

#include "ms_utf8.h"

/* Let wslay frame queued messages into our buffer: up to MS_CONN_OUT_CHUNK, or
 * everything when force is set (before a close, so it cannot overtake
 * data; after a failure, to learn which close code wslay sent). */
void ms_conn_pull(ms_conn *c, int force) {
  if (!c->ws || c->fatal)
    return;
  if (!force && conn_out_buffered(c) >= MS_CONN_OUT_CHUNK)
    return;
  c->force_drain = force;
  while (wslay_event_want_write(c->ws)) {
    size_t before = conn_out_buffered(c);
    int r = wslay_event_send(c->ws);
    if (r != 0) {
      ms_conn_set_fatal(c, MS_ERR_NOMEM);
      break;
    }
    if (!force || conn_out_buffered(c) == before)
      break;
  }
  c->force_drain = 0;
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(flags);
  if (c->in_len == 0 || ms_conn_budget_spent(c)) {
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
  if (!c->force_drain && conn_out_buffered(c) >= MS_CONN_OUT_CHUNK) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (ms_conn_out_append(c, data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                      void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(ctx);
  if (!c->rng)
    return -1; /* a server never masks */
  ms_rand_bytes(c->rng, buf, len);
  return 0;
}

/* Fail the WebSocket connection ourselves (RFC 6455 7.1.7). */
void ms_conn_ws_fail(ms_conn *c, int err, uint16_t code) {
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
  if (c->feed_msgs < UINT16_MAX)
    c->feed_msgs++;
  /* (ctx is NULL for a frame read directly while asleep.) */
  if (c->life.dead) {
    if (ctx)
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
      ms_conn_ws_fail(c, MS_ERR_UTF8, MS_CLOSE_INVALID_UTF8);
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
      /* (A control frame's body is at most 125 bytes.) */
      size_t n = MS_MIN(arg->msg_length - 2, 123);
      if (!c->recv_reason)
        c->recv_reason = ms_malloc(c->mem, 123);
      if (!c->recv_reason) {
        ms_conn_set_fatal(c, MS_ERR_NOMEM);
        break;
      }
      memcpy(c->recv_reason, arg->msg + 2, n);
      c->recv_reason_len = n;
    }
    break;
  default:
    break; /* pings are answered by wslay */
  }
  if (c->life.dead && ctx)
    wslay_event_shutdown_read(ctx);
}

/* After wslay_event_recv(): once wslay stops reading, the close handshake
 * finished or the connection failed; report it. */
void ms_conn_after_recv(ms_conn *c) {
  if (c->life.dead || c->close_reported || c->fatal || !c->ws)
    return;
  if (wslay_event_get_read_enabled(c->ws))
    return;
  ms_conn_pull(c, 1);
  if (c->fatal)
    return;
  if (c->fail_err) {
    ms_conn_report_close(c, c->fail_err, c->fail_code, NULL, 0, 0, 0);
  } else if (wslay_event_get_close_received(c->ws)) {
    ms_conn_report_close(c, 0, c->recv_code, c->recv_reason, c->recv_reason_len,
                 !c->user_closed, 0);
  } else {
    /* wslay failed the connection; the code it sent says why. */
    uint16_t sent = wslay_event_get_status_code_sent(c->ws);
    if (sent == MS_CLOSE_TOO_BIG)
      ms_conn_report_close(c, MS_ERR_TOO_BIG, MS_CLOSE_TOO_BIG, NULL, 0, 0, 0);
    else if (sent == MS_CLOSE_INVALID_UTF8)
      ms_conn_report_close(c, MS_ERR_UTF8, MS_CLOSE_INVALID_UTF8, NULL, 0, 0, 0);
    else
      ms_conn_report_close(c, MS_ERR_PROTO, MS_CLOSE_PROTOCOL_ERROR, NULL, 0, 0, 0);
  }
}

/* XOR with the 4-byte masking key, a word at a time (dst may be src). */
void ms_ws_mask(uint8_t *dst, const uint8_t *src, size_t n,
                const uint8_t key[4]) {
  uint64_t k8;
  memcpy(&k8, key, 4);
  memcpy((uint8_t *)&k8 + 4, key, 4);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= k8;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++)
    dst[i] = src[i] ^ key[i & 3];
}

static int frame_direct(ms_conn *c, int opcode, const uint8_t *data,
                        size_t len);

/* Masked payloads up to this size are unmasked on the stack. */
#define DIRECT_STACK 4096

/* Read the common frame without wslay: one whole unfragmented text or
 * binary frame, masked as the role requires, with RSV bits clear, the
 * shortest length encoding and at most max_message bytes. Only called
 * where wslay holds no partial frame or message, so skipping it changes
 * none of its state. Returns the frame's size once delivered, or 0 when
 * wslay must read from here on: control frames, fragments, a frame not
 * yet complete, and everything wslay fails the connection for (it then
 * fails it exactly as before). */
static size_t read_direct(ms_conn *c, const uint8_t *p, size_t n) {
  if (n < 2)
    return 0;
  unsigned op = p[0] & 0x0f;
  /* A server without wslay's context also answers pings and takes pongs
   * here (the heartbeats of idle peers), so that they do not wake it. */
  int ctl = (op == WSLAY_PING || op == WSLAY_PONG) && !c->ws &&
            c->cfg.role == MS_CONN_SERVER;
  if ((p[0] & 0xf0) != 0x80 ||
      (op != WSLAY_TEXT_FRAME && op != WSLAY_BINARY_FRAME && !ctl))
    return 0;
  int masked = (p[1] & 0x80) != 0;
  if (masked != (c->cfg.role == MS_CONN_SERVER))
    return 0;
  if (ctl && (p[1] & 0x7f) > 125)
    return 0; /* wslay fails it */
  uint64_t plen = p[1] & 0x7f;
  size_t h = 2;
  if (plen == 126) {
    if (n < 4)
      return 0;
    plen = (uint64_t)p[2] << 8 | p[3];
    if (plen < 126)
      return 0;
    h = 4;
  } else if (plen == 127) {
    if (n < 10)
      return 0;
    plen = 0;
    for (size_t i = 2; i < 10; i++)
      plen = plen << 8 | p[i];
    if (plen <= 0xffff || plen >> 63)
      return 0;
    h = 10;
  }
  size_t mh = masked ? 4 : 0;
  if (plen > c->cfg.max_message || n - h < mh || n - h - mh < plen)
    return 0;
  const uint8_t *payload = p + h + mh;
  uint8_t stack[DIRECT_STACK];
  uint8_t *heap = NULL;
  if (masked) {
    uint8_t *dst = stack;
    if (plen > sizeof stack) {
      heap = ms_malloc(c->mem, (size_t)plen);
      if (!heap)
        return 0; /* wslay reports the shortage */
      dst = heap;
    }
    ms_ws_mask(dst, payload, (size_t)plen, p + h);
    payload = dst;
  }
  if (!c->ws && op == WSLAY_TEXT_FRAME && !ms_utf8_valid(payload, (size_t)plen)) {
    ms_free(c->mem, heap); /* asleep: wake, and wslay fails it */
    return 0;
  }
  if (op == WSLAY_PING) {
    /* As wslay would: a pong with the same body, after what is already
     * in our buffer (asleep, nothing else is queued). */
    if (frame_direct(c, WSLAY_PONG, payload, (size_t)plen) != 0)
      ms_conn_set_fatal(c, MS_ERR_NOMEM);
    return h + mh + (size_t)plen;
  }
  struct wslay_event_on_msg_recv_arg arg = {0, (uint8_t)op, payload,
                                            (size_t)plen, 0};
  ws_on_msg(c->ws, &arg, c);
  ms_free(c->mem, heap);
  return h + mh + (size_t)plen;
}

int ms_conn_feed_ws(ms_conn *c, const uint8_t *data, size_t len) {
  if (len == 0)
    return 0;
  if (!c->asleep && (!c->ws || !wslay_event_get_read_enabled(c->ws)))
    return 0;
  /* Whole frames first, while wslay holds nothing half-read (always the
   * case asleep): a sleeping connection stays asleep for them. */
  while (len > 0 && c->in_framed == c->in_total && !c->in_frag &&
         !ms_conn_budget_spent(c)) {
    size_t used = read_direct(c, data, len);
    if (used == 0)
      break;
    data += used;
    len -= used;
    if (c->life.dead || c->fatal ||
        (c->ws && !wslay_event_get_read_enabled(c->ws))) {
      len = 0; /* nothing more is read, as wslay would stop */
      break;
    }
  }
  if (len > 0 && ms_conn_budget_spent(c)) {
    /* This feed's share is read: the rest waits for ms_conn_resume(). */
    if (ms_conn_hold_input(c, data, len) != 0) {
      ms_conn_set_fatal(c, MS_ERR_NOMEM);
      return MS_ERR_NOMEM;
    }
    len = 0;
  }
  if (len > 0 && c->asleep && ms_conn_wake(c) != 0)
    return MS_ERR_NOMEM;
  if (len > 0) {
    c->in_total += len;
    c->in_ptr = data;
    c->in_len = len;
    int r = wslay_event_recv(c->ws);
    size_t left = c->in_len;
    c->in_ptr = NULL;
    c->in_len = 0;
    if (r == WSLAY_ERR_NOMEM) {
      ms_conn_set_fatal(c, MS_ERR_NOMEM);
      return MS_ERR_NOMEM;
    }
    if (left > 0 && wslay_event_get_read_enabled(c->ws)) {
      /* wslay stopped on the budget (it reads nothing after a close). */
      c->in_total -= left;
      if (ms_conn_hold_input(c, data + len - left, left) != 0) {
        ms_conn_set_fatal(c, MS_ERR_NOMEM);
        return MS_ERR_NOMEM;
      }
    }
    /* Any other failure is a framing error for which wslay has already
     * queued a close (our recv callback never fails). */
  }
  ms_conn_after_recv(c);
  return c->fatal;
}

int ms_conn_ws_create(ms_conn *c) {
  struct wslay_event_callbacks cbs = {ws_recv,        ws_send,
                                      ws_genmask,     ms_conn_frame_start,
                                      NULL,           ms_conn_frame_end,
                                      ws_on_msg};
  c->in_total = c->in_framed = c->frame_size = 0;
  c->in_frag = 0;
  c->msg_open = c->msg_last = 0;
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

/* Frame one data message straight into our output buffer. Only while
 * wslay has nothing queued or half-sent (so frames cannot interleave) and
 * our buffer is below MS_CONN_OUT_CHUNK (so control frames keep their priority
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
    ms_rand_bytes(c->rng, mask, sizeof mask);
    memcpy(hdr + h, mask, 4);
    h += 4;
  }
  if (ms_conn_out_append(c, hdr, h) != 0)
    return MS_ERR_NOMEM;
  size_t at = c->out.len;
  if (ms_buf_append(&c->out, data, len) != 0) {
    c->out.len -= h; /* take the header back */
    return MS_ERR_NOMEM;
  }
  if (masked) {
    uint8_t *p = (uint8_t *)c->out.data + at;
    ms_ws_mask(p, p, len, mask);
  }
  return 0;
}

/* 0 when c may queue a data or ping message now, else why not. */
static int can_send(const ms_conn *c) {
  if (c->fatal)
    return c->fatal;
  if (c->state != ST_OPEN || c->user_closed || c->life.dead ||
      (!c->ws && !c->asleep))
    return MS_ERR_STATE;
  return 0;
}

int ms_conn_send(ms_conn *c, int binary, const uint8_t *data, size_t len) {
  if (!c || (!data && len))
    return MS_ERR_INVALID_ARG;
  int st = can_send(c);
  if (st)
    return st;
  if (len > c->cfg.max_message)
    return MS_ERR_TOO_BIG;
  /* The peer would fail the connection with 1007: refuse it here. */
  if (!binary && !ms_utf8_valid(data, len))
    return MS_ERR_INVALID_ARG;
  if (c->asleep && c->cfg.role == MS_CONN_SERVER &&
      (c->hibernated || conn_out_buffered(c) < MS_CONN_OUT_CHUNK)) {
    /* Nothing queued, nothing half-read: a server frame needs no wslay
     * state, so a sleeping connection can send without waking. (Above
     * MS_CONN_OUT_CHUNK an open one queues in wslay, as when awake, so
     * that control frames keep their priority.) */
    int rv = frame_direct(c, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
                          data, len);
    ms_conn_update_throttle(c);
    return rv;
  }
  if (c->asleep && ms_conn_wake(c) != 0)
    return MS_ERR_NOMEM;
  if (!wslay_event_want_write(c->ws) && conn_out_buffered(c) < MS_CONN_OUT_CHUNK &&
      wslay_event_get_write_enabled(c->ws)) {
    int rv = frame_direct(c, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
                          data, len);
    ms_conn_update_throttle(c);
    return rv;
  }
  struct wslay_event_msg msg = {
      binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, data, len};
  int r = wslay_event_queue_msg(c->ws, &msg);
  if (r == WSLAY_ERR_NOMEM)
    return MS_ERR_NOMEM;
  if (r != 0)
    return MS_ERR_STATE;
  ms_conn_update_throttle(c);
  return 0;
}

int ms_conn_ping(ms_conn *c, const uint8_t *data, size_t len) {
  if (!c || (!data && len) || len > 125)
    return MS_ERR_INVALID_ARG;
  int st = can_send(c);
  if (st)
    return st;
  if (c->asleep && c->cfg.role == MS_CONN_SERVER &&
      (c->hibernated || conn_out_buffered(c) < MS_CONN_OUT_CHUNK))
    return frame_direct(c, WSLAY_PING, data, len); /* as in ms_conn_send */
  if (c->asleep && ms_conn_wake(c) != 0)
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
  if (c->life.dead)
    return MS_ERR_STATE;
  if (c->fatal)
    return c->fatal;
  if (c->state == ST_IDLE || c->state == ST_HEAD ||
      c->state == ST_HTTP_BODY || c->state == ST_HTTP_WAIT) {
    /* No WebSocket yet: just finish (a half-sent upgrade is of no use). */
    c->state = ST_DONE;
    c->hs_deadline = MS_NO_DEADLINE;
    c->close_reported = 1;
    ms_conn_discard_output(c);
    return 0;
  }
  if (c->state != ST_OPEN || c->user_closed || (!c->ws && !c->asleep))
    return MS_ERR_STATE;
  if (code != 0 && !close_code_valid(code))
    return MS_ERR_INVALID_ARG;
  if (c->asleep && ms_conn_wake(c) != 0)
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
  ms_conn_pull(c, 1);
  if (c->fatal)
    return c->fatal;
  int r = wslay_event_queue_close(c->ws, code, (const uint8_t *)reason, rlen);
  if (r == WSLAY_ERR_NOMEM)
    return MS_ERR_NOMEM;
  if (r != 0)
    return MS_ERR_STATE; /* wslay is already closing (failure) */
  c->user_closed = 1;
  c->state = ST_CLOSING;
  int rearm;
  c->close_deadline = ms_conn_arm(c, c->cfg.close_timeout_ms, &rearm);
  c->rearm_close = rearm != 0;
  ms_conn_pull(c, 1);
  return c->fatal;
}
