/*
 * The sans-IO WebSocket connection: its lifetime, the public calls that
 * drive it, close reporting and the output buffer.
 *
 * The other jobs live next to it: ms_conn_http.c (the HTTP/1.1 upgrade in
 * both roles and plain HTTP requests), ms_conn_ws.c (the WebSocket session
 * on wslay) and ms_conn_sleep.c (hibernation). ms_conn_int.h holds the
 * state they share.
 *
 * Lifetime: the rule of ms_common.h, with ms_life. Every public call that
 * may run a callback enters and leaves; once deleted no callback runs.
 */
#include "ms_conn_int.h"

#include <wslay/wslay.h>

static int64_t add_ms(int64_t now, int64_t ms) {
  if (ms <= 0)
    return MS_NO_DEADLINE;
  if (now > MS_NO_DEADLINE - ms)
    return MS_NO_DEADLINE;
  return now + ms;
}

/* A deadline `ms` from now. Outside a call that brought the time, c->now
 * may be old: the deadline is then "due" (so the transport ticks at once)
 * and *rearm makes ms_conn_tick set it properly from the real time. */
int64_t ms_conn_arm(ms_conn *c, int64_t ms, int *rearm) {
  if (c->now_depth > 0 || ms <= 0) {
    *rearm = 0;
    return add_ms(c->now, ms);
  }
  *rearm = 1;
  return c->now;
}

void ms_conn_discard_output(ms_conn *c) {
  ms_buf_reset(&c->out);
  c->out_off = 0;
  if (c->ws)
    wslay_event_shutdown_write(c->ws);
}

static void destroy(ms_conn *c);

/* Returns 1 when c was freed: the caller must not touch it any more. */
int ms_conn_leave(ms_conn *c) {
  if (ms_life_leave(&c->life)) {
    destroy(c);
    return 1;
  }
  return 0;
}

void ms_conn_update_throttle(ms_conn *c) {
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
  cfg->message_timeout_ms = 30000;
  cfg->max_fragments = 1024;
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
    if (cfg->offer[i] != MS_ENC_NONE && !ms_conn_enc_name(cfg->offer[i]))
      return MS_ERR_INVALID_ARG;

  mem = ms_mem_or_default(mem);
  ms_conn_config def;
  ms_conn_config_init(&def, cfg->role);
  /* The strings live at the end of the struct: one allocation. */
  const char *host = cfg->host ? cfg->host : "localhost";
  const char *path = cfg->path ? cfg->path : def.path;
  size_t hl = strlen(host) + 1, pl = strlen(path) + 1;
  size_t ol = cfg->origin ? strlen(cfg->origin) + 1 : 0;
  ms_conn *c = ms_calloc(mem, 1, sizeof *c + hl + pl + ol);
  if (!c)
    return MS_ERR_NOMEM;
  c->mem = mem;
  c->cfg = *cfg;
  if (cb)
    c->cb = *cb;
  c->user_data = user_data;

  /* Zero means "default" so a partly filled config still works. */
  if (!c->cfg.max_message)
    c->cfg.max_message = def.max_message;
  if (!c->cfg.max_header_bytes)
    c->cfg.max_header_bytes = def.max_header_bytes;
  if (!c->cfg.max_headers)
    c->cfg.max_headers = def.max_headers;
  if (!c->cfg.message_timeout_ms)
    c->cfg.message_timeout_ms = def.message_timeout_ms;
  if (!c->cfg.max_fragments)
    c->cfg.max_fragments = def.max_fragments;
  if (!c->cfg.out_high_water)
    c->cfg.out_high_water = def.out_high_water;
  if (c->cfg.out_low_water > c->cfg.out_high_water)
    c->cfg.out_low_water = c->cfg.out_high_water;
  if (!c->cfg.accept_mask)
    c->cfg.accept_mask = def.accept_mask;

  memcpy(c->strs, host, hl);
  memcpy(c->strs + hl, path, pl);
  c->cfg.host = c->strs;
  c->cfg.path = c->strs + hl;
  c->cfg.origin = NULL;
  if (ol) {
    memcpy(c->strs + hl + pl, cfg->origin, ol);
    c->cfg.origin = c->strs + hl + pl;
  }

  ms_buf_init(&c->out, mem);
  if (cfg->role == MS_CONN_CLIENT) {
    /* Masks and the handshake key: a client needs unpredictable bytes.
     * A server sends neither, never asks the source and has no rng. */
    c->rng = ms_malloc(mem, sizeof *c->rng);
    int rrv = c->rng ? ms_rand_init(c->rng) : MS_ERR_NOMEM;
    if (rrv) {
      destroy(c);
      return rrv;
    }
  }
  c->state = cfg->role == MS_CONN_SERVER ? ST_HEAD : ST_IDLE;
  c->hs_deadline = MS_NO_DEADLINE;
  c->close_deadline = MS_NO_DEADLINE;
  c->linger_deadline = MS_NO_DEADLINE;
  c->recv_code = MS_CLOSE_ABNORMAL;
  *pconn = c;
  return 0;
}

