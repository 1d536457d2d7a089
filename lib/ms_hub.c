/* The hub engine: sessions, registry, routing, liveness (see ms_hub.h). */
#include "ms_hub_int.h"

#include <nettle/hmac.h>

#include <stdio.h>
#include <stdlib.h>

#define LIVE_OFFSET offsetof(ms_hub_conn, live)

static void conn_down(ms_hub *h, ms_hub_conn *hc, const char *reason,
                      int64_t now);
static int do_register(ms_hub *h, ms_hub_conn *hc, int64_t now);
static void update_live(ms_hub *h, ms_hub_conn *hc);

static ms_hub_conn *from_live(ms_hnode *n) {
  return (ms_hub_conn *)(void *)((char *)n - LIVE_OFFSET);
}

/* ---- small helpers ---- */

int64_t ms_hub_wall_us(ms_hub *h, int64_t now) {
  if (h->cfg.wallclock_us)
    return h->cfg.wallclock_us(h->wall_ud ? h->wall_ud : h->ud);
  return now * 1000;
}

const char *ms_hub_source(ms_hub *h, const ms_hub_conn *hc, char *buf,
                          size_t *len) {
  *len = hc->name_len;
  if (!hc->watch || hc->name_len > 128)
    return hc->name;
  const ms_hub_conn *owner =
      ms_strmap_get(&h->registry, hc->name, hc->name_len);
  if (!owner || owner == hc)
    return hc->name;
  memcpy(buf, hc->name, hc->name_len);
  memcpy(buf + hc->name_len, MS_WATCHER_MARK, sizeof MS_WATCHER_MARK);
  *len = hc->name_len + sizeof MS_WATCHER_MARK - 1;
  return buf;
}

msgpack_packer *ms_hub_packer(ms_hub *h) {
  ms_mpbuf_reset(&h->out);
  return &h->pk;
}

static void dirty_unlink(ms_hub *h, ms_hub_conn *hc) {
  if (hc->dirty_prev)
    hc->dirty_prev->dirty_next = hc->dirty_next;
  else
    h->dirty_head = hc->dirty_next;
  if (hc->dirty_next)
    hc->dirty_next->dirty_prev = hc->dirty_prev;
  else
    h->dirty_tail = hc->dirty_prev;
  hc->dirty_next = hc->dirty_prev = NULL;
  hc->in_dirty = 0;
}

static void held_unlink(ms_hub *h, ms_hub_conn *hc) {
  ms_hub_conn *last = h->held[--h->n_held];
  h->held[hc->held_pos] = last;
  last->held_pos = hc->held_pos;
  hc->in_held = 0;
}

/* Into the set of held input, if its feed left some that may be read on
 * (a connection whose output is backed up waits out of it, and comes back
 * when its output drains: ms_hub_conn_consume). */
static void note_held(ms_hub *h, ms_hub_conn *hc) {
  if (hc->in_held || hc->released || !ms_conn_resumable(hc->ws))
    return;
  if (h->n_held == h->held_cap) {
    size_t cap = h->held_cap ? 2 * h->held_cap : 16;
    ms_hub_conn **v = ms_realloc(h->mem, h->held, cap * sizeof *v);
    if (!v) {
      h->held_lost = 1; /* found by a walk over all connections instead */
      return;
    }
    h->held = v;
    h->held_cap = cap;
  }
  hc->in_held = 1;
  hc->held_pos = (uint32_t)h->n_held;
  h->held[h->n_held++] = hc;
}

static void resume_one(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  ms_conn_resume(hc->ws, now);
  if (hc->released)
    return;
  update_live(h, hc);
  ms_hub_mark_dirty(h, hc); /* output, and reading again once drained */
  note_held(h, hc);
}

/* One more share for each connection that was waiting when this began:
 * from the end down, so one put back (at the end) waits for the next
 * call. */
static void resume_held(ms_hub *h, int64_t now) {
  if (h->held_lost) {
    h->held_lost = 0;
    for (ms_hub_conn *hc = h->all; hc; hc = hc->all_next)
      note_held(h, hc);
  }
  for (size_t i = h->n_held; i-- > 0;) {
    if (i >= h->n_held)
      continue; /* the set shrank meanwhile */
    ms_hub_conn *hc = h->held[i];
    held_unlink(h, hc);
    resume_one(h, hc, now);
  }
}

void ms_hub_mark_dirty(ms_hub *h, ms_hub_conn *hc) {
  if (hc->in_dirty || hc->released || hc->sio)
    return; /* (a Socket.IO session marks its streams itself) */
  hc->in_dirty = 1;
  hc->dirty_next = NULL;
  hc->dirty_prev = h->dirty_tail;
  if (h->dirty_tail)
    h->dirty_tail->dirty_next = hc;
  else
    h->dirty_head = hc;
  h->dirty_tail = hc;
  if (h->wakeup && !ms_life_inside(&h->life))
    h->wakeup(h->wakeup_ud);
}

