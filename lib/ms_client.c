/* The client engine: a service connected to a hub (see ms_client.h). */
#include "ms_client_int.h"

#include <stdio.h>
#include <stdlib.h>

#define UNSTAMPED INT64_MIN
#define MAX_TIMEOUT_MS (INT64_C(1) << 40) /* about 35 years */

static void conn_lost(ms_client *c, int64_t now, int err);

/* ---- small helpers ---- */

/* Above this much unsent output, logs wait in their ring instead of
 * growing the connection's buffer. */
#define LOG_BACKLOG_BYTES (256 * 1024)

int ms_client_out_backed_up(const ms_client *c) {
  return !c->conn || ms_conn_out_pending(c->conn) > LOG_BACKLOG_BYTES;
}

static uint64_t rng_next(ms_client *c) {
  /* xorshift64*: jitter and id start only, nothing secret. */
  uint64_t x = c->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  c->rng = x;
  return x * UINT64_C(0x2545F4914F6CDD1D);
}

static char *dup_opt(const ms_allocator *m, const char *s) {
  return s ? ms_strndup(m, s, strlen(s)) : NULL;
}

static void enter(ms_client *c) { ms_life_enter(&c->life); }
static void really_free(ms_client *c);
/* Returns 1 when the client was freed. */
static int leave(ms_client *c) {
  if (ms_life_leave(&c->life)) {
    really_free(c);
    return 1;
  }
  return 0;
}

static void wake(ms_client *c) {
  if (c->wakeup && !ms_life_inside(&c->life))
    c->wakeup(c->wakeup_ud);
}

static int64_t heartbeat(const ms_client *c) {
  int64_t hb = c->cfg.heartbeat_ms;
  if (c->hub_heartbeat_ms > 0 && c->hub_heartbeat_ms < hb)
    hb = c->hub_heartbeat_ms;
  return hb > 0 ? hb : 10000;
}

static void set_state(ms_client *c, ms_client_state st, int err,
                      int64_t now) {
  c->state = st;
  if (!c->cfg.on_state)
    return;
  ms_client_state_arg a;
  memset(&a, 0, sizeof a);
  a.state = st;
  a.err = err;
  a.close_code = c->close_code;
  a.hub_id = st == MS_CLIENT_READY ? c->hub_id : NULL;
  a.retry_in_ms = st == MS_CLIENT_IDLE ? c->reconnect_at - now : -1;
  c->cfg.on_state(c, &a, c->ud);
}

/* Send the message in c->out on the current connection; nothing when
 * building it ran out of memory. */
static int send_out(ms_client *c) {
  if (!c->conn || c->conn_dead)
    return MS_ERR_STATE;
  if (c->out.failed)
    return MS_ERR_NOMEM;
  int rv = ms_wire_send(c->conn, c->enc, (const uint8_t *)c->out.sb.data,
                        c->out.sb.size, &c->scratch, c->hub_max_message);
  wake(c);
  return rv;
}

int ms_client_send_mp(ms_client *c, const uint8_t *mp, size_t len) {
  if (c->state != MS_CLIENT_READY || !c->conn || c->conn_dead)
    return MS_ERR_STATE;
  int rv = ms_wire_send(c->conn, c->enc, mp, len, &c->scratch,
                        c->hub_max_message);
  wake(c);
  return rv;
}

static msgpack_packer *packer(ms_client *c) {
  ms_mpbuf_reset(&c->out);
  return &c->pk;
}

int ms_client_send_ping(ms_client *c, uint64_t n) {
  if (c->state != MS_CLIENT_READY || !c->conn || c->conn_dead)
    return MS_ERR_STATE;
  if (ms_enc_ping(packer(c), n) != 0)
    return MS_ERR_NOMEM;
  return send_out(c);
}

/* ---- request bookkeeping ---- */

static void creq_free(ms_client *c, creq *r) {
  ms_free(c->mem, r);
}

/* Remove r from every table before its callback runs (principle 4). */
static void creq_unlink(ms_client *c, creq *r) {
  ms_u64map_del(&c->reqs, r->id);
  ms_heap_remove(&c->timers, &r->hn);
  if (r->state == CREQ_INFLIGHT)
    c->inflight--;
}

static void deliver(ms_client *c, creq *r, ms_response_fn fn, void *ud,
                    int err, const char *code, const char *message,
                    const msgpack_object *data, int late, int64_t now) {
  msgpack_object nil;
  nil.type = MSGPACK_OBJECT_NIL;
  ms_response_arg a;
  a.id = r->id;
  a.err = err;
  a.code = err ? (code ? code : ms_err_to_wire(err)) : NULL;
  a.message = message ? message : "";
  a.data = data ? data : &nil;
  a.late = late;
  a.elapsed_ms = r->sent_at == UNSTAMPED ? 0 : now - r->sent_at;
  if (fn)
    fn(c, &a, ud);
}

/* The error data a client attaches to a REQUEST_TIMEOUT it raises (or
 * relays): target, event, timeout_ms, elapsed_ms. */
static void timeout_error(ms_client *c, creq *r, int64_t now,
                          const char *message) {
  /* Built on the stack: nothing to allocate, nothing to fail. */
  ms_objmap o;
  ms_objmap_init(&o);
  ms_objmap_str(&o, "target", r->target, strlen(r->target));
  ms_objmap_str(&o, "event", r->event, strlen(r->event));
  ms_objmap_int(&o, "timeout_ms", r->timeout_ms);
  ms_objmap_int(&o, "elapsed_ms",
                r->sent_at == UNSTAMPED ? 0 : now - r->sent_at);
  deliver(c, r, r->cb, r->ud, MS_ERR_REQUEST_TIMEOUT, NULL, message, &o.obj,
          0, now);
}

/* The request's deadline passed (locally, or the hub said so first). */
/* by_hub: the hub sent REQUEST_TIMEOUT and has already forgotten the id
 * (no CANCEL needed). */