static void destroy(ms_conn *c) {
  if (c->ws)
    wslay_event_context_free(c->ws);
  ms_free(c->mem, c->held);
  ms_conn_free_head(c);
  ms_buf_free(&c->out);
  ms_free(c->mem, c->rng);
  ms_free(c->mem, c->recv_reason);
  ms_free(c->mem, c);
}

void ms_conn_del(ms_conn *c) {
  if (!c)
    return;
  if (ms_life_del(&c->life)) {
    destroy(c);
    return;
  }
  /* Stop wslay's receive loop so no more messages are parsed. */
  if (c->ws)
    wslay_event_shutdown_read(c->ws);
}

void ms_conn_hold(ms_conn *c) { conn_enter(c); }
int ms_conn_release(ms_conn *c) { return ms_conn_leave(c); }

/* The one on_close of this connection; the state becomes ST_DONE. */
void ms_conn_report_close(ms_conn *c, int err, uint16_t code,
                         const char *reason, size_t reason_len, int by_peer,
                         int http_status) {
  if (c->close_reported)
    return;
  c->close_reported = 1;
  c->state = ST_DONE;
  c->hs_deadline = MS_NO_DEADLINE;
  c->close_deadline = MS_NO_DEADLINE;
  /* A peer that never reads must not keep a finished connection alive. */
  int rearm;
  c->linger_deadline = ms_conn_arm(c, c->cfg.close_timeout_ms, &rearm);
  c->rearm_linger = rearm != 0;
  if (c->ws)
    wslay_event_shutdown_read(c->ws);
  if (!c->cb.on_close || c->life.dead)
    return;
  char text[128];
  reason_len = MS_MIN(reason_len, sizeof text - 1);
  if (reason_len)
    memcpy(text, reason, reason_len);
  text[reason_len] = '\0';
  ms_conn_close_arg arg = {err, code, text, reason_len, by_peer, http_status};
  c->cb.on_close(c, &arg, c->user_data);
}

int ms_conn_out_append(ms_conn *c, const void *p, size_t n) {
  if (c->out_off == c->out.len && c->out_off) {
    ms_buf_reset(&c->out);
    c->out_off = 0;
  }
  return ms_buf_append(&c->out, p, n);
}

void ms_conn_set_fatal(ms_conn *c, int err) {
  if (!c->fatal)
    c->fatal = err;
  c->state = ST_DONE;
  ms_conn_discard_output(c);
}

int ms_conn_start(ms_conn *c, int64_t now) {
  if (!c)
    return MS_ERR_INVALID_ARG;
  if (c->life.dead)
    return MS_ERR_STATE;
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

  int rv = ms_conn_write_upgrade_request(c);
  if (rv) {
    ms_conn_set_fatal(c, rv);
    return rv;
  }
  c->state = ST_HEAD;
  return 0;
}

void ms_conn_set_feed_budget(ms_conn *c, size_t messages) {
  c->feed_budgeted = messages > 0; /* (the one budget: MS_HUB_FEED_MESSAGES) */
}

size_t ms_conn_held(const ms_conn *c) {
  if (!c || c->fatal || c->life.dead ||
      (c->state != ST_OPEN && c->state != ST_CLOSING))
    return 0;
  return conn_held_bytes(c);
}

int ms_conn_resumable(const ms_conn *c) {
  return ms_conn_held(c) > 0 && !c->throttled;
}

int ms_conn_hold_input(ms_conn *c, const uint8_t *p, size_t n) {
  if (c->resuming) {
    /* The rest of the held input itself. */
    c->held->off = (size_t)(p - c->held->data);
    return 0;
  }
  size_t have = conn_held_bytes(c);
  struct conn_held *nh = ms_malloc(c->mem, sizeof *nh + have + n);
  if (!nh)
    return MS_ERR_NOMEM;
  if (have)
    memcpy(nh->data, c->held->data + c->held->off, have);
  memcpy(nh->data + have, p, n);
  nh->len = have + n;
  nh->off = 0;
  ms_free(c->mem, c->held);
  c->held = nh;
  return 0;
}