static void event_v(ms_hub *h, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void event_v(ms_hub *h, int level, const char *fmt, va_list ap) {
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  h->cfg.on_event(h, level, buf, h->ud);
}

void ms_hub_event(ms_hub *h, int level, const char *fmt, ...) {
  if (!h->cfg.on_event || ms_life_dead(&h->life))
    return;
  va_list ap;
  va_start(ap, fmt);
  event_v(h, level, fmt, ap);
  va_end(ap);
}

static const char *const evk_name[MS_HUB_EVK_COUNT] = {
    "refused connection", "failed authentication", "TLS failure"};

/* Close kind's window once it is over: say how many lines it held back. */
static void event_window_end(ms_hub *h, int kind, int64_t now) {
  if (!h->evlim[kind].n || now - h->evlim[kind].start < MS_HUB_EV_WINDOW_MS)
    return;
  uint64_t held = h->evlim[kind].held;
  h->evlim[kind].n = 0;
  h->evlim[kind].held = 0;
  if (held)
    ms_hub_event(h, MS_LEVEL_WARN,
                 "%llu more %s line(s) not logged in the last %d s",
                 (unsigned long long)held, evk_name[kind],
                 MS_HUB_EV_WINDOW_MS / 1000);
}

void ms_hub_event_limited(ms_hub *h, int kind, int level, const char *fmt,
                          ...) {
  if (!h->cfg.on_event || ms_life_dead(&h->life))
    return;
  int64_t now = h->last_now;
  event_window_end(h, kind, now);
  if (h->evlim[kind].n >= MS_HUB_EV_LINES) {
    h->evlim[kind].held++;
    h->stats.events_suppressed++;
    return;
  }
  if (h->evlim[kind].n++ == 0)
    h->evlim[kind].start = now;
  va_list ap;
  va_start(ap, fmt);
  event_v(h, level, fmt, ap);
  va_end(ap);
}

static void close_conn(ms_hub *h, ms_hub_conn *hc, uint16_t code,
                       const char *reason, const char *presence_reason,
                       int64_t now) {
  ms_hub_close_conn(h, hc, code, reason, presence_reason, now);
}

void ms_hub_close_conn(ms_hub *h, ms_hub_conn *hc, uint16_t code,
                       const char *reason, const char *presence_reason,
                       int64_t now) {
  if (hc->state == HC_CLOSING || hc->state == HC_GONE)
    return;
  if (hc->sio)
    ms_hub_sio_close(h, hc, code, reason);
  else
    ms_conn_close(hc->ws, code, reason);
  conn_down(h, hc, presence_reason, now);
  if (hc->state != HC_GONE)
    hc->state = HC_CLOSING;
  update_live(h, hc); /* the close handshake's timer */
  ms_hub_mark_dirty(h, hc);
}

size_t ms_hub_conn_out_pending(const ms_hub_conn *hc) {
  return hc->sio ? ms_hub_sio_pending(hc) : ms_conn_out_pending(hc->ws);
}

int ms_hub_send_out(ms_hub *h, ms_hub_conn *hc) {
  if (hc->state == HC_CLOSING || hc->state == HC_GONE || hc->released)
    return MS_ERR_CLOSED;
  if (hc->doomed)
    return MS_ERR_SLOW_CONSUMER;
  if (h->out.failed)
    return MS_ERR_NOMEM; /* never half a message */
  int rv = hc->sio ? ms_hub_sio_send(h, hc)
                   : ms_wire_send(hc->ws, hc->enc,
                                  (const uint8_t *)h->out.sb.data,
                                  h->out.sb.size, &h->scratch,
                                  h->cfg.max_message);
  if (rv == 0)
    h->stats.bytes_out += h->out.sb.size;
  ms_hub_mark_dirty(h, hc);
  if (rv == 0 && ms_hub_conn_out_pending(hc) > h->cfg.out_hard_limit) {
    /* A peer that does not read is not allowed to hold the hub's memory:
     * it is closed (4029; it reconnects and resumes). Not here, though:
     * the caller may be walking a table this connection's end would
     * change. The close happens when the outermost call returns. */
    hc->doomed = 1;
    hc->doom_next = h->doomed;
    h->doomed = hc;
    return MS_ERR_SLOW_CONSUMER;
  }
  return rv;
}

/* Close the slow consumers found during this call (see ms_hub_send_out). */
static void close_doomed(ms_hub *h) {
  while (h->doomed) {
    ms_hub_conn *hc = h->doomed;
    h->doomed = hc->doom_next;
    hc->doom_next = NULL;
    if (hc->released)
      continue;
    ms_hub_event(h, MS_LEVEL_WARN, "closing slow consumer %s (%zu bytes queued)",
              hc->name ? hc->name : "connection", ms_hub_conn_out_pending(hc));
    close_conn(h, hc, MS_CLOSE_SLOW_CONSUMER, "slow consumer", "closed",
               h->last_now);
  }
}

void ms_hub_send_error(ms_hub *h, ms_hub_conn *hc, uint64_t id,
                       const char *code, const char *message,
                       const msgpack_object *data) {
  int e = ms_err_from_wire(code, strlen(code));
  if (e <= -401 && e >= MS_ERR_TOO_MANY_SUBSCRIPTIONS)
    h->stats.errors_by_code[-e - 401]++;
  ms_enc_error(ms_hub_packer(h), id, ms_str_c(code), ms_str_c(message), data);
  ms_hub_send_out(h, hc);
}

/* Session errors: ERROR id 0, then close. */
static void fail_session(ms_hub *h, ms_hub_conn *hc, const char *code,
                         const char *message, uint16_t close_code,
                         int64_t now) {
  ms_hub_fail_session(h, hc, code, message, close_code, now);
}

void ms_hub_fail_session(ms_hub *h, ms_hub_conn *hc, const char *code,
                         const char *message, uint16_t close_code,
                         int64_t now) {
  ms_hub_event(h, MS_LEVEL_INFO, "closing %s: %s (%s)",
            hc->name ? hc->name : "connection", code, message);
  ms_hub_send_error(h, hc, 0, code, message, NULL);
  close_conn(h, hc, close_code, message, "closed", now);
}

/* ---- config / lifecycle ---- */

void ms_hub_config_init(ms_hub_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->heartbeat_ms = 10000;
  cfg->max_message = 1 << 20;
  cfg->max_pending = 1024;
  cfg->default_timeout_ms = 5000;
  cfg->max_timeout_ms = 300000;
  cfg->max_late_ms = 30000;
  cfg->max_connections = 100000;
  cfg->out_high_water = 1 << 20;
  cfg->out_hard_limit = 16 << 20;
  cfg->log_ring = 10000;
  cfg->log_ring_bytes = 64u << 20;
  cfg->sub_queue = 4096;
  cfg->serve_viewer = 1;
  cfg->idle_release_ms = 1000;
  cfg->token_skew_s = 60;
  cfg->max_unauth_per_peer = 64;
  cfg->conn_rate = 50;
  cfg->conn_burst = 200;
  cfg->sio_max_sessions = 10000;
  cfg->max_subscriptions = 64;
  cfg->max_filter_bytes = 64 * 1024;
}

int ms_hub_new(ms_hub **ph, const ms_hub_config *cfg, void *user_data,
               const ms_allocator *mem) {
  if (!ph || !cfg)
    return MS_ERR_INVALID_ARG;
  mem = ms_mem_or_default(mem);
  ms_hub *h = ms_calloc(mem, 1, sizeof *h);
  if (!h)
    return MS_ERR_NOMEM;
  h->mem = mem;
  h->ud = user_data;
  h->cfg = *cfg;
  ms_hub_config *c = &h->cfg;
  if (c->heartbeat_ms <= 0) c->heartbeat_ms = 10000;
  if (!c->max_message) c->max_message = 1 << 20;
  if (!c->max_pending) c->max_pending = 1024;
  if (c->default_timeout_ms <= 0) c->default_timeout_ms = 5000;
  if (c->max_timeout_ms <= 0) c->max_timeout_ms = 300000;
  if (c->max_timeout_ms < c->default_timeout_ms)
    c->max_timeout_ms = c->default_timeout_ms;
  if (c->max_late_ms < 0) c->max_late_ms = 0;
  if (!c->max_connections) c->max_connections = 100000;
  if (!c->out_high_water) c->out_high_water = 1 << 20;
  /* Room for a full message on top of the high-water mark: fan-out checks
   * the mark before sending, so one send never crosses the hard limit. */
  if (c->out_hard_limit < c->out_high_water + 2 * c->max_message)
    c->out_hard_limit = c->out_high_water + 2 * c->max_message;
  if (!c->log_ring) c->log_ring = 10000;
  if (!c->log_ring_bytes) c->log_ring_bytes = 64u << 20;
  if (!c->sub_queue) c->sub_queue = 4096;
  if (c->token_skew_s <= 0) c->token_skew_s = 60;
  if (!c->sio_max_sessions) c->sio_max_sessions = 10000;
  if (!c->max_subscriptions) c->max_subscriptions = 64;
  if (!c->max_filter_bytes) c->max_filter_bytes = 64 * 1024;
  if (c->conn_rate && !c->conn_burst) c->conn_burst = c->conn_rate;
  if (cfg->secret_len) {
    h->secret = ms_malloc(mem, cfg->secret_len);
    if (!h->secret) {
      ms_free(mem, h);
      return MS_ERR_NOMEM;
    }
    memcpy(h->secret, cfg->secret, cfg->secret_len);
    c->secret = h->secret;
  }
  uint64_t rnd[2] = {0, 0};
  int rrv = ms_random(rnd, sizeof rnd);
  if (cfg->hub_id && *cfg->hub_id)
    snprintf(h->hub_id, sizeof h->hub_id, "%s", cfg->hub_id);
  else
    snprintf(h->hub_id, sizeof h->hub_id, "hub-%016llx",
             (unsigned long long)rnd[0]);
  c->hub_id = h->hub_id;
  h->next_hid = 1;
  ms_strmap_init(&h->registry, mem, rnd[1]);
  ms_u64map_init(&h->routes, mem);
  ms_heap_init(&h->timers, mem);
  ms_heap_init(&h->live, mem);
  ms_mpbuf_init(&h->out, mem);
  msgpack_packer_init(&h->pk, &h->out, ms_mpbuf_write);
  ms_mpbuf_init(&h->scratch, mem);
  h->zone_ready = msgpack_zone_init(&h->zone, 4096);
  h->started_at = INT64_MIN;
  if (rrv || !h->zone_ready) {
    ms_hub_del(h);
    return rrv ? rrv : MS_ERR_NOMEM;
  }
  int arv = ms_hub_auth_new(h);
  if (arv) {
    ms_hub_del(h);
    return arv;
  }
  h->resumed_at = INT64_MIN / 2;
  ms_hub_cl_init(h);
  if (ms_hub_streams_new(h) || ms_hub_metrics_new(h)) {
    ms_hub_del(h);
    return MS_ERR_NOMEM;
  }
  *ph = h;
  return 0;
}

/* Output below this asks a streamed HTTP answer for more. */
#define HTTP_LOW_WATER (64 * 1024)

/* The streamed answer is over: its producer frees its state. */
static void http_done(ms_hub *h, ms_hub_conn *hc) {
  if (!hc->http_more)
    return;
  if (hc->http_in_more) {
    hc->http_finished = 1; /* told when more() returns */
    return;
  }
  ms_hub_http_more_fn fn = hc->http_more;
  hc->http_more = NULL;
  fn(h, hc->ws, 1, hc->http_ud);
}

static void http_step(ms_hub *h, ms_hub_conn *hc) {
  hc->http_in_more = 1;
  hc->http_more(h, hc->ws, 0, hc->http_ud);
  hc->http_in_more = 0;
  if (hc->http_finished)
    http_done(h, hc);
  ms_hub_mark_dirty(h, hc);
}

int ms_hub_http_stream(ms_hub *h, ms_conn *c, ms_hub_http_more_fn more,
                       void *stream_data) {
  ms_hub_conn *hc = c ? ms_conn_user_data(c) : NULL;
  if (!h || ms_life_dead(&h->life) || !more || !hc || hc->hub != h ||
      hc->ws != c || hc->state != HC_HTTP || hc->http_more || hc->released)
    return MS_ERR_STATE;
  hc->http_more = more;
  hc->http_ud = stream_data;
  hc->http_finished = 0;
  hc->last_rx = h->last_now; /* write progress from here on */
  ms_heap_update(&h->live, &hc->live, h->last_now + 1);
  ms_hub_mark_dirty(h, hc);
  return 0;
}

static void free_conn(ms_hub *h, ms_hub_conn *hc) {
  http_done(h, hc);
  ms_hub_peer_done(h, hc);
  ms_free(h->mem, hc->peer);
  if (hc->sio)
    ms_hub_sio_free(h, hc);
  ms_conn_del(hc->ws);
  ms_u64map_free(&hc->origin_ids);
  if (hc->sx) {
    ms_u64map_free(&hc->sx->ids);
    ms_free(h->mem, hc->sx);
  }
  ms_free(h->mem, hc->name);
  ms_free(h->mem, hc->instance);
  ms_free(h->mem, hc);
}

static void route_free(ms_hub *h, route *r);

static void hub_free(ms_hub *h);

void ms_hub_del(ms_hub *h) {
  if (h && ms_life_del(&h->life))
    hub_free(h);
}

static void hub_free(ms_hub *h) {
  /* Routes first (they point at connections). */
  for (size_t i = 0; i < h->routes.cap; i++)
    if (h->routes.keys && h->routes.keys[i])
      ms_free(h->mem, h->routes.vals[i]);
  ms_u64map_free(&h->routes);
  while (h->route_pool) {
    route *r = h->route_pool;
    h->route_pool = r->pool_next;
    ms_free(h->mem, r);
  }
  ms_hub_conn *hc = h->all;
  while (hc) {
    ms_hub_conn *next = hc->all_next;
    ms_hub_drop_subs(h, hc);
    free_conn(h, hc);
    hc = next;
  }
  hc = h->graveyard;
  while (hc) {
    ms_hub_conn *next = hc->all_next;
    free_conn(h, hc);
    hc = next;
  }
  ms_hub_streams_del(h);
  ms_hub_metrics_del(h);
  ms_hub_auth_del(h);
  ms_hub_sio_del(h);
  ms_hub_cl_free(h);
  ms_strmap_free(&h->registry);
  ms_heap_free(&h->timers);
  ms_heap_free(&h->live);
  ms_free(h->mem, h->held);
  ms_mpbuf_destroy(&h->out);
  ms_mpbuf_destroy(&h->scratch);
  if (h->zone_ready)
    msgpack_zone_destroy(&h->zone);
  ms_free(h->mem, h->secret);
  ms_free(h->mem, h);
  (void)route_free;
}

void *ms_hub_user_data(const ms_hub *h) { return h->ud; }
const ms_allocator *ms_hub_allocator(const ms_hub *h) {
  return h ? h->mem : ms_default_allocator();
}
const char *ms_hub_id(const ms_hub *h) { return h->hub_id; }

void ms_hub_set_wakeup(ms_hub *h, ms_hub_wakeup_fn fn, void *ud) {
  if (ms_life_dead(&h->life))
    return;
  h->wakeup = fn;
  h->wakeup_ud = ud;
}

static void enter(ms_hub *h) { ms_life_enter(&h->life); }
static int leave(ms_hub *h);
void ms_hub_enter(ms_hub *h) { enter(h); }
int ms_hub_leave(ms_hub *h) { return leave(h); }
/* Returns 1 when the hub was deleted meanwhile and is now freed. */
static int leave(ms_hub *h) {
  if (h->life.depth == 1 && h->doomed && !ms_life_dead(&h->life))
    close_doomed(h); /* still inside: closes may send to others */
  if (ms_life_leave(&h->life)) {
    hub_free(h);
    return 1;
  }
  if (h->life.depth == 0) {
    while (h->graveyard) {
      ms_hub_conn *hc = h->graveyard;
      h->graveyard = hc->all_next;
      free_conn(h, hc);
    }
    /* Output made inside the call, for connections the transport may not
     * be looking at: tell it once. */
    if (h->dirty_head && h->wakeup)
      h->wakeup(h->wakeup_ud);
  }
  return 0;
}

/* ---- routes ---- */

static void route_unlink(ms_hub *h, route *r) {
  ms_u64map_del(&h->routes, r->hid);
  ms_heap_remove(&h->timers, &r->hn);
  ms_hub_conn *o = r->origin;
  route **ohead = o ? &o->out_head : r->opeer ? &r->opeer->in_head : NULL;
  if (o) {
    ms_u64map_del(&o->origin_ids, r->origin_id);
    o->n_out--;
  } else if (r->opeer) {
    ms_u64map_del(&r->opeer->in_ids, r->origin_id);
  }
  if (ohead) {
    if (r->o_prev)
      r->o_prev->o_next = r->o_next;
    else
      *ohead = r->o_next;
    if (r->o_next)
      r->o_next->o_prev = r->o_prev;
  }
  ms_hub_conn *t = r->target;
  route **thead = t ? &t->in_head : r->tpeer ? &r->tpeer->out_head : NULL;
  if (thead) {
    if (r->t_prev)
      r->t_prev->t_next = r->t_next;
    else
      *thead = r->t_next;
    if (r->t_next)
      r->t_next->t_prev = r->t_prev;
  }
  h->stats.pending--;
}

void ms_hub_route_drop(ms_hub *h, route *r) {
  route_unlink(h, r);
  route_free(h, r);
}

static size_t route_room(size_t event_len, size_t tname_len) {
  return event_len + tname_len + 2;
}

/* A zeroed route with room for its event and target name. */
static route *route_alloc(ms_hub *h, size_t event_len, size_t tname_len) {
  size_t room = route_room(event_len, tname_len);
  route *r;
  if (room <= MS_ROUTE_SMALL && h->route_pool) {
    r = h->route_pool;
    h->route_pool = r->pool_next;
    h->route_pool_n--;
    memset(r, 0, sizeof *r);
  } else {
    r = ms_calloc(h->mem, 1,
                  sizeof *r + (room <= MS_ROUTE_SMALL ? MS_ROUTE_SMALL : room));
    if (!r)
      return NULL;
  }
  r->event_len = event_len;
  r->tname_len = tname_len;
  return r;
}

static void route_free(ms_hub *h, route *r) {
  if (route_room(r->event_len, r->tname_len) <= MS_ROUTE_SMALL &&
      h->route_pool_n < MS_ROUTE_POOL_MAX) {
    r->pool_next = h->route_pool;
    h->route_pool = r;
    h->route_pool_n++;
    return;
  }
  ms_free(h->mem, r);
}

static void send_cancel(ms_hub *h, ms_hub_conn *hc, uint64_t id) {
  if (!hc || hc->state != HC_READY)
    return;
  ms_enc_cancel(ms_hub_packer(h), id);
  ms_hub_send_out(h, hc);
}

void ms_hub_send_cancel(ms_hub *h, ms_hub_conn *hc, uint64_t id) {
  send_cancel(h, hc, id);
}

/* The target of a route that ended early learns it: CANCEL to a local
 * connection, or to the hub that holds it. */
static void cancel_target(ms_hub *h, ms_hub_conn *t, hub_peer *tp,
                          uint64_t hid) {
  if (tp)
    ms_hub_cl_cancel(h, tp, hid);
  else
    send_cancel(h, t, hid);
}

void ms_hub_pack_forward(ms_hub *h, route *r, const char *source,
                         size_t source_len, const uint8_t *data,
                         size_t data_len, const msgpack_object *data_obj) {
  /* Forwarded REQUEST: [3, hid, source, event, data, remaining, opts],
   * the data as the bytes that came in (the codec's one REQUEST
   * encoder). */
  ms_objmap opts;
  const msgpack_object *po = NULL;
  if (r->late_ms > 0) {
    ms_objmap_init(&opts);
    ms_objmap_int(&opts, "late_ms", r->late_ms);
    po = &opts.obj;
  }
  ms_enc_request_any(ms_hub_packer(h), r->hid, (ms_str){source, source_len},
                     (ms_str){r->event, r->event_len}, data, data_len,
                     data_obj, (uint64_t)r->timeout_ms, NULL, 0, po);
}

route *ms_hub_route_add(ms_hub *h, ms_hub_conn *origin, hub_peer *opeer,
                        uint64_t origin_id, ms_hub_conn *target,
                        hub_peer *tpeer, ms_str event, ms_str tname,
                        int64_t timeout, int64_t late, int64_t now) {
  uint64_t hid = h->next_hid++;
  if (h->next_hid > MS_MAX_ID)
    h->next_hid = 1;
  route *r = route_alloc(h, event.len, tname.len);
  if (!r)
    return NULL;
  ms_u64map *ids = origin ? &origin->origin_ids : &opeer->in_ids;
  if (ms_u64map_put(&h->routes, hid, r)) {
    route_free(h, r);
    return NULL;
  }
  if (ms_u64map_put(ids, origin_id, r) ||
      ms_heap_push(&h->timers, &r->hn, now + timeout)) {
    ms_u64map_del(&h->routes, hid);
    ms_u64map_del(ids, origin_id);
    route_free(h, r);
    return NULL;
  }
  r->hid = hid;
  r->origin_id = origin_id;
  r->origin = origin;
  r->opeer = opeer;
  r->target = target;
  r->tpeer = tpeer;
  r->deadline = now + timeout;
  r->timeout_ms = timeout;
  r->late_ms = late;
  r->event_len = event.len;
  memcpy(r->event, event.ptr, event.len);
  r->event[event.len] = '\0';
  r->tname_len = tname.len;
  memcpy(r->event + event.len + 1, tname.ptr, tname.len);
  r->event[event.len + 1 + tname.len] = '\0';
  r->rs = target ? ms_hub_route_stats_cached(h, &target->rs_cache,
                                             target->name, target->name_len,
                                             r->event, r->event_len)
                 : ms_hub_route_stats(h, tname.ptr, tname.len, r->event,
                                      r->event_len);
  r->started = now;
  route **ohead = origin ? &origin->out_head : &opeer->in_head;
  r->o_next = *ohead;
  if (*ohead)
    (*ohead)->o_prev = r;
  *ohead = r;
  if (origin)
    origin->n_out++;
  /* (Neither: a cluster lookup of the target is under way.) */
  route **thead = target ? &target->in_head
                  : tpeer ? &tpeer->out_head : NULL;
  if (thead) {
    r->t_next = *thead;
    if (*thead)
      (*thead)->t_prev = r;
    *thead = r;
  }
  h->stats.pending++;
  return r;
}

/* REQUEST from hc. */
static void on_request(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                       int64_t now) {
  if (ms_u64map_get(&hc->origin_ids, m->id)) {
    ms_hub_send_error(h, hc, m->id, "BAD_REQUEST",
                      "request id already in flight", NULL);
    return;
  }
  ms_hub_conn *t = ms_strmap_get(&h->registry, m->name.ptr, m->name.len);
  hub_peer *tp = NULL;
  int unresolved = 0; /* unknown here: the cluster looks the name up */
  if (!t && h->clustered) {
    int rv = ms_hub_cl_locate(h, m->name, &tp);
    if (rv == MS_ERR_CLUSTER_UNAVAILABLE) {
      h->cstats.unavailable++;
      ms_hub_send_error(h, hc, m->id, "CLUSTER_UNAVAILABLE",
                        "the hub cannot reach its cluster", NULL);
      return;
    }
    unresolved = rv != 0;
  }
  if (!tp && !unresolved && (!t || t->state != HC_READY)) {
    char msg[200];
    snprintf(msg, sizeof msg, "no service named '%.*s'", (int)m->name.len,
             m->name.ptr);
    ms_hub_send_error(h, hc, m->id, "TARGET_SERVICE_NOT_FOUND", msg, NULL);
    return;
  }
  if (hc->n_out >= h->cfg.max_pending) {
    ms_hub_send_error(h, hc, m->id, "TOO_MANY_PENDING",
                      "too many requests in flight on this connection", NULL);
    return;
  }
  int64_t timeout = (int64_t)m->timeout_ms;
  if (m->timeout_ms == 0 || m->timeout_ms > INT64_MAX / 4)
    timeout = m->timeout_ms == 0 ? h->cfg.default_timeout_ms
                                 : h->cfg.max_timeout_ms;
  if (timeout > h->cfg.max_timeout_ms)
    timeout = h->cfg.max_timeout_ms;
  int64_t late = 0;
  if (ms_map_get_i64(&m->opts, "late_ms", &late) != 0 || late < 0)
    late = 0;
  if (late > h->cfg.max_late_ms)
    late = h->cfg.max_late_ms;
  if (tp || unresolved) {
    ms_hub_cl_forward(h, hc, m, tp, timeout, late, now);
    return;
  }

  route *r = ms_hub_route_add(h, hc, NULL, m->id, t, NULL, m->event,
                              ms_str_c(""), timeout, late, now);
  if (!r) {
    ms_hub_send_error(h, hc, m->id, "INTERNAL_SERVER_ERROR", "out of memory",
                      NULL);
    return;
  }
  /* The data object is passed on as the bytes that came in. */
  char srcbuf[MS_SOURCE_MAX];
  size_t src_len;
  const char *src = ms_hub_source(h, hc, srcbuf, &src_len);
  ms_hub_pack_forward(h, r, src, src_len, m->data_raw.ptr, m->data_raw.len,
                      &m->data);
  if (h->out.sb.size > h->cfg.max_message) {
    route_unlink(h, r);
    route_free(h, r);
    ms_hub_send_error(h, hc, m->id, "PAYLOAD_TOO_LARGE",
                      "request larger than max_message", NULL);
    return;
  }
  int rv = ms_hub_send_out(h, t);
  if (rv == MS_ERR_TOO_BIG || rv == MS_ERR_NOMEM) {
    /* Larger than max_message in the target's encoding (JSON grows). */
    route_unlink(h, r);
    route_free(h, r);
    ms_hub_send_error(h, hc, m->id, rv == MS_ERR_TOO_BIG
                                        ? "PAYLOAD_TOO_LARGE"
                                        : "INTERNAL_SERVER_ERROR",
                      "request larger than max_message for its target", NULL);
    return;
  }
  h->stats.requests_routed++;
}

/* RESPONSE or ERROR from hc for one of the hub's ids. */
static void on_answer(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                      int64_t now) {
  route *r = ms_u64map_get(&h->routes, m->id);
  if (!r || r->target != hc) {
    /* Not in flight on this connection: dropped and counted. */
    h->stats.late_dropped++;
    return;
  }
  (void)now;
  if (r->opeer) {
    ms_hub_cl_answer(h, r, m);
    return;
  }
  ms_hub_route_answered(h, r, m);
}

void ms_hub_route_answered(ms_hub *h, route *r, const ms_msg *m) {
  ms_hub_conn *o = r->origin;
  uint64_t oid = r->origin_id;
  int late = r->timed_out;
  if (!late)
    ms_hub_route_done(r->rs,
                      m->type == MS_MSG_RESPONSE ? MS_OUTCOME_OK
                                                 : MS_OUTCOME_ERROR,
                      r->started, h->last_now);
  route_unlink(h, r);
  route_free(h, r);
  if (!o || o->state != HC_READY) {
    h->stats.late_dropped++;
    return;
  }
  /* Passed on with the codec's one encoder of each, the data as the
   * bytes that came in. */
  if (m->type == MS_MSG_RESPONSE)
    ms_enc_response_any(ms_hub_packer(h), oid, m->data_raw.ptr,
                        m->data_raw.len, &m->data);
  else
    ms_enc_error_any(ms_hub_packer(h), oid, m->code, m->message,
                     m->extra_raw.ptr, m->extra_raw.len, &m->extra);
  if (h->out.sb.size > h->cfg.max_message) {
    ms_hub_send_error(h, o, oid, "PAYLOAD_TOO_LARGE",
                      "response larger than max_message", NULL);
    return;
  }
  int rv = ms_hub_send_out(h, o);
  if (rv == MS_ERR_TOO_BIG || rv == MS_ERR_NOMEM) {
    /* Too large in the requester's encoding: it still gets an answer. */
    ms_hub_send_error(h, o, oid, rv == MS_ERR_TOO_BIG ? "PAYLOAD_TOO_LARGE"
                                                      : "INTERNAL_SERVER_ERROR",
                      "response larger than max_message for the requester",
                      NULL);
    return;
  }
  if (late)
    h->stats.late_routed++;
  else
    h->stats.responses_routed++;
}

static void on_cancel(ms_hub *h, ms_hub_conn *hc, const ms_msg *m) {
  route *r = ms_u64map_get(&hc->origin_ids, m->id);
  if (!r) {
    h->stats.late_dropped++;
    return;
  }
  ms_hub_conn *t = r->target;
  hub_peer *tp = r->tpeer;
  uint64_t hid = r->hid;
  if (!r->timed_out)
    ms_hub_route_done(r->rs, MS_OUTCOME_CANCELLED, r->started, 0);
  route_unlink(h, r);
  route_free(h, r);
  cancel_target(h, t, tp, hid);
}

static void route_deadline(ms_hub *h, route *r, int64_t now) {
  if (!r->timed_out) {
    ms_hub_route_done(r->rs, MS_OUTCOME_TIMEOUT, r->started, now);
    /* REQUEST_TIMEOUT to the requester, with what was applied. */
    const char *tn = r->target && r->target->name ? r->target->name
                                                   : r->event + r->event_len + 1;
    ms_objmap o;
    ms_objmap_init(&o);
    ms_objmap_str(&o, "target", tn, strlen(tn));
    ms_objmap_str(&o, "event", r->event, r->event_len);
    ms_objmap_int(&o, "timeout_ms", r->timeout_ms);
    const msgpack_object *obj = &o.obj;
    char msg[320];
    snprintf(msg, sizeof msg, "%s did not answer '%s' within %lld ms", tn,
             r->event, (long long)r->timeout_ms);
    if (r->origin)
      ms_hub_send_error(h, r->origin, r->origin_id, "REQUEST_TIMEOUT", msg,
                        obj);
    /* (Sends never close a connection synchronously, so r is intact.) */
    if (r->late_ms > 0) {
      r->timed_out = 1;
      ms_heap_update(&h->timers, &r->hn, r->deadline + r->late_ms);
      return;
    }
  }
  ms_hub_conn *t = r->target;
  hub_peer *tp = r->tpeer;
  uint64_t hid = r->hid;
  route_unlink(h, r);
  route_free(h, r);
  cancel_target(h, t, tp, hid);
}

/* ---- sessions ---- */

void ms_service_token(const uint8_t *secret, size_t secret_len,
                      const char *service, char out[65]) {
  struct hmac_sha256_ctx ctx;
  uint8_t digest[SHA256_DIGEST_SIZE];
  hmac_sha256_set_key(&ctx, secret_len, secret);
  hmac_sha256_update(&ctx, strlen(service), (const uint8_t *)service);
  hmac_sha256_digest(&ctx, sizeof digest, digest);
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < sizeof digest; i++) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 15];
  }
  out[64] = '\0';
}