static void request_timed_out(ms_client *c, creq *r, int64_t now,
                              const char *message, int by_hub) {
  c->stats.timeouts++;
  if (r->late_ms > 0 && r->on_late) {
    /* Keep the entry (bounded: it still counts against max_pending)
     * until the late window closes, for on_late. */
    c->inflight--;
    r->state = CREQ_LATE;
    ms_heap_update(&c->timers, &r->hn, r->sent_at + r->timeout_ms + r->late_ms);
    timeout_error(c, r, now, message);
    return;
  }
  creq_unlink(c, r);
  if (!by_hub && c->conn && !c->conn_dead && c->state == MS_CLIENT_READY) {
    ms_enc_cancel(packer(c), r->id);
    send_out(c);
  }
  timeout_error(c, r, now, message);
  creq_free(c, r);
}

/* ---- replies (incoming requests) ---- */

static void reply_unref(ms_reply *r) {
  if (--r->refs > 0)
    return;
  if (r->c) {
    if (r->prev)
      r->prev->next = r->next;
    else
      r->c->reply_list = r->next;
    if (r->next)
      r->next->prev = r->prev;
  }
  ms_free(r->mem, r);
}

static int reply_live(const ms_reply *r) {
  return r->c && !ms_life_dead(&r->c->life) && !r->cancelled && r->c->epoch == r->epoch && r->c->conn &&
         !r->c->conn_dead && r->c->state == MS_CLIENT_READY;
}

static int reply_finish(ms_reply *r) {
  if (r->answered)
    return MS_ERR_STATE;
  r->answered = 1;
  int live = reply_live(r);
  if (live)
    ms_u64map_del(&r->c->replies, r->id);
  return live ? 0 : MS_ERR_CLOSED;
}

static void reply_drop_retained(ms_reply *r) {
  if (r->retained) {
    r->retained = 0;
    reply_unref(r);
  }
}

void ms_reply_retain(ms_reply *r) {
  if (!r->retained && !r->answered) {
    r->retained = 1;
    r->refs++;
  }
}

int ms_reply_send(ms_reply *r, const uint8_t *data, size_t len) {
  int rv = reply_finish(r);
  if (rv == 0) {
    ms_client *c = r->c;
    ms_enc_response_raw(packer(c), r->id, data, len);
    if (c->out.sb.size > c->hub_max_message && c->hub_max_message) {
      ms_enc_error(packer(c), r->id, ms_str_c("PAYLOAD_TOO_LARGE"),
                   ms_str_c("response larger than the hub's max_message"),
                   NULL);
      rv = MS_ERR_PAYLOAD_TOO_LARGE;
    }
    int srv = send_out(c);
    if (srv == MS_ERR_TOO_BIG) {
      /* Too large on the wire (JSON grows): the requester still gets an
       * answer, and the caller learns why. */
      ms_enc_error(packer(c), r->id, ms_str_c("PAYLOAD_TOO_LARGE"),
                   ms_str_c("response larger than max_message"), NULL);
      send_out(c);
      srv = MS_ERR_PAYLOAD_TOO_LARGE;
    }
    if (rv == 0)
      rv = srv;
  } else if (rv == MS_ERR_STATE) {
    return rv;
  }
  reply_drop_retained(r);
  return rv;
}

int ms_reply_send_str(ms_reply *r, const char *s) {
  ms_mpbuf sb;
  ms_mpbuf_init(&sb, r->mem);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, ms_mpbuf_write);
  size_t n = s ? strlen(s) : 0;
  if (s)
    msgpack_pack_str_with_body(&pk, s, n);
  else
    msgpack_pack_nil(&pk);
  /* Out of memory the reply stays unanswered: releasing it (or the
   * handler returning) answers INTERNAL_SERVER_ERROR. */
  int rv = sb.failed ? MS_ERR_NOMEM
                     : ms_reply_send(r, (const uint8_t *)sb.sb.data,
                                     sb.sb.size);
  ms_mpbuf_destroy(&sb);
  return rv;
}

int ms_reply_error(ms_reply *r, const char *code, const char *message,
                   const uint8_t *error_data, size_t len) {
  if (!code || !*code)
    code = "INTERNAL_SERVER_ERROR";
  int rv = reply_finish(r);
  if (rv == 0) {
    ms_client *c = r->c;
    ms_enc_error_raw(packer(c), r->id, ms_str_c(code),
                     ms_str_c(message ? message : ""), error_data, len);
    rv = send_out(c);
  } else if (rv == MS_ERR_STATE) {
    return rv;
  }
  reply_drop_retained(r);
  return rv;
}

void ms_reply_release(ms_reply *r) {
  if (!r->answered) {
    /* Answers and drops the retained reference. */
    ms_reply_error(r, "INTERNAL_SERVER_ERROR",
                   "handler released the request without replying", NULL, 0);
    return;
  }
  reply_drop_retained(r);
}

int ms_reply_cancelled(const ms_reply *r) { return !reply_live(r); }
ms_client *ms_reply_client(const ms_reply *r) { return r->c; }

/* ---- config / lifecycle ---- */

void ms_client_config_init(ms_client_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->path = "/ws";
  cfg->encoding = MS_ENC_MSGPACK;
  cfg->heartbeat_ms = 10000;
  cfg->default_timeout_ms = 5000;
  cfg->max_late_ms = 30000;
  cfg->max_pending = 65536;
  cfg->max_message = 1 << 20;
  cfg->reconnect = 1;
  cfg->backoff_min_ms = 100;
  cfg->backoff_max_ms = 10000;
}