/* One budget of the held input, or all of it. Inside a call. */
static int read_held(ms_conn *c, int all) {
  c->feed_unbounded = all != 0;
  c->feed_msgs = 0;
  struct conn_held *hd = c->held;
  size_t off = hd->off;
  hd->off = hd->len; /* all read, unless the budget runs out */
  c->resuming = 1;
  int rv = c->state == ST_OPEN || c->state == ST_CLOSING
               ? ms_conn_feed_ws(c, hd->data + off, hd->len - off)
               : 0;
  c->resuming = 0;
  c->feed_unbounded = 0;
  if (hd->off == hd->len) {
    ms_free(c->mem, hd);
    c->held = NULL;
  }
  return rv;
}

int ms_conn_resume(ms_conn *c, int64_t now) {
  if (!c)
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->life.dead || !conn_held_bytes(c) || c->throttled)
    return 0;
  c->now = now;
  conn_enter(c);
  c->now_depth++;
  int rv = read_held(c, 0);
  if (!c->life.dead)
    ms_conn_update_throttle(c);
  c->now_depth--;
  ms_conn_leave(c);
  return rv;
}

int ms_conn_feed(ms_conn *c, const uint8_t *data, size_t len, int64_t now) {
  if (!c || (!data && len))
    return MS_ERR_INVALID_ARG;
  if (c->life.dead)
    return MS_ERR_STATE; /* deleted from a callback still running */
  if (c->fatal)
    return c->fatal;
  if (conn_held_bytes(c)) {
    /* Fed while input is held (want_read was 0): it queues behind. */
    int hrv = len ? ms_conn_hold_input(c, data, len) : 0;
    if (hrv)
      ms_conn_set_fatal(c, hrv);
    return hrv;
  }
  c->feed_msgs = 0;
  c->now = now;
  conn_enter(c);
  c->now_depth++;
  int rv = 0;
  switch (c->state) {
  case ST_IDLE:
    rv = MS_ERR_STATE;
    break;
  case ST_HEAD:
    rv = ms_conn_feed_head(c, data, len);
    break;
  case ST_HTTP_BODY:
    rv = ms_conn_feed_body(c, data, len);
    break;
  case ST_HTTP_WAIT:
    if (len)
      c->http->http_keep = 0; /* pipelined: dropped, so the answer closes */
    break;
  case ST_OPEN:
  case ST_CLOSING:
    rv = ms_conn_feed_ws(c, data, len);
    break;
  default:
    break; /* nothing more is read: drop */
  }
  if (!c->life.dead)
    ms_conn_update_throttle(c);
  c->now_depth--;
  ms_conn_leave(c);
  return rv;
}

void ms_conn_eof(ms_conn *c, int64_t now) {
  if (!c || c->life.dead)
    return;
  c->now = now;
  conn_enter(c);
  c->now_depth++;
  /* Input read but held by the budget came before the end: it is handled
   * now, whole (its answers can no longer be sent; it still counts: logs
   * are kept, requests routed). */
  if (conn_held_bytes(c) && !c->fatal)
    read_held(c, 1);
  ms_conn_discard_output(c);
  if (!c->fatal && !c->life.dead && c->state != ST_IDLE)
    ms_conn_report_close(c, MS_ERR_CLOSED, MS_CLOSE_ABNORMAL, NULL, 0, 0, 0);
  c->state = ST_DONE;
  c->now_depth--;
  ms_conn_leave(c);
}

const uint8_t *ms_conn_peek(ms_conn *c, size_t *len) {
  if (!c || c->fatal || c->life.dead) {
    if (len)
      *len = 0;
    return NULL;
  }
  ms_conn_pull(c, 0);
  size_t n = conn_out_buffered(c);
  if (len)
    *len = n;
  return n ? (const uint8_t *)c->out.data + c->out_off : NULL;
}

void ms_conn_consume(ms_conn *c, size_t n) {
  if (!c || c->life.dead)
    return;
  n = MS_MIN(n, conn_out_buffered(c));
  c->out_off += n;
  if (c->out_off == c->out.len) {
    /* Hibernating, what it sent (a frame read and answered without
     * waking) leaves no buffer behind. */
    if (c->hibernated)
      ms_buf_free(&c->out);
    else
      ms_buf_reset(&c->out);
    c->out_off = 0;
  } else if (c->out_off > MS_CONN_OUT_CHUNK && c->out_off > c->out.len / 2) {
    /* Keep the buffer from creeping forward forever. */
    size_t left = conn_out_buffered(c);
    memmove(c->out.data, c->out.data + c->out_off, left);
    c->out.len = left;
    c->out_off = 0;
  }
  ms_conn_update_throttle(c);
}