static void send_welcome(ms_hub *h, ms_hub_conn *hc) {
  ms_objmap o;
  ms_objmap_init(&o);
  ms_objmap_int(&o, "heartbeat_ms", h->cfg.heartbeat_ms);
  ms_objmap_int(&o, "max_message", (int64_t)h->cfg.max_message);
  ms_objmap_int(&o, "max_pending", (int64_t)h->cfg.max_pending);
  ms_objmap_int(&o, "default_timeout_ms", h->cfg.default_timeout_ms);
  ms_objmap_int(&o, "max_timeout_ms", h->cfg.max_timeout_ms);
  ms_objmap_int(&o, "max_late_ms", h->cfg.max_late_ms);
  ms_enc_welcome(ms_hub_packer(h), ms_str_c(h->hub_id), &o.obj);
  ms_hub_send_out(h, hc);
}

int ms_hub_register(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  return do_register(h, hc, now);
}

static int do_register(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  if (ms_strmap_put(&h->registry, hc->name, hc->name_len, hc))
    return MS_ERR_NOMEM;
  hc->registered = 1;
  hc->state = HC_READY;
  ms_hub_peer_done(h, hc);
  hc->ready_at = now;
  h->stats.services++;
  send_welcome(h, hc);
  ms_hub_event(h, MS_LEVEL_INFO, "service %s registered", hc->name);
  ms_hub_presence(h, "up", hc, NULL, now);
  return 0;
}