int ms_client_new(ms_client **pc, const ms_client_config *cfg,
                  void *user_data, const ms_allocator *mem) {
  if (!pc || !cfg || !cfg->service ||
      !ms_valid_service_name(cfg->service, strlen(cfg->service)))
    return MS_ERR_INVALID_ARG;
  mem = ms_mem_or_default(mem);
  ms_client *c = ms_calloc(mem, 1, sizeof *c);
  if (!c)
    return MS_ERR_NOMEM;
  c->mem = mem;
  c->ud = user_data;
  c->cfg = *cfg;
  if (c->cfg.heartbeat_ms <= 0)
    c->cfg.heartbeat_ms = 10000;
  if (c->cfg.default_timeout_ms <= 0)
    c->cfg.default_timeout_ms = 5000;
  if (c->cfg.max_pending == 0)
    c->cfg.max_pending = 65536;
  if (c->cfg.max_message == 0)
    c->cfg.max_message = 1 << 20;
  if (c->cfg.backoff_min_ms <= 0)
    c->cfg.backoff_min_ms = 100;
  if (c->cfg.backoff_max_ms < c->cfg.backoff_min_ms)
    c->cfg.backoff_max_ms = c->cfg.backoff_min_ms;
  if (c->cfg.encoding != MS_ENC_JSON)
    c->cfg.encoding = MS_ENC_MSGPACK;
  c->rng = cfg->seed;
  int rrv = 0;
  /* Request ids are not secret: without a source they start from a fixed
   * point; the connections (masks) need the source and fail without. */
  if (!c->rng && ms_random_is_set())
    rrv = ms_random(&c->rng, sizeof c->rng);
  if (!c->rng)
    c->rng = 0x9e3779b97f4a7c15u;
  /* Ids start at a random point (below 2^32, so they stay far from the
   * 2^53 limit) and increase. */
  c->next_id = (rng_next(c) & 0x7fffffffu) + 1;
  c->state = MS_CLIENT_IDLE;
  c->reconnect_at = 0;
  /* Everything really_free() releases is valid before the first
   * allocation that may fail. */
  ms_u64map_init(&c->reqs, mem);
  ms_u64map_init(&c->replies, mem);
  ms_heap_init(&c->timers, mem);
  ms_strmap_init(&c->handlers, mem, rng_next(c));
  ms_mpbuf_init(&c->out, mem);
  msgpack_packer_init(&c->pk, &c->out, ms_mpbuf_write);
  ms_mpbuf_init(&c->scratch, mem);
  c->zone_ready = msgpack_zone_init(&c->zone, 4096);
  c->service = dup_opt(mem, cfg->service);
  c->token = dup_opt(mem, cfg->token);
  c->host = dup_opt(mem, cfg->host ? cfg->host : "localhost");
  c->path = dup_opt(mem, cfg->path ? cfg->path : "/ws");
  c->dns_servers = dup_opt(mem, cfg->dns_servers);
  c->cfg.dns_servers = c->dns_servers;
  c->instance = dup_opt(mem, cfg->instance);
  if (rrv) {
    really_free(c);
    return rrv;
  }
  if (!c->zone_ready || !c->service || !c->host || !c->path ||
      (cfg->token && !c->token) || (cfg->instance && !c->instance) ||
      (cfg->dns_servers && !c->dns_servers)) {
    really_free(c);
    return MS_ERR_NOMEM;
  }
  *pc = c;
  return 0;
}

static void really_free(ms_client *c) {
  const ms_allocator *m = c->mem;
  /* Every pending callback fires once. */
  /* Callbacks below must not re-trigger the free. */
  c->life.dead = 1;
  ms_life_enter(&c->life);
  for (;;) {
    ms_hnode *n = ms_heap_top(&c->timers);
    if (!n)
      break;
    creq *r = (creq *)n;
    int was_late = r->state == CREQ_LATE;
    creq_unlink(c, r);
    if (!was_late)
      deliver(c, r, r->cb, r->ud, MS_ERR_CANCELLED, NULL,
              "client deleted", NULL, 0, c->last_now);
    creq_free(c, r);
  }
  /* Detach replies the user still holds. */
  for (ms_reply *r = c->reply_list; r; r = r->next)
    r->c = NULL;
  c->reply_list = NULL;
  ms_u64map_free(&c->replies);
  ms_u64map_free(&c->reqs);
  ms_heap_free(&c->timers);
  size_t pos = 0;
  const ms_strmap_ent *e;
  while ((e = ms_strmap_next(&c->handlers, &pos)) != NULL)
    ms_free(m, e->val);
  ms_strmap_free(&c->handlers);
  ms_client_logs_free(c);
  if (c->conn)
    ms_conn_del(c->conn);
  ms_mpbuf_destroy(&c->out);
  ms_mpbuf_destroy(&c->scratch);
  if (c->zone_ready)
    msgpack_zone_destroy(&c->zone);
  ms_free(m, c->service);
  ms_free(m, c->token);
  ms_free(m, c->host);
  ms_free(m, c->path);
  ms_free(m, c->instance);
  ms_free(m, c->dns_servers);
  ms_free(m, c);
}

void ms_client_del(ms_client *c) {
  if (!c)
    return;
  if (ms_life_del(&c->life))
    really_free(c);
}

void *ms_client_user_data(const ms_client *c) { return c->ud; }
ms_client_state ms_client_get_state(const ms_client *c) { return c->state; }
const char *ms_client_service(const ms_client *c) { return c->service; }

const ms_stream_wrap *ms_client_tls(const ms_client *c) {
  return c ? c->cfg.tls : NULL;
}

const ms_allocator *ms_client_allocator(const ms_client *c) {
  return c ? c->mem : ms_default_allocator();
}

const char *ms_client_dns_servers(const ms_client *c) {
  return c ? c->cfg.dns_servers : NULL;
}

void ms_client_set_wakeup(ms_client *c, ms_wakeup_fn fn, void *ud) {
  if (ms_life_dead(&c->life))
    return;
  c->wakeup = fn;
  c->wakeup_ud = ud;
}

void ms_client_on_message(ms_client *c, ms_client_msg_fn fn, void *ud) {
  if (ms_life_dead(&c->life))
    return;
  c->on_msg = fn;
  c->on_msg_ud = ud;
}

int ms_client_on(ms_client *c, const char *event, ms_handler_fn fn,
                 void *user_data) {
  if (!c || !event || !*event)
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  size_t len = strlen(event);
  handler *old = ms_strmap_get(&c->handlers, event, len);
  if (old) {
    ms_strmap_del(&c->handlers, event, len);
    ms_free(c->mem, old);
  }
  if (!fn)
    return 0;
  handler *h = ms_malloc(c->mem, sizeof *h + len + 1);
  if (!h)
    return MS_ERR_NOMEM;
  h->fn = fn;
  h->ud = user_data;
  h->len = len;
  memcpy(h->name, event, len + 1);
  if (ms_strmap_put(&c->handlers, h->name, len, h)) {
    ms_free(c->mem, h);
    return MS_ERR_NOMEM;
  }
  return 0;
}

/* ---- requests ---- */