int ms_conn_want_read(const ms_conn *c) {
  if (!c || c->fatal || c->life.dead || conn_held_bytes(c))
    return 0;
  switch (c->state) {
  case ST_HEAD:
  case ST_HTTP_BODY:
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
  if (!c || c->fatal || c->life.dead)
    return 0;
  if (conn_out_buffered(c) > 0)
    return 1;
  return c->ws && wslay_event_want_write(c->ws);
}

size_t ms_conn_out_pending(const ms_conn *c) {
  if (!c)
    return 0;
  size_t n = conn_out_buffered(c);
  /* After the close frame wslay sends nothing more: what is still queued
   * will never leave. */
  if (c->ws && wslay_event_get_write_enabled(c->ws))
    n += wslay_event_get_queued_msg_length(c->ws);
  return n;
}

int ms_conn_tick(ms_conn *c, int64_t now) {
  if (!c)
    return MS_ERR_INVALID_ARG;
  if (c->life.dead)
    return MS_ERR_STATE;
  if (c->fatal)
    return c->fatal;
  c->now = now;
  conn_enter(c);
  c->now_depth++;
  if (c->rearm_close) {
    c->rearm_close = 0;
    c->close_deadline = add_ms(now, c->cfg.close_timeout_ms);
  }
  if (c->rearm_hs) {
    c->rearm_hs = 0;
    if (c->state == ST_HEAD)
      c->hs_deadline = add_ms(now, c->cfg.handshake_timeout_ms);
  }
  if (c->rearm_linger) {
    c->rearm_linger = 0;
    c->linger_deadline = add_ms(now, c->cfg.close_timeout_ms);
  }
  if (now >= c->hs_deadline &&
      (c->state == ST_HEAD || c->state == ST_HTTP_BODY ||
       c->state == ST_HTTP_WAIT)) {
    /* Nothing useful can be said to a peer that did not finish its
     * request in time: just finish. */
    ms_conn_discard_output(c);
    ms_conn_report_close(c, MS_ERR_TIMEOUT, MS_CLOSE_ABNORMAL, NULL, 0, 0, 0);
  } else if (now >= c->close_deadline && c->state == ST_CLOSING) {
    ms_conn_discard_output(c);
    ms_conn_report_close(c, MS_ERR_TIMEOUT, MS_CLOSE_ABNORMAL, NULL, 0, 0, 0);
  } else if (now >= c->linger_deadline && c->state == ST_DONE) {
    ms_conn_discard_output(c);
  } else if (c->msg_open && now >= c->msg_deadline && c->ws &&
             (c->state == ST_OPEN || c->state == ST_CLOSING) &&
             !c->fail_err) {
    /* A message started long ago and still not finished. */
    c->msg_open = 0;
    ms_conn_ws_fail(c, MS_ERR_TIMEOUT, MS_CLOSE_POLICY);
    ms_conn_after_recv(c);
  }
  c->now_depth--;
  ms_conn_leave(c);
  return 0;
}

int64_t ms_conn_next_deadline(const ms_conn *c) {
  if (!c || c->fatal || c->life.dead)
    return MS_NO_DEADLINE;
  if (c->state == ST_DONE)
    return ms_conn_want_write(c) ? c->linger_deadline : MS_NO_DEADLINE;
  int64_t d = MS_MIN(c->hs_deadline, c->close_deadline);
  if (c->msg_open && c->msg_deadline < d)
    d = c->msg_deadline;
  return d;
}

int ms_conn_is_open(const ms_conn *c) {
  return c && !c->fatal && !c->life.dead && c->state == ST_OPEN &&
         !c->user_closed;
}

ms_encoding ms_conn_encoding(const ms_conn *c) {
  return c ? c->enc : MS_ENC_NONE;
}

ms_conn_role ms_conn_get_role(const ms_conn *c) {
  return c ? c->cfg.role : MS_CONN_CLIENT;
}

void *ms_conn_user_data(const ms_conn *c) { return c ? c->user_data : NULL; }

void ms_conn_set_user_data(ms_conn *c, void *user_data) {
  if (c && !c->life.dead)
    c->user_data = user_data;
}