static void on_hello(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                     int64_t now) {
  hc->name = ms_strndup(h->mem, m->name.ptr, m->name.len);
  if (!hc->name) {
    fail_session(h, hc, "INTERNAL_SERVER_ERROR", "out of memory",
                 MS_CLOSE_INTERNAL, now);
    return;
  }
  hc->name_len = m->name.len;
  ms_str inst;
  if (ms_map_get_str(&m->opts, "instance", &inst) == 0 && inst.len < 256)
    hc->instance = ms_strndup(h->mem, inst.ptr, inst.len);
  if (m->version != MS_PROTOCOL_VERSION) {
    fail_session(h, hc, "UNSUPPORTED_VERSION",
                 "this hub speaks protocol version 1", MS_CLOSE_PROTOCOL, now);
    return;
  }
  int watch = 0;
  if (ms_map_get_bool(&m->opts, "watch", &watch) != 0)
    watch = 0;
  const char *code = "UNAUTHORIZED";
  char why[200];
  int arv = ms_hub_auth_hello(h, hc, m, watch, now, &code, why, sizeof why);
  if (arv) {
    fail_session(h, hc, code, why,
                 arv == MS_ERR_TOKEN_EXPIRED ? MS_CLOSE_TOKEN_EXPIRED
                 : arv == MS_ERR_FORBIDDEN   ? MS_CLOSE_FORBIDDEN
                                             : MS_CLOSE_UNAUTHORIZED,
                 now);
    return;
  }
  if (watch) {
    hc->watch = 1;
    hc->state = HC_READY;
    ms_hub_peer_done(h, hc);
    hc->ready_at = now;
    send_welcome(h, hc);
    return;
  }
  ms_hub_conn *old = ms_strmap_get(&h->registry, hc->name, hc->name_len);
  if (!old && h->clustered) {
    ms_hub_cl_claim(h, hc, now); /* registers when the cluster agrees */
    return;
  }
  if (!old) {
    if (do_register(h, hc, now))
      fail_session(h, hc, "INTERNAL_SERVER_ERROR", "out of memory",
                   MS_CLOSE_INTERNAL, now);
    return;
  }
  if (!h->cfg.replace_stale || old->replace_waiter || old->claiming ||
      old->probe_peer) {
    char msg[200];
    snprintf(msg, sizeof msg, "service '%s' is already registered", hc->name);
    fail_session(h, hc, "DUPLICATE_SERVICE_REGISTRATION", msg,
                 MS_CLOSE_DUPLICATE, now);
    return;
  }
  /* Replace only a stale holder: ping it and give it one interval. */
  hc->state = HC_WAIT_REPLACE;
  hc->replace_target = old;
  old->replace_waiter = hc;
  old->last_rx = MS_MIN(old->last_rx, now - 1);
  if (old->sio)
    ms_hub_sio_ping(h, old);
  else
    ms_conn_ping(old->ws, (const uint8_t *)"replace", 7);
  ms_hub_mark_dirty(h, old);
  ms_heap_update(&h->live, &hc->live, now + h->cfg.heartbeat_ms);
}