int ms_client_request(ms_client *c, const char *target, const char *event,
                      const uint8_t *data, size_t len,
                      const ms_request_opts *opts, ms_response_fn cb,
                      void *user_data, uint64_t *id_out) {
  if (!c || !target || !event || !*event ||
      !ms_valid_service_name(target, strlen(target)) ||
      (len && !data) || (data && len && ms_msgpack_check(data, len) != 0))
    return MS_ERR_INVALID_ARG;
  size_t tl = strlen(target), el = strlen(event);
  if (el > 256)
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE; /* deleted from a callback still running */
  if (c->reqs.n >= c->cfg.max_pending) {
    /* Not silently queued: the caller learns at once. */
    return MS_ERR_TOO_MANY_PENDING;
  }
  creq *r = ms_calloc(c->mem, 1, sizeof *r + tl + el + 2);
  if (!r)
    return MS_ERR_NOMEM;
  r->target = (char *)(r + 1);
  r->event = r->target + tl + 1;
  memcpy(r->target, target, tl + 1);
  memcpy(r->event, event, el + 1);
  r->cb = cb;
  r->ud = user_data;
  r->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms
                                               : c->cfg.default_timeout_ms;
  /* Deadlines stay far from overflow; the hub caps them anyway. */
  if (r->timeout_ms > MAX_TIMEOUT_MS)
    r->timeout_ms = MAX_TIMEOUT_MS;
  if (opts && opts->late_ms > 0 && opts->on_late) {
    r->late_ms = MS_MIN(opts->late_ms, c->cfg.max_late_ms);
    if (r->late_ms > MAX_TIMEOUT_MS)
      r->late_ms = MAX_TIMEOUT_MS;
    r->on_late = opts->on_late;
    r->late_ud = opts->late_user_data;
  }
  /* Next free id. */
  do {
    r->id = c->next_id++;
    if (c->next_id > MS_MAX_ID)
      c->next_id = 1;
  } while (ms_u64map_get(&c->reqs, r->id));
  if (ms_u64map_put(&c->reqs, r->id, r)) {
    ms_free(c->mem, r);
    return MS_ERR_NOMEM;
  }
  /* The engine reads no clock: the request is stamped with the time of
   * the next call that brings one (next_deadline is "now" until then). */
  r->sent_at = UNSTAMPED;
  /* The timer first: a request that cannot end is refused before it is
   * sent (no callback, nothing to cancel at the hub). */
  if (ms_heap_push(&c->timers, &r->hn, c->last_now) != 0) {
    ms_u64map_del(&c->reqs, r->id);
    ms_free(c->mem, r);
    return MS_ERR_NOMEM;
  }
  int err = 0;
  if (c->state != MS_CLIENT_READY || !c->conn || c->conn_dead) {
    err = MS_ERR_HUB_UNAVAILABLE;
  } else {
    msgpack_packer *pk = packer(c);
    /* opts: {} needs no buffer of its own (one allocation less per
     * request). */
    static const uint8_t no_opts = 0x80;
    const uint8_t *wire_opts = &no_opts;
    size_t wire_opts_len = 1;
    ms_mpbuf ob;
    ms_mpbuf_init(&ob, c->mem);
    if (r->late_ms > 0) {
      msgpack_packer opk;
      msgpack_packer_init(&opk, &ob, ms_mpbuf_write);
      msgpack_pack_map(&opk, 1);
      msgpack_pack_str_with_body(&opk, "late_ms", 7);
      msgpack_pack_int64(&opk, r->late_ms);
      wire_opts = (const uint8_t *)ob.sb.data;
      wire_opts_len = ob.sb.size;
    }
    if (ob.failed)
      c->out.failed = 1;
    else
      ms_enc_request_raw(pk, r->id, ms_str_c(target), ms_str_c(event), data,
                         len, (uint64_t)r->timeout_ms, wire_opts,
                         wire_opts_len);
    ms_mpbuf_destroy(&ob);
    int rv;
    if (c->out.failed)
      rv = MS_ERR_NOMEM;
    else if (c->hub_max_message && c->out.sb.size > c->hub_max_message)
      rv = MS_ERR_TOO_BIG;
    else
      rv = send_out(c);
    if (rv == MS_ERR_NOMEM) {
      /* Nothing went out: refused, no callback. */
      ms_heap_remove(&c->timers, &r->hn);
      ms_u64map_del(&c->reqs, r->id);
      ms_free(c->mem, r);
      return MS_ERR_NOMEM;
    }
    if (rv == MS_ERR_TOO_BIG)
      err = MS_ERR_PAYLOAD_TOO_LARGE;
    else if (rv)
      err = MS_ERR_HUB_UNAVAILABLE;
  }
  if (err) {
    /* Reported from the next tick, never from inside this call. */
    r->state = CREQ_FAIL;
    r->fail_err = err;
  } else {
    r->state = CREQ_INFLIGHT;
    c->inflight++;
    c->stats.requests_sent++;
  }
  if (id_out)
    *id_out = r->id;
  wake(c);
  return 0;
}

int ms_client_cancel(ms_client *c, uint64_t id) {
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE; /* the delete answers it */
  creq *r = ms_u64map_get(&c->reqs, id);
  if (!r)
    return MS_ERR_NOT_FOUND;
  if (r->state == CREQ_LATE) {
    /* Its one callback already ran (REQUEST_TIMEOUT): stop on_late from
     * running, silently, and let the hub stop routing. */
    creq_unlink(c, r);
    if (c->conn && !c->conn_dead && c->state == MS_CLIENT_READY) {
      ms_enc_cancel(packer(c), id);
      send_out(c);
    }
    creq_free(c, r);
    return 0;
  }
  int was_inflight = r->state == CREQ_INFLIGHT;
  creq_unlink(c, r);
  enter(c);
  if (was_inflight && c->conn && !c->conn_dead &&
      c->state == MS_CLIENT_READY) {
    ms_enc_cancel(packer(c), id);
    send_out(c);
  }
  deliver(c, r, r->cb, r->ud, MS_ERR_CANCELLED, NULL, "cancelled", NULL, 0,
          c->last_now);
  creq_free(c, r);
  leave(c);
  return 0;
}

size_t ms_client_pending(const ms_client *c) { return c->inflight; }

void ms_client_get_stats(const ms_client *c, ms_client_stats *st) {
  *st = c->stats;
}

int ms_client_send_raw(ms_client *c, const uint8_t *msg, size_t len) {
  if (ms_life_dead(&c->life) || c->state != MS_CLIENT_READY || !c->conn || c->conn_dead)
    return MS_ERR_STATE;
  int rv = ms_wire_send(c->conn, c->enc, msg, len, &c->scratch,
                        c->hub_max_message);
  wake(c);
  return rv;
}