/* The old holder showed life: the newcomer is a duplicate after all. */
static void replace_refused(ms_hub *h, ms_hub_conn *old, int64_t now) {
  ms_hub_conn *nw = old->replace_waiter;
  old->replace_waiter = NULL;
  nw->replace_target = NULL;
  char msg[200];
  snprintf(msg, sizeof msg, "service '%s' is already registered", nw->name);
  fail_session(h, nw, "DUPLICATE_SERVICE_REGISTRATION", msg,
               MS_CLOSE_DUPLICATE, now);
}

static void replace_now(ms_hub *h, ms_hub_conn *nw, int64_t now) {
  ms_hub_conn *old = nw->replace_target;
  nw->replace_target = NULL;
  if (old) {
    old->replace_waiter = NULL;
    ms_hub_event(h, MS_LEVEL_INFO, "service %s replaced by a new connection",
              old->name);
    close_conn(h, old, MS_CLOSE_DUPLICATE, "replaced by a new connection",
               "replaced", now);
  }
  if (do_register(h, nw, now))
    fail_session(h, nw, "INTERNAL_SERVER_ERROR", "out of memory",
                 MS_CLOSE_INTERNAL, now);
}

/* Everything that ends with a connection's session. Idempotent. */
static void conn_down(ms_hub *h, ms_hub_conn *hc, const char *reason,
                      int64_t now) {
  if (hc->sio_carried)
    ms_hub_sio_carrier_gone(h, hc);
  if (hc->replace_waiter) {
    /* The old holder went away: the newcomer takes the name. */
    ms_hub_conn *nw = hc->replace_waiter;
    hc->replace_waiter = NULL;
    nw->replace_target = NULL;
    if (hc->registered) {
      ms_strmap_del(&h->registry, hc->name, hc->name_len);
      hc->registered = 0;
      h->stats.services--;
      ms_hub_presence(h, "down", hc, reason, now);
    }
    if (nw->state == HC_WAIT_REPLACE && do_register(h, nw, now))
      fail_session(h, nw, "INTERNAL_SERVER_ERROR", "out of memory",
                   MS_CLOSE_INTERNAL, now);
  }
  if (hc->replace_target) {
    hc->replace_target->replace_waiter = NULL;
    hc->replace_target = NULL;
  }
  if (h->clustered)
    ms_hub_cl_conn_down(h, hc); /* before the name leaves the registry */
  if (hc->registered) {
    ms_strmap_del(&h->registry, hc->name, hc->name_len);
    hc->registered = 0;
    h->stats.services--;
    ms_hub_event(h, MS_LEVEL_INFO, "service %s down (%s)", hc->name, reason);
    ms_hub_presence(h, "down", hc, reason, now);
  }
  /* Requests it was serving: the requesters learn at once. */
  while (hc->in_head) {
    route *r = hc->in_head;
    ms_hub_conn *o = r->origin;
    hub_peer *op = r->opeer;
    uint64_t oid = r->origin_id;
    int timed_out = r->timed_out;
    if (!timed_out)
      ms_hub_route_done(r->rs, MS_OUTCOME_DISCONNECTED, r->started, now);
    route_unlink(h, r);
    route_free(h, r);
    if (!timed_out && ((o && o != hc) || op)) {
      char msg[200];
      snprintf(msg, sizeof msg, "%s disconnected before answering",
               hc->name ? hc->name : "target");
      if (op)
        ms_hub_cl_error(h, op, oid, "TARGET_DISCONNECTED", msg);
      else
        ms_hub_send_error(h, o, oid, "TARGET_DISCONNECTED", msg, NULL);
    }
  }
  /* Requests it sent: the targets may stop working on them. */
  while (hc->out_head) {
    route *r = hc->out_head;
    ms_hub_conn *t = r->target;
    hub_peer *tp = r->tpeer;
    uint64_t hid = r->hid;
    if (!r->timed_out)
      ms_hub_route_done(r->rs, MS_OUTCOME_CANCELLED, r->started, now);
    route_unlink(h, r);
    route_free(h, r);
    if (t != hc)
      cancel_target(h, t, tp, hid);
  }
  ms_hub_drop_subs(h, hc);
}

static void bad_message(ms_hub *h, ms_hub_conn *hc, const ms_decode_error *de,
                        int64_t now) {
  if (de->id_readable && hc->state == HC_READY) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s", de->what[0] ? de->what : "bad field");
    ms_hub_send_error(h, hc, de->id, "BAD_REQUEST", msg, NULL);
    return;
  }
  fail_session(h, hc, "BAD_REQUEST", de->what[0] ? de->what : "bad message",
               MS_CLOSE_PROTOCOL, now);
}

static void on_ws_message(ms_conn *ws, const ms_conn_message_arg *arg,
                          void *ud) {
  ms_hub_conn *hc = ud;
  ms_hub *h = hc->hub;
  (void)ws;
  if (hc->state == HC_CLOSING || hc->state == HC_GONE ||
      ms_life_dead(&h->life))
    return;
  if (hc->eio_ws) {
    ms_hub_sio_ws_message(h, hc, arg);
    return;
  }
  int64_t now = h->last_now;
  ms_msg m;
  ms_decode_error de;
  int rv = ms_wire_decode(hc->enc, arg, &h->scratch, &h->zone, MS_DIR_TO_HUB,
                          &m, &de);
  if (rv == MS_ERR_NOMEM) {
    fail_session(h, hc, "INTERNAL_SERVER_ERROR", "out of memory",
                 MS_CLOSE_INTERNAL, now);
    return;
  }
  if (rv) {
    bad_message(h, hc, &de, now);
    return;
  }
  ms_hub_dispatch(h, hc, &m, now);
}

void ms_hub_dispatch(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                     int64_t now) {
  if (hc->state == HC_AWAIT_HELLO) {
    if (m->type != MS_MSG_HELLO) {
      fail_session(h, hc, "BAD_REQUEST", "the first message must be HELLO",
                   MS_CLOSE_PROTOCOL, now);
      return;
    }
    on_hello(h, hc, m, now);
    update_live(h, hc);
    return;
  }
  if (hc->state == HC_WAIT_REPLACE) {
    if (m->type == MS_MSG_PING) {
      ms_enc_pong(ms_hub_packer(h), m->id);
      ms_hub_send_out(h, hc);
      return;
    }
    fail_session(h, hc, "BAD_REQUEST", "message before WELCOME",
                 MS_CLOSE_PROTOCOL, now);
    return;
  }
  switch (m->type) {
  case MS_MSG_HELLO:
    fail_session(h, hc, "BAD_REQUEST", "second HELLO", MS_CLOSE_PROTOCOL, now);
    break;
  case MS_MSG_REQUEST:
    if (!ms_hub_may(h, hc, MS_SCOPE_SERVICE)) {
      ms_hub_send_error(h, hc, m->id, "FORBIDDEN",
                        "sending requests needs a token with scope service",
                        NULL);
      break;
    }
    on_request(h, hc, m, now);
    break;
  case MS_MSG_RESPONSE:
  case MS_MSG_ERROR:
    on_answer(h, hc, m, now);
    break;
  case MS_MSG_CANCEL:
    on_cancel(h, hc, m);
    break;
  case MS_MSG_LOG:
    if (!ms_hub_may(h, hc, MS_SCOPE_SERVICE)) {
      ms_hub_send_error(h, hc, 0, "FORBIDDEN",
                        "logging needs a token with scope service", NULL);
      break;
    }
    ms_hub_on_log(h, hc, m, now);
    break;
  case MS_MSG_SUBSCRIBE:
    if (!ms_hub_may(h, hc, MS_SCOPE_WATCH)) {
      ms_hub_send_error(h, hc, m->id, "FORBIDDEN",
                        "subscribing needs a token with scope watch", NULL);
      break;
    }
    ms_hub_on_subscribe(h, hc, m, now);
    break;
  case MS_MSG_UNSUBSCRIBE:
    ms_hub_on_unsubscribe(h, hc, m);
    break;
  case MS_MSG_PING:
    ms_enc_pong(ms_hub_packer(h), m->id);
    ms_hub_send_out(h, hc);
    break;
  case MS_MSG_PONG:
    break;
  default: {
    /* The decoder only lets client->hub types through. */
    ms_decode_error d2;
    memset(&d2, 0, sizeof d2);
    snprintf(d2.what, sizeof d2.what, "unexpected message type %d", m->type);
    bad_message(h, hc, &d2, now);
    break;
  }
  }
}

static int on_ws_upgrade(ms_conn *ws, const ms_http_request *req, void *ud) {
  ms_hub_conn *hc = ud;
  (void)ws;
  if (req->path_len == 3 && memcmp(req->path, "/ws", 3) == 0)
    return ms_hub_upgrade_check(hc->hub, hc, req);
  if (ms_hub_sio_is_path(req)) {
    int st = ms_hub_upgrade_check(hc->hub, hc, req);
    return st ? st : ms_hub_sio_upgrade(hc->hub, hc, req);
  }
  return 404;
}

static void on_ws_http(ms_conn *ws, const ms_http_request *req, void *ud) {
  ms_hub_conn *hc = ud;
  if (ms_life_dead(&hc->hub->life))
    return;
  if (ms_hub_sio_is_path(req))
    ms_hub_sio_http(hc->hub, hc, req);
  else
    ms_hub_http(hc->hub, hc, ws, req);
  ms_hub_mark_dirty(hc->hub, hc);
}

static void on_ws_open(ms_conn *ws, const ms_conn_open_arg *arg, void *ud) {
  ms_hub_conn *hc = ud;
  (void)ws;
  if (ms_life_dead(&hc->hub->life))
    return;
  if (hc->eio_ws) {
    /* A Socket.IO WebSocket: no HELLO; its session speaks for it. */
    hc->state = HC_READY;
    ms_hub_sio_ws_open(hc->hub, hc, arg->request);
    ms_hub_mark_dirty(hc->hub, hc);
    return;
  }
  hc->enc = arg->encoding;
  hc->state = HC_AWAIT_HELLO;
  ms_hub_mark_dirty(hc->hub, hc);
}

static void on_ws_close(ms_conn *ws, const ms_conn_close_arg *arg, void *ud) {
  ms_hub_conn *hc = ud;
  ms_hub *h = hc->hub;
  (void)ws;
  if (ms_life_dead(&h->life))
    return;
  const char *reason = "closed";
  (void)arg;
  conn_down(h, hc, reason, h->last_now);
  hc->state = HC_GONE;
  http_done(h, hc);
  ms_hub_mark_dirty(h, hc);
}

/* ---- liveness ---- */

/* The next moment hc needs attention: handshake deadline, the next ping,
 * the heartbeat close, or its WebSocket's own timers. */
static int64_t live_deadline(const ms_hub *h, const ms_hub_conn *hc) {
  int64_t hb = h->cfg.heartbeat_ms;
  int64_t d;
  switch (hc->state) {
  case HC_HTTP:
  case HC_AWAIT_HELLO:
    d = hc->accepted_at + MS_HEARTBEAT_MISSES * hb;
    if (hc->http_more)
      d = ms_conn_out_pending(hc->ws) < HTTP_LOW_WATER
              ? h->last_now + 1
              : hc->last_rx + MS_HEARTBEAT_MISSES * hb;
    break;
  case HC_WAIT_REPLACE:
    d = hc->live.idx ? hc->live.deadline : hc->last_rx + hb;
    break;
  case HC_READY:
    d = hc->last_rx + (int64_t)(hc->pings_sent + 1) * hb;
    if (hc->expires_at < d)
      d = hc->expires_at;
    if (hc->pings_sent >= 2 && d < h->resumed_at + hb)
      d = h->resumed_at + hb;
    if (hc->subs_more && h->last_now + 1 < d)
      d = h->last_now + 1; /* replay work left: continue next tick */
    if (h->cfg.idle_release_ms > 0 && !ms_conn_is_hibernating(hc->ws) &&
        hc->idle_tried_rx != hc->last_rx &&
        hc->last_rx + h->cfg.idle_release_ms < d)
      d = hc->last_rx + h->cfg.idle_release_ms;
    if (hc->probe_peer && hc->probe_deadline < d)
      d = hc->probe_deadline;
    break;
  default:
    d = MS_NO_DEADLINE;
    break;
  }
  int64_t wd = ms_conn_next_deadline(hc->ws);
  return wd < d ? wd : d;
}

static void update_live(ms_hub *h, ms_hub_conn *hc) {
  if (hc->released)
    return;
  if (hc->state == HC_WAIT_REPLACE)
    return; /* its deadline was set when probing began */
  int64_t d = hc->sio ? ms_hub_sio_deadline(h, hc) : live_deadline(h, hc);
  if (d == MS_NO_DEADLINE) {
    ms_heap_remove(&h->live, &hc->live);
    return;
  }
  /* Only ever earlier: a later deadline (traffic moved last_rx on) is
   * found when the earlier one fires, so the hot path costs no heap work
   * per message. */
  if (!hc->live.idx || d < hc->live.deadline)
    ms_heap_update(&h->live, &hc->live, d);
}