/* ---- incoming messages ---- */

static void handle_request(ms_client *c, const ms_msg *m, int64_t now) {
  char event[257], source[129];
  size_t el = MS_MIN(m->event.len, sizeof event - 1);
  memcpy(event, m->event.ptr, el);
  event[el] = '\0';
  size_t sl = MS_MIN(m->name.len, sizeof source - 1);
  memcpy(source, m->name.ptr, sl);
  source[sl] = '\0';
  handler *h = ms_strmap_get(&c->handlers, m->event.ptr, m->event.len);
  if (!h) {
    char msg[320];
    snprintf(msg, sizeof msg, "no handler for event '%s'", event);
    ms_enc_error(packer(c), m->id, ms_str_c("EVENT_NOT_FOUND"),
                 ms_str_c(msg), NULL);
    send_out(c);
    return;
  }
  ms_reply *r = ms_calloc(c->mem, 1, sizeof *r);
  if (!r || ms_u64map_put(&c->replies, m->id, r)) {
    ms_free(c->mem, r);
    ms_enc_error(packer(c), m->id, ms_str_c("INTERNAL_SERVER_ERROR"),
                 ms_str_c("out of memory"), NULL);
    send_out(c);
    return;
  }
  r->c = c;
  r->next = c->reply_list;
  if (c->reply_list)
    c->reply_list->prev = r;
  c->reply_list = r;
  r->mem = c->mem;
  r->id = m->id;
  r->epoch = c->epoch;
  r->refs = 1; /* this frame */
  ms_request_arg a;
  a.id = m->id;
  a.source = source;
  a.event = event;
  a.data = &m->data;
  a.timeout_ms = (int64_t)m->timeout_ms;
  int64_t late = 0;
  ms_map_get_i64(&m->opts, "late_ms", &late);
  a.late_ms = late;
  c->stats.handled++;
  h->fn(c, r, &a, h->ud);
  if (!r->answered && !r->retained && !ms_life_dead(&c->life))
    ms_reply_error(r, "INTERNAL_SERVER_ERROR",
                   "handler returned without replying", NULL, 0);
  else if (!r->answered && !r->retained)
    r->answered = 1; /* client going away: nothing to send */
  reply_unref(r);
  (void)now;
}

static void handle_answer(ms_client *c, const ms_msg *m, int64_t now) {
  creq *r = ms_u64map_get(&c->reqs, m->id);
  if (!r || r->state == CREQ_FAIL) {
    c->stats.unknown_dropped++;
    return;
  }
  int is_err = m->type == MS_MSG_ERROR;
  char code[128] = "", message[512] = "";
  int err = 0;
  if (is_err) {
    size_t n = MS_MIN(m->code.len, sizeof code - 1);
    memcpy(code, m->code.ptr, n);
    code[n] = '\0';
    n = MS_MIN(m->message.len, sizeof message - 1);
    if (n)
      memcpy(message, m->message.ptr, n);
    message[n] = '\0';
    err = ms_err_from_wire(m->code.ptr, m->code.len);
  }
  if (r->state == CREQ_LATE) {
    /* The hub's own REQUEST_TIMEOUT is not an answer. */
    if (err == MS_ERR_REQUEST_TIMEOUT)
      return;
    creq_unlink(c, r);
    int64_t end = r->sent_at + r->timeout_ms + r->late_ms;
    if (now <= end) {
      c->stats.late_delivered++;
      deliver(c, r, r->on_late, r->late_ud, err, is_err ? code : NULL,
              message, is_err ? &m->extra : &m->data, 1, now);
    } else {
      c->stats.late_dropped++;
    }
    creq_free(c, r);
    return;
  }
  if (err == MS_ERR_REQUEST_TIMEOUT) {
    request_timed_out(c, r, now, message, 1);
    return;
  }
  creq_unlink(c, r);
  if (is_err)
    c->stats.errors++;
  else
    c->stats.responses++;
  deliver(c, r, r->cb, r->ud, err, is_err ? code : NULL, message,
          is_err ? &m->extra : &m->data, 0, now);
  creq_free(c, r);
}

static void handle_welcome(ms_client *c, const ms_msg *m, int64_t now) {
  size_t n = MS_MIN(m->hub_id.len, sizeof c->hub_id - 1);
  memcpy(c->hub_id, m->hub_id.ptr, n);
  c->hub_id[n] = '\0';
  int64_t v;
  uint64_t u;
  if (ms_map_get_i64(&m->opts, "heartbeat_ms", &v) == 0 && v > 0)
    c->hub_heartbeat_ms = v;
  if (ms_map_get_u64(&m->opts, "max_message", &u) == 0 && u > 0)
    c->hub_max_message = (size_t)u;
  c->attempts = 0;
  c->hello_deadline = MS_NO_DEADLINE;
  c->state = MS_CLIENT_READY;
  ms_client_diag(c, MS_LEVEL_DEBUG, "registered with hub %s", c->hub_id);
  ms_client_logs_ready(c, now); /* resubscribe, ship what waited */
  if (c->state == MS_CLIENT_READY)
    set_state(c, MS_CLIENT_READY, 0, now);
}

static void on_ws_message(ms_conn *conn, const ms_conn_message_arg *arg,
                          void *ud) {
  ms_client *c = ud;
  if (ms_life_dead(&c->life))
    return; /* deleted: no more callbacks */
  if (conn != c->conn || c->conn_dead)
    return;
  int64_t now = c->last_now;
  ms_msg m;
  ms_decode_error de;
  int rv = ms_wire_decode(c->enc, arg, &c->scratch, &c->zone,
                          MS_DIR_TO_CLIENT, &m, &de);
  if (rv) {
    /* A hub that sends garbage is not one to keep talking to. */
    ms_conn_close(conn, MS_CLOSE_PROTOCOL, de.what);
    conn_lost(c, now, MS_ERR_BAD_MESSAGE);
    return;
  }
  if (c->state == MS_CLIENT_HANDSHAKE && m.type != MS_MSG_WELCOME &&
      !(m.type == MS_MSG_ERROR && m.id == 0) && m.type != MS_MSG_PING) {
    ms_conn_close(conn, MS_CLOSE_PROTOCOL, "message before WELCOME");
    conn_lost(c, now, MS_ERR_PROTO);
    return;
  }
  switch (m.type) {
  case MS_MSG_WELCOME:
    if (c->state == MS_CLIENT_HANDSHAKE)
      handle_welcome(c, &m, now);
    break;
  case MS_MSG_REQUEST:
    handle_request(c, &m, now);
    break;
  case MS_MSG_RESPONSE:
    handle_answer(c, &m, now);
    break;
  case MS_MSG_ERROR:
    if (ms_client_logs_on_msg(c, &m))
      break;
    if (m.id == 0) {
      int err = ms_err_from_wire(m.code.ptr, m.code.len);
      c->session_err = err == MS_ERR_APPLICATION ? MS_ERR_PROTO : err;
      break;
    }
    if (ms_u64map_get(&c->reqs, m.id)) {
      handle_answer(c, &m, now);
      break;
    }
    if (c->on_msg)
      c->on_msg(c, &m, c->on_msg_ud); /* e.g. a refused SUBSCRIBE */
    else
      c->stats.unknown_dropped++;
    break;
  case MS_MSG_CANCEL: {
    ms_reply *r = ms_u64map_del(&c->replies, m.id);
    if (r)
      r->cancelled = 1;
    else
      c->stats.unknown_dropped++;
    break;
  }
  case MS_MSG_PING:
    ms_enc_pong(packer(c), m.id);
    send_out(c);
    break;
  case MS_MSG_PONG:
    ms_client_logs_pong(c, m.id);
    break;
  default:
    if (ms_client_logs_on_msg(c, &m))
      break;
    if (c->on_msg)
      c->on_msg(c, &m, c->on_msg_ud);
    break;
  }
}

static void on_ws_open(ms_conn *conn, const ms_conn_open_arg *arg, void *ud) {
  ms_client *c = ud;
  if (ms_life_dead(&c->life))
    return; /* deleted: no more callbacks */
  if (conn != c->conn)
    return;
  c->enc = arg->encoding;
  /* HELLO: [1, version, service, token, opts] */
  ms_objmap opts;
  ms_objmap_init(&opts);
  ms_objmap_int(&opts, "heartbeat_ms", c->cfg.heartbeat_ms);
  if (c->instance)
    ms_objmap_str(&opts, "instance", c->instance, strlen(c->instance));
  if (c->cfg.watch)
    ms_objmap_true(&opts, "watch");
  int rv = MS_ERR_NOMEM;
  {
    ms_credentials cr;
    memset(&cr, 0, sizeof cr);
    const char *tok = c->token;
    if (c->cfg.credentials) {
      if (c->cfg.credentials(c, &cr, c->ud) == 0)
        tok = cr.token[0] ? cr.token : NULL;
    }
    if (ms_life_dead(&c->life))
      rv = 0; /* deleted from the credentials callback */
    else if (ms_enc_hello(packer(c), ms_str_c(c->service), ms_str_c(tok),
                          &opts.obj) == 0)
      rv = send_out(c);
  }
  if (ms_life_dead(&c->life))
    return;
  if (rv == MS_ERR_NOMEM) {
    /* No HELLO without all of it: give this connection up and retry. */
    ms_conn_close(conn, MS_CLOSE_INTERNAL, "out of memory");
    c->conn_dead = 1;
    conn_lost(c, c->last_now, MS_ERR_NOMEM);
    return;
  }
  c->hello_deadline = c->last_now + MS_HEARTBEAT_MISSES * c->cfg.heartbeat_ms;
}

static void on_ws_pong(ms_conn *conn, const uint8_t *d, size_t n, void *ud) {
  (void)conn, (void)d, (void)n, (void)ud;
}

static void on_ws_close(ms_conn *conn, const ms_conn_close_arg *arg,
                        void *ud) {
  ms_client *c = ud;
  if (ms_life_dead(&c->life))
    return; /* deleted: no more callbacks */
  if (conn != c->conn)
    return;
  c->close_code = arg->code;
  int err = c->session_err;
  if (!err) {
    switch (arg->code) {
    case MS_CLOSE_DUPLICATE: err = MS_ERR_DUPLICATE_SERVICE_REGISTRATION; break;
    case MS_CLOSE_UNAUTHORIZED: err = MS_ERR_UNAUTHORIZED; break;
    case MS_CLOSE_TOKEN_EXPIRED: err = MS_ERR_TOKEN_EXPIRED; break;
    case MS_CLOSE_FORBIDDEN: err = MS_ERR_FORBIDDEN; break;
    case MS_CLOSE_SLOW_CONSUMER: err = MS_ERR_SLOW_CONSUMER; break;
    default: err = arg->err ? arg->err : MS_ERR_CLOSED; break;
    }
  }
  conn_lost(c, c->last_now, err);
}

/* Everything that ends with the connection: requests in flight fail with
 * HUB_UNAVAILABLE, replies are cut off, a reconnect is scheduled. Runs
 * once per connection, from on_close, a heartbeat loss or the transport's
 * ms_client_disconnected, whichever comes first. */