void ms_hub_update_live(ms_hub *h, ms_hub_conn *hc) { update_live(h, hc); }

static void live_check(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  int64_t hb = h->cfg.heartbeat_ms;
  if (hc->sio && hc->state != HC_WAIT_REPLACE) {
    ms_hub_sio_live(h, hc, now); /* re-arms its own deadline */
    return;
  }
  ms_conn_tick(hc->ws, now);
  switch (hc->state) {
  case HC_HTTP:
    if (hc->http_more) {
      if (hc->http_took) {
        /* Read since the last check, whenever that was (h->last_now, which
         * stamped it, may be as old as that check). */
        hc->http_took = 0;
        hc->last_rx = now;
      }
      if (ms_conn_out_pending(hc->ws) < HTTP_LOW_WATER) {
        http_step(h, hc);
      } else if (now - hc->last_rx >= MS_HEARTBEAT_MISSES * hb) {
        /* The reader stopped reading: end it, visibly cut. */
        ms_hub_event(h, MS_LEVEL_INFO, "HTTP answer stalled: closing");
        ms_conn_eof(hc->ws, now);
        hc->state = HC_GONE;
        http_done(h, hc);
      }
      break;
    }
    /* fall through */
  case HC_AWAIT_HELLO:
    if (now >= hc->accepted_at + MS_HEARTBEAT_MISSES * hb) {
      if (hc->state == HC_AWAIT_HELLO)
        fail_session(h, hc, "BAD_REQUEST", "no HELLO in time",
                     MS_CLOSE_PROTOCOL, now);
      /* (HTTP stage: the WebSocket engine's own handshake timeout.) */
    }
    break;
  case HC_WAIT_REPLACE:
    if (now >= hc->live.deadline) {
      if (hc->claiming)
        ms_hub_cl_claim_timeout(h, hc, now);
      else
        replace_now(h, hc, now);
    }
    break;
  case HC_READY: {
    if (hc->subs_more)
      ms_hub_subs_drained(h, hc);
    int64_t silent = now - hc->last_rx;
    if (now >= hc->expires_at) {
      ms_hub_event(h, MS_LEVEL_INFO, "%s: token expired",
                hc->name ? hc->name : "connection");
      fail_session(h, hc, "TOKEN_EXPIRED", "the session's token expired",
                   MS_CLOSE_TOKEN_EXPIRED, now);
    } else if (hc->probe_peer && now >= hc->probe_deadline) {
      /* Another hub's newcomer waits for this name: stale, replaced. */
      close_conn(h, hc, MS_CLOSE_DUPLICATE, "replaced by a new connection",
                 "replaced", now);
    } else if (silent >= MS_HEARTBEAT_MISSES * hb &&
               now - h->resumed_at < hb) {
      /* The hub itself was held up: its answers may be unread. */
    } else if (silent >= MS_HEARTBEAT_MISSES * hb) {
      if (!ms_conn_want_read(hc->ws) || hc->reading_paused) {
        /* We stopped reading it: not silence but a slow consumer. */
        close_conn(h, hc, MS_CLOSE_SLOW_CONSUMER, "slow consumer",
                   "closed", now);
      } else {
        ms_hub_event(h, MS_LEVEL_INFO, "%s missed heartbeats",
                  hc->name ? hc->name : "connection");
        close_conn(h, hc, MS_CLOSE_HEARTBEAT, "heartbeat missed",
                   "heartbeat", now);
      }
    } else if (silent >= (int64_t)(hc->pings_sent + 1) * hb &&
               hc->pings_sent < 2) {
      hc->pings_sent++;
      ms_conn_ping(hc->ws, (const uint8_t *)"hb", 2);
      ms_hub_mark_dirty(h, hc);
    } else if (h->cfg.idle_release_ms > 0 &&
               silent >= h->cfg.idle_release_ms &&
               hc->idle_tried_rx != hc->last_rx) {
      /* A quiet connection gives back its WebSocket buffers (once per
       * quiet spell: if it is busy sending, it keeps them). */
      hc->idle_tried_rx = hc->last_rx;
      if (!hc->subs && !ms_conn_is_hibernating(hc->ws) &&
          ms_conn_hibernate(hc->ws) == 0)
        h->stats.hibernations++;
    }
    break;
  }
  default:
    break;
  }
  ms_heap_remove(&h->live, &hc->live);
  update_live(h, hc);
  /* Never due again at this same moment: the tick loop must end. */
  if (hc->live.idx && hc->live.deadline <= now)
    ms_heap_update(&h->live, &hc->live, now + 1);
  ms_hub_mark_dirty(h, hc);
}

/* ---- transport side ---- */

int ms_hub_accept(ms_hub *h, ms_hub_conn **pc, void *tdata, int64_t now) {
  return ms_hub_accept_peer(h, pc, tdata, NULL, 0, now);
}

int ms_hub_accept_peer(ms_hub *h, ms_hub_conn **pc, void *tdata,
                       const char *peer, int secure, int64_t now) {
  if (h->shutting_down || ms_life_dead(&h->life))
    return MS_ERR_STATE;
  if (h->started_at == INT64_MIN)
    h->started_at = now;
  h->last_now = now;
  if (h->stats.connections >= h->cfg.max_connections) {
    h->stats.refused_full++;
    ms_hub_event_limited(h, MS_HUB_EVK_REFUSED, MS_LEVEL_WARN,
                         "refusing a connection from %s: %zu open "
                         "(max-connections)", peer ? peer : "unknown address",
                         h->cfg.max_connections);
    return MS_ERR_LIMIT;
  }
  ms_hub_conn *hc = ms_calloc(h->mem, 1, sizeof *hc);
  if (!hc)
    return MS_ERR_NOMEM;
  hc->hub = h;
  hc->tdata = tdata;
  hc->serial = ++h->next_serial;
  hc->accepted_at = hc->last_rx = now;
  hc->expires_at = MS_NO_DEADLINE;
  hc->secure = secure ? 1 : 0;
  hc->enc = MS_ENC_MSGPACK;
  int prv = ms_hub_peer_add(h, hc, peer, now);
  if (prv) {
    ms_free(h->mem, hc->peer);
    ms_free(h->mem, hc);
    return prv;
  }
  ms_u64map_init(&hc->origin_ids, h->mem);
  ms_conn_config cc;
  ms_conn_config_init(&cc, MS_CONN_SERVER);
  cc.max_message = h->cfg.max_message;
  cc.out_high_water = h->cfg.out_high_water;
  cc.out_low_water = h->cfg.out_high_water / 4;
  cc.handshake_timeout_ms = MS_HEARTBEAT_MISSES * h->cfg.heartbeat_ms;
  cc.message_timeout_ms = MS_HEARTBEAT_MISSES * h->cfg.heartbeat_ms;
  ms_conn_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.on_upgrade = on_ws_upgrade;
  cb.on_http_request = on_ws_http;
  cb.on_open = on_ws_open;
  cb.on_message = on_ws_message;
  cb.on_close = on_ws_close;
  int rv = ms_conn_new(&hc->ws, &cc, &cb, hc, h->mem);
  if (rv == 0)
    ms_conn_set_feed_budget(hc->ws, MS_HUB_FEED_MESSAGES);
  if (rv == 0) {
    rv = ms_conn_start(hc->ws, now);
    if (rv)
      ms_conn_del(hc->ws);
  }
  if (rv) {
    ms_hub_peer_done(h, hc);
    ms_free(h->mem, hc->peer);
    ms_free(h->mem, hc);
    return rv;
  }
  hc->all_next = h->all;
  if (h->all)
    h->all->all_prev = hc;
  h->all = hc;
  h->stats.connections++;
  h->stats.accepted_total++;
  update_live(h, hc);
  *pc = hc;
  return 0;
}

void ms_hub_conn_alive(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  hc->last_rx = now;
  hc->pings_sent = 0;
  if (hc->replace_waiter)
    replace_refused(h, hc, now);
  if (hc->probe_peer)
    ms_hub_cl_probe_alive(h, hc);
}

int ms_hub_conn_feed(ms_hub_conn *hc, const uint8_t *data, size_t len,
                     int64_t now) {
  ms_hub *h = hc->hub;
  if (hc->released || ms_life_dead(&h->life))
    return MS_ERR_STATE;
  enter(h);
  h->last_now = now;
  if (len) {
    h->stats.bytes_in += len;
    ms_hub_conn_alive(h, hc, now);
  }
  if (len && hc->state == HC_HTTP && !hc->secure && !hc->got_bytes &&
      data[0] == 0x16) {
    /* A TLS handshake on a plain port: no HTTP answer can reach it, so
     * end the stream at once rather than let it wait out the deadline. */
    ms_hub_auth_event_tls_on_plain(h, hc);
    ms_conn_eof(hc->ws, now);
    hc->state = HC_GONE;
    ms_hub_mark_dirty(h, hc);
    leave(h);
    return 0;
  }
  hc->got_bytes = 1;
  int rv = ms_conn_feed(hc->ws, data, len, now);
  if (!hc->released) {
    note_held(h, hc);
    update_live(h, hc);
    if (ms_conn_want_write(hc->ws) || !ms_conn_want_read(hc->ws))
      ms_hub_mark_dirty(h, hc);
  }
  leave(h);
  return rv;
}