static void conn_lost(ms_client *c, int64_t now, int err) {
  if (c->lost_done)
    return;
  c->lost_done = 1;
  int was_ready = c->state == MS_CLIENT_READY;
  c->hello_deadline = MS_NO_DEADLINE;
  /* Cut off handlers still answering. */
  for (size_t i = 0; i < c->replies.cap; i++)
    if (c->replies.keys && c->replies.keys[i])
      ((ms_reply *)c->replies.vals[i])->cancelled = 1;
  ms_u64map_free(&c->replies);
  /* Requests in flight (and late ones) end now; collect first (in a list
   * through the requests themselves: this path must not need memory),
   * then call back, so callbacks see consistent tables. */
  creq *lost = NULL;
  for (size_t i = 0; i < c->reqs.cap; i++) {
    if (!c->reqs.keys || !c->reqs.keys[i])
      continue;
    creq *r = c->reqs.vals[i];
    if (r->state != CREQ_FAIL) {
      r->lost_next = lost;
      lost = r;
    }
  }
  for (creq *r = lost; r; r = r->lost_next)
    creq_unlink(c, r);
  int fatal = err == MS_ERR_DUPLICATE_SERVICE_REGISTRATION
                  ? !c->cfg.reconnect_on_duplicate
                  : 0;
  if (c->state != MS_CLIENT_STOPPED) {
    if (!c->cfg.reconnect || fatal) {
      c->state = MS_CLIENT_STOPPED;
    } else {
      int64_t base = c->cfg.backoff_min_ms;
      for (unsigned k = 0; k < c->attempts && base < c->cfg.backoff_max_ms; k++)
        base *= 2;
      if (base > c->cfg.backoff_max_ms)
        base = c->cfg.backoff_max_ms;
      /* Full jitter, with a small floor so a refusing hub is not hammered. */
      int64_t delay = c->cfg.backoff_min_ms / 4 +
                      (int64_t)(rng_next(c) % (uint64_t)(base + 1));
      c->reconnect_at = now + delay;
      if (c->attempts < 30)
        c->attempts++;
      c->state = MS_CLIENT_IDLE;
    }
  }
  if (was_ready)
    c->stats.reconnects++;
  ms_client_logs_lost(c);
  if (err == MS_ERR_DUPLICATE_SERVICE_REGISTRATION ||
      err == MS_ERR_UNAUTHORIZED || err == MS_ERR_FORBIDDEN ||
      err == MS_ERR_TOKEN_EXPIRED)
    ms_client_diag(c, MS_LEVEL_ERROR, "hub refused '%s': %s", c->service,
                   ms_strerror(err));
  else if (was_ready)
    ms_client_diag(c, MS_LEVEL_WARN, "connection to the hub lost (%s)%s",
                   ms_strerror(err),
                   c->state == MS_CLIENT_IDLE ? "; reconnecting" : "");
  set_state(c, c->state, err, now);
  while (lost) {
    creq *r = lost;
    lost = r->lost_next;
    if (r->state == CREQ_INFLIGHT)
      deliver(c, r, r->cb, r->ud, MS_ERR_HUB_UNAVAILABLE, NULL,
              "connection to the hub lost", NULL, 0, now);
    creq_free(c, r);
  }
}

/* ---- transport side ---- */

int ms_client_set_endpoint(ms_client *c, const char *host, const char *path) {
  if (!c || !host || !*host)
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  char *h = ms_strndup(c->mem, host, strlen(host));
  char *p = path && *path ? ms_strndup(c->mem, path, strlen(path)) : NULL;
  if (!h || (path && *path && !p)) {
    ms_free(c->mem, h);
    ms_free(c->mem, p);
    return MS_ERR_NOMEM;
  }
  ms_free(c->mem, c->host);
  c->host = h;
  if (p) {
    ms_free(c->mem, c->path);
    c->path = p;
  }
  return 0;
}

void ms_client_stop(ms_client *c, int64_t now) {
  if (ms_life_dead(&c->life))
    return;
  enter(c);
  c->last_now = now;
  c->state = MS_CLIENT_STOPPED;
  if (c->conn && !c->conn_dead)
    ms_conn_close(c->conn, MS_CLOSE_NORMAL, "client stopping");
  else if (!c->conn)
    set_state(c, MS_CLIENT_STOPPED, 0, now);
  leave(c);
}

void ms_client_start(ms_client *c, int64_t now) {
  if (!ms_life_dead(&c->life) && c->state == MS_CLIENT_STOPPED && !c->conn) {
    c->state = MS_CLIENT_IDLE;
    c->reconnect_at = now;
    c->attempts = 0;
    wake(c);
  }
}

int ms_client_want_connect(const ms_client *c, int64_t now) {
  return !ms_life_dead(&c->life) && c->state == MS_CLIENT_IDLE && !c->conn &&
         now >= c->reconnect_at;
}

void ms_client_connecting(ms_client *c, int64_t now) {
  if (ms_life_dead(&c->life))
    return;
  c->last_now = now;
  if (c->state == MS_CLIENT_IDLE)
    c->state = MS_CLIENT_CONNECTING;
}

int ms_client_connected(ms_client *c, int64_t now) {
  if (c->conn || c->state == MS_CLIENT_STOPPED || ms_life_dead(&c->life))
    return MS_ERR_STATE;
  c->last_now = now;
  ms_conn_config cc;
  ms_conn_config_init(&cc, MS_CONN_CLIENT);
  cc.host = c->host;
  cc.path = c->path;
  cc.max_message = c->cfg.max_message;
  cc.offer[0] = c->cfg.encoding;
  cc.offer[1] = MS_ENC_NONE;
  cc.handshake_timeout_ms = MS_HEARTBEAT_MISSES * c->cfg.heartbeat_ms;
  ms_conn_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.on_open = on_ws_open;
  cb.on_message = on_ws_message;
  cb.on_pong = on_ws_pong;
  cb.on_close = on_ws_close;
  int rv = ms_conn_new(&c->conn, &cc, &cb, c, c->mem);
  if (rv)
    return rv;
  c->epoch++;
  c->conn_dead = 0;
  c->lost_done = 0;
  c->session_err = 0;
  c->close_code = 0;
  c->hub_heartbeat_ms = 0;
  c->hub_max_message = 0;
  c->last_rx = now;
  c->last_drain = now;
  c->out_backed = 0;
  c->last_ping = now;
  c->enc = c->cfg.encoding;
  c->hello_deadline = MS_NO_DEADLINE;
  enter(c);
  c->state = MS_CLIENT_HANDSHAKE;
  rv = ms_conn_start(c->conn, now);
  leave(c);
  return rv;
}

void ms_client_disconnected_err(ms_client *c, int64_t now, int err) {
  if (ms_life_dead(&c->life))
    return;
  if (err && !c->session_err && c->conn)
    c->session_err = err;
  ms_client_disconnected(c, now);
}

void ms_client_disconnected(ms_client *c, int64_t now) {
  if (ms_life_dead(&c->life))
    return; /* the delete ends the connection */
  enter(c);
  c->last_now = now;
  if (c->conn) {
    if (!c->lost_done)
      conn_lost(c, now, c->session_err ? c->session_err : MS_ERR_CLOSED);
    ms_conn *old = c->conn;
    c->conn = NULL;
    ms_conn_del(old);
  } else if (c->state == MS_CLIENT_CONNECTING) {
    /* The connect itself failed. */
    c->lost_done = 0;
    conn_lost(c, now, MS_ERR_HUB_UNAVAILABLE);
  }
  c->conn_dead = 0;
  leave(c);
}

int ms_client_feed(ms_client *c, const uint8_t *data, size_t len,
                   int64_t now) {
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  if (!c->conn || c->conn_dead)
    return 0;
  enter(c);
  c->last_now = now;
  if (len)
    c->last_rx = now;
  int rv = ms_conn_feed(c->conn, data, len, now);
  if (leave(c))
    return rv;
  return rv;
}

const uint8_t *ms_client_peek(ms_client *c, size_t *len) {
  if (!c->conn || c->conn_dead || ms_life_dead(&c->life)) {
    *len = 0;
    return NULL;
  }
  return ms_conn_peek(c->conn, len);
}

void ms_client_consume(ms_client *c, size_t n) {
  if (c->conn && !c->conn_dead && !ms_life_dead(&c->life)) {
    ms_conn_consume(c->conn, n);
    /* Taken while backed up: the hub is reading (bytes that fit in the
     * socket's buffer at once prove nothing). */
    if (n && c->out_backed)
      c->last_drain = c->last_now;
    c->out_backed = ms_conn_out_pending(c->conn) > 0;
    if (c->logs && c->state == MS_CLIENT_READY && !ms_client_out_backed_up(c))
      ms_client_logs_drain(c);
  }
}

int ms_client_want_read(const ms_client *c) {
  return c->conn && !c->conn_dead && !ms_life_dead(&c->life) &&
         ms_conn_want_read(c->conn);
}

int ms_client_want_write(const ms_client *c) {
  return c->conn && !c->conn_dead && !ms_life_dead(&c->life) &&
         ms_conn_want_write(c->conn);
}

static void client_eof(void *e, int64_t now) {
  ms_client *c = e;
  if (c->conn && !c->conn_dead && !ms_life_dead(&c->life)) {
    enter(c);
    c->last_now = now;
    ms_conn_eof(c->conn, now);
    leave(c);
  }
}

int64_t ms_client_next_deadline(const ms_client *c) {
  if (ms_life_dead(&c->life))
    return MS_NO_DEADLINE;
  int64_t d = ms_heap_next(&c->timers);
  if (c->state == MS_CLIENT_IDLE && !c->conn && c->reconnect_at < d)
    d = c->reconnect_at;
  if (c->conn && !c->conn_dead) {
    int64_t cd = ms_conn_next_deadline(c->conn);
    if (cd < d)
      d = cd;
    if (c->hello_deadline < d)
      d = c->hello_deadline;
    if (c->state == MS_CLIENT_READY) {
      int64_t hb = heartbeat(c);
      int64_t next = (c->last_rx > c->last_ping ? c->last_rx : c->last_ping) + hb;
      int64_t dead = MS_MAX(c->last_rx, c->last_drain) + MS_HEARTBEAT_MISSES * hb;
      if (next < d)
        d = next;
      if (dead < d)
        d = dead;
    }
  }
  return d;
}

int ms_client_tick(ms_client *c, int64_t now) {
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  enter(c);
  c->last_now = now;
  int rv = 0;
  if (c->conn && !c->conn_dead) {
    rv = ms_conn_tick(c->conn, now);
    if (!ms_life_dead(&c->life) && c->conn && !c->conn_dead) {
      if (c->state == MS_CLIENT_HANDSHAKE && now >= c->hello_deadline) {
        ms_conn_close(c->conn, MS_CLOSE_NORMAL, "no WELCOME");
        c->conn_dead = 1;
        conn_lost(c, now, MS_ERR_TIMEOUT);
      } else if (c->state == MS_CLIENT_READY) {
        int64_t hb = heartbeat(c);
        if (now - MS_MAX(c->last_rx, c->last_drain) >=
            MS_HEARTBEAT_MISSES * hb) {
          /* Three intervals of silence, and not reading what we sent:
           * the hub is gone. Abandon the stream; the transport closes it
           * and we reconnect. (A hub busy reading a backlog of ours
           * answers late, behind it: reading is life, as the hub counts
           * it for its own peers.) */
          c->conn_dead = 1;
          conn_lost(c, now, MS_ERR_TIMEOUT);
        } else if (now - c->last_rx >= hb && now - c->last_ping >= hb) {
          ms_conn_ping(c->conn, (const uint8_t *)"ms", 2);
          c->last_ping = now;
        }
      }
    }
  }
  /* Deadlines: stamp new requests, fail unsendable ones, time out. */
  while (!ms_life_dead(&c->life)) {
    ms_hnode *n = ms_heap_top(&c->timers);
    if (!n || n->deadline > now)
      break;
    creq *r = (creq *)n;
    if (r->state == CREQ_FAIL) {
      creq_unlink(c, r);
      deliver(c, r, r->cb, r->ud, r->fail_err, NULL,
              ms_strerror(r->fail_err), NULL, 0, now);
      creq_free(c, r);
    } else if (r->sent_at == UNSTAMPED) {
      r->sent_at = now;
      ms_heap_update(&c->timers, &r->hn, now + r->timeout_ms);
    } else if (r->state == CREQ_INFLIGHT) {
      request_timed_out(c, r, now, "request timed out", 0);
    } else { /* late window over */
      creq_unlink(c, r);
      if (c->conn && !c->conn_dead && c->state == MS_CLIENT_READY) {
        ms_enc_cancel(packer(c), r->id);
        send_out(c);
      }
      creq_free(c, r);
    }
  }
  leave(c);
  return rv;
}

/* ---- engine ops ---- */

static int e_feed(void *e, const uint8_t *d, size_t n, int64_t now) {
  return ms_client_feed(e, d, n, now);
}
static const uint8_t *e_peek(void *e, size_t *n) { return ms_client_peek(e, n); }
static void e_consume(void *e, size_t n) { ms_client_consume(e, n); }
static int e_want_read(const void *e) { return ms_client_want_read(e); }
static int e_want_write(const void *e) { return ms_client_want_write(e); }

static void e_hold(void *e) { enter(e); }
static int e_release(void *e) { return leave(e); }

const ms_engine_ops ms_client_engine_ops = {
    e_feed,       e_peek,     e_consume, e_want_read,
    e_want_write, client_eof, e_hold,    e_release};