const uint8_t *ms_hub_conn_peek(ms_hub_conn *hc, size_t *len) {
  if (ms_life_dead(&hc->hub->life)) {
    *len = 0;
    return NULL;
  }
  return ms_conn_peek(hc->ws, len);
}

void ms_hub_conn_consume(ms_hub_conn *hc, size_t n) {
  ms_hub *h = hc->hub;
  if (ms_life_dead(&h->life))
    return;
  size_t avail = 0;
  ms_conn_peek(hc->ws, &avail);
  /* A write after one that found the socket buffer full means the peer
   * acknowledged data: it is reading, so it is alive even if it has had
   * nothing to say (a subscriber busy with a flood). Writes into a buffer
   * with room prove nothing: a dead peer's socket takes those too. */
  if (n && hc->tx_blocked && !hc->released) {
    hc->last_rx = h->last_now;
    hc->pings_sent = 0;
  }
  hc->tx_blocked = n < avail;
  ms_conn_consume(hc->ws, n);
  note_held(h, hc); /* output drained below the mark: held input goes on */
  if (n && hc->http_more && !hc->released) {
    hc->last_rx = h->last_now;
    hc->http_took = 1;
    if (ms_conn_out_pending(hc->ws) < HTTP_LOW_WATER)
      update_live(h, hc);
  }
  if (n && hc->subs && !hc->released &&
      ms_conn_out_pending(hc->ws) < h->cfg.out_high_water / 4) {
    enter(h);
    ms_hub_subs_drained(h, hc);
    update_live(h, hc);
    leave(h);
  }
}

int ms_hub_conn_want_read(const ms_hub_conn *hc) {
  return !ms_life_dead(&hc->hub->life) && ms_conn_want_read(hc->ws);
}

int ms_hub_conn_want_write(const ms_hub_conn *hc) {
  /* Input held for a later turn: not finished, though idle now. */
  return !ms_life_dead(&hc->hub->life) &&
         (ms_conn_want_write(hc->ws) || ms_conn_held(hc->ws) > 0);
}

void ms_hub_conn_stream_failed(ms_hub_conn *hc, const char *why) {
  if (!hc || hc->released || ms_life_dead(&hc->hub->life))
    return;
  ms_hub *h = hc->hub;
  h->stats.tls_failures++;
  ms_hub_event_limited(h, MS_HUB_EVK_TLS, MS_LEVEL_WARN,
                       "TLS stream from %s failed: %s",
                       hc->peer ? hc->peer : "unknown address",
                       why ? why : "unknown reason");
}

void ms_hub_conn_eof(ms_hub_conn *hc, int64_t now) {
  ms_hub *h = hc->hub;
  if (ms_life_dead(&h->life))
    return;
  enter(h);
  h->last_now = now;
  ms_conn_eof(hc->ws, now);
  if (hc->state != HC_GONE) {
    conn_down(h, hc, "closed", now);
    hc->state = HC_GONE;
  }
  ms_hub_mark_dirty(h, hc);
  leave(h);
}

void ms_hub_conn_release(ms_hub_conn *hc) {
  ms_hub *h = hc->hub;
  /* A deleted hub frees every connection itself. */
  if (hc->released || ms_life_dead(&h->life))
    return;
  enter(h);
  if (hc->state != HC_GONE) {
    conn_down(h, hc, "closed", h->last_now);
    hc->state = HC_GONE;
  }
  hc->released = 1;
  if (hc->doomed) { /* out of the list of pending closes */
    ms_hub_conn **pp = &h->doomed;
    while (*pp && *pp != hc)
      pp = &(*pp)->doom_next;
    if (*pp)
      *pp = hc->doom_next;
  }
  ms_heap_remove(&h->live, &hc->live);
  /* Out of the dirty list, in O(1): a shutdown releases every
   * connection while all of them are dirty. */
  if (hc->in_dirty)
    dirty_unlink(h, hc);
  if (hc->in_held)
    held_unlink(h, hc);
  if (hc->all_prev)
    hc->all_prev->all_next = hc->all_next;
  else
    h->all = hc->all_next;
  if (hc->all_next)
    hc->all_next->all_prev = hc->all_prev;
  if (!hc->sio)
    h->stats.connections--;
  hc->all_next = h->graveyard;
  h->graveyard = hc;
  leave(h);
}

void *ms_hub_conn_transport_data(const ms_hub_conn *hc) { return hc->tdata; }

const char *ms_hub_conn_service(const ms_hub_conn *hc) {
  return hc->registered ? hc->name : NULL;
}

ms_hub_conn *ms_hub_next_dirty(ms_hub *h) {
  if (ms_life_dead(&h->life))
    return NULL;
  ms_hub_conn *hc = h->dirty_head;
  if (hc)
    dirty_unlink(h, hc);
  return hc;
}

int64_t ms_hub_next_deadline(const ms_hub *h) {
  if (ms_life_dead(&h->life))
    return MS_NO_DEADLINE;
  int64_t a = ms_heap_next(&h->timers), b = ms_heap_next(&h->live);
  if (b < a)
    a = b;
  if ((h->n_held || h->held_lost) && h->last_now + 1 < a)
    a = h->last_now + 1; /* held input, for transports that only tick */
  /* The line that reports held-back events at the end of their window. */
  for (int k = 0; k < MS_HUB_EVK_COUNT; k++)
    if (h->evlim[k].held && h->evlim[k].start + MS_HUB_EV_WINDOW_MS < a)
      a = h->evlim[k].start + MS_HUB_EV_WINDOW_MS;
  return a;
}

int ms_hub_resume_input(ms_hub *h, int64_t now) {
  if (!h || ms_life_dead(&h->life))
    return 0;
  enter(h);
  h->last_now = now;
  resume_held(h, now);
  int more = h->n_held > 0 || h->held_lost;
  leave(h);
  return more;
}

int ms_hub_tick(ms_hub *h, int64_t now) {
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  enter(h);
  int64_t due = ms_hub_next_deadline(h);
  int64_t late = MS_MAX(h->cfg.heartbeat_ms / 4, (int64_t)250);
  if (due != MS_NO_DEADLINE && now - due > late)
    h->resumed_at = now;
  h->last_now = now;
  if (h->started_at == INT64_MIN)
    h->started_at = now;
  for (;;) {
    ms_hnode *n = ms_heap_top(&h->timers);
    if (!n || n->deadline > now)
      break;
    route_deadline(h, (route *)n, now);
  }
  for (;;) {
    ms_hnode *n = ms_heap_top(&h->live);
    if (!n || n->deadline > now)
      break;
    live_check(h, from_live(n), now);
  }
  for (int k = 0; k < MS_HUB_EVK_COUNT; k++)
    event_window_end(h, k, now);
  resume_held(h, now);
  leave(h);
  return 0;
}

void ms_hub_shutdown(ms_hub *h, int64_t now) {
  if (ms_life_dead(&h->life))
    return;
  enter(h);
  h->last_now = now;
  h->shutting_down = 1;
  for (ms_hub_conn *hc = h->all; hc; hc = hc->all_next) {
    if (hc->state == HC_HTTP) {
      ms_conn_eof(hc->ws, now);
      hc->state = HC_GONE;
      ms_hub_mark_dirty(h, hc);
    } else {
      close_conn(h, hc, MS_CLOSE_SHUTDOWN, "hub shutting down", "shutdown",
                 now);
    }
  }
  leave(h);
}

void ms_hub_get_stats(const ms_hub *h, ms_hub_stats *st) { *st = h->stats; }

/* ---- engine ops ---- */

static int e_feed(void *e, const uint8_t *d, size_t n, int64_t now) {
  return ms_hub_conn_feed(e, d, n, now);
}
static const uint8_t *e_peek(void *e, size_t *n) {
  return ms_hub_conn_peek(e, n);
}
static void e_consume(void *e, size_t n) { ms_hub_conn_consume(e, n); }
static int e_want_read(const void *e) { return ms_hub_conn_want_read(e); }
static int e_want_write(const void *e) { return ms_hub_conn_want_write(e); }
static void e_eof(void *e, int64_t now) { ms_hub_conn_eof(e, now); }

/* Holding a hub connection holds its hub: the connection goes with it. */
static void e_hold(void *e) { enter(((ms_hub_conn *)e)->hub); }
static int e_release(void *e) {
  ms_hub_conn *hc = e;
  ms_hub *h = hc->hub;
  /* A connection released meanwhile is freed at the hub's outermost
   * leave, with the graveyard. */
  int gone = hc->released && h->life.depth == 1;
  return leave(h) || gone;
}

const ms_engine_ops ms_hub_conn_engine_ops = {
    e_feed,       e_peek, e_consume, e_want_read,
    e_want_write, e_eof,  e_hold,    e_release};
