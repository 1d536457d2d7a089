/*
 * microstream: the Redis side of a clustered hub (see ms_cluster.h and
 * PROTOCOL.md "Cluster"). hiredis async contexts run on the hub's loop
 * through the driver core's watch hooks: this file is the hiredis adapter
 * and the cluster protocol over it.
 *
 * Redis layout (P = prefix):
 *   P:svc:NAME    hub id holding NAME, PX lease, renewed by that hub
 *   P:alive:HUB   set by each hub at every renewal, PX lease
 *   P:logs, P:presence      streams (XADD MAXLEN ~), ids 0-SEQ
 *   P:seq:logs, P:seq:presence   the streams' cluster-wide seq counters
 *   P:hub:HUB     pub/sub channel of one hub: messages for it
 *   P:all         pub/sub channel of every hub: claims, releases,
 *                 heartbeats, goodbyes, new records
 *
 * Two connections: one for commands (pipelined: hiredis writes all that
 * was queued during a loop iteration in one write), one subscribed.
 * Hub-to-hub messages queued during an iteration leave in one PUBLISH per
 * destination hub at its end.
 */
#include "ms_internal.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "ms_drv_cluster.h"

#define PREFIX_MAX 64
#define HUB_ID_MAX 64
/* Records kept for Redis while it is unreachable, per stream. */
#define OUTBOX_RECORDS 10000
/* Live records held while the history since the last one is read. */
#define SYNC_HOLD 20000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 3000

/* ---- a small string map (chained) ---- */

typedef struct sent {
  struct sent *next;
  uint64_t hash;
  size_t len;
  void *val;
  char key[];
} sent;

typedef struct smap {
  sent **b;
  size_t nb, n;
} smap;

static uint64_t shash(const char *s, size_t n) {
  uint64_t h = UINT64_C(1469598103934665603);
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)s[i]) * UINT64_C(1099511628211);
  return h;
}

static sent **sfind(smap *m, const char *k, size_t n, uint64_t h) {
  if (!m->nb)
    return NULL;
  sent **pp = &m->b[h & (m->nb - 1)];
  while (*pp && !((*pp)->hash == h && (*pp)->len == n &&
                  memcmp((*pp)->key, k, n) == 0))
    pp = &(*pp)->next;
  return pp;
}

static void *sget(smap *m, const char *k, size_t n) {
  sent **pp = sfind(m, k, n, shash(k, n));
  return pp && *pp ? (*pp)->val : NULL;
}

static int sput(smap *m, const char *k, size_t n, void *val) {
  uint64_t h = shash(k, n);
  sent **pp = sfind(m, k, n, h);
  if (pp && *pp) {
    (*pp)->val = val;
    return 0;
  }
  if (m->n + 1 > m->nb) { /* grow: load factor 1 */
    size_t nb = m->nb ? m->nb * 2 : 16;
    sent **b = calloc(nb, sizeof *b);
    if (!b)
      return MS_ERR_NOMEM;
    for (size_t i = 0; i < m->nb; i++) {
      sent *e = m->b[i];
      while (e) {
        sent *nx = e->next;
        e->next = b[e->hash & (nb - 1)];
        b[e->hash & (nb - 1)] = e;
        e = nx;
      }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
  }
  sent *e = malloc(sizeof *e + n + 1);
  if (!e)
    return MS_ERR_NOMEM;
  e->hash = h;
  e->len = n;
  e->val = val;
  memcpy(e->key, k, n);
  e->key[n] = '\0';
  e->next = m->b[h & (m->nb - 1)];
  m->b[h & (m->nb - 1)] = e;
  m->n++;
  return 0;
}

static void *sdel(smap *m, const char *k, size_t n) {
  sent **pp = sfind(m, k, n, shash(k, n));
  if (!pp || !*pp)
    return NULL;
  sent *e = *pp;
  void *v = e->val;
  *pp = e->next;
  free(e);
  m->n--;
  return v;
}

/* Visit every entry; fn may delete the entry it is given. */
static void seach(smap *m, void (*fn)(void *ud, sent *e), void *ud) {
  for (size_t i = 0; i < m->nb; i++) {
    sent *e = m->b[i];
    while (e) {
      sent *nx = e->next;
      fn(ud, e);
      e = nx;
    }
  }
}

static void sclear(smap *m, void (*free_val)(void *)) {
  for (size_t i = 0; i < m->nb; i++) {
    sent *e = m->b[i];
    while (e) {
      sent *nx = e->next;
      if (free_val)
        free_val(e->val);
      free(e);
      e = nx;
    }
    m->b[i] = NULL;
  }
  m->n = 0;
}

static void sfree(smap *m, void (*free_val)(void *)) {
  sclear(m, free_val);
  free(m->b);
  m->b = NULL;
  m->nb = 0;
}

/* ---- byte buffer ---- */

typedef struct bbuf {
  char *p;
  size_t n, cap;
} bbuf;

static int badd(bbuf *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
      return MS_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
  return 0;
}

/* ---- state ---- */

/* Another hub, seen through its heartbeats. */
typedef struct peer {
  int64_t last_seen;
  bbuf out;    /* frames queued for it: [u32 len][message]... */
  int dirty;   /* in the flush list */
  struct peer *flush_next;
  char id[];
} peer;

/* A name in the registry replica: who holds it. */
typedef struct reg {
  char hub[HUB_ID_MAX];
} reg;

/* A record waiting to be appended to a stream. */
typedef struct orec {
  struct orec *next;
  size_t len;
  uint8_t data[];
} orec;

/* A live record that arrived while the history was being read. */
typedef struct hrec {
  struct hrec *next;
  uint64_t seq;
  size_t len;
  uint8_t data[];
} hrec;

typedef struct claim_ctx {
  struct ms_rcl *c;
  uint64_t tag;
  unsigned gen;
  size_t len;
  char name[];
} claim_ctx;

/* A claim answered without Redis (cluster down): delivered at flush,
 * never from inside the engine's hook. */
typedef struct early {
  struct early *next;
  uint64_t tag;
  int result;
} early;

typedef struct rconn {
  ms_drv_io io;
  redisAsyncContext *ac;
  struct ms_rcl *c;
  unsigned ev;
  int connected;
} rconn;

enum { ST_DOWN = 0, ST_CONNECTING, ST_UP };

struct ms_rcl {
  ms_drv *d;
  ms_hub *h;
  char host[256];
  int port;
  int db;
  char *password;
  char prefix[PREFIX_MAX];
  char me[HUB_ID_MAX];
  int64_t lease_ms;
  size_t stream_max;
  char ch_me[PREFIX_MAX + HUB_ID_MAX + 8];
  char ch_all[PREFIX_MAX + 8];

  int state;
  unsigned gen;          /* connection generation: stale replies ignored */
  int closing;           /* being deleted: callbacks do nothing */
  int leaving;
  rconn cmd, sub;
  int sub_ready, reg_ready;
  int sync_pending[2];   /* history reads outstanding per stream */
  hrec *hold_head[2], *hold_tail[2];
  size_t hold_n[2];
  int64_t next_try, backoff, connect_deadline;
  int64_t next_renew;
  size_t pending;        /* replies outstanding */

  smap peers;            /* hub id -> peer */
  smap registry;         /* name -> reg (replica of P:svc:*) */
  smap held;             /* names held here -> (void*)1 */
  smap claiming;         /* name -> (uintptr_t) claims in flight */
  peer *flush_head;
  early *early_head;
  orec *out_head[2], *out_tail[2];
  size_t out_n[2];
  ms_cluster_stats st;
  int64_t last_tick;
};

static const char *const stream_names[2] = {"logs", "presence"};

static int64_t now_of(ms_rcl *c) { return ms_drv_now(c->d); }

/* ---- Lua ---- */

/* KEYS[1] svc key. ARGV: hub, lease, force, alive prefix, channel, name */
static const char LUA_CLAIM[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur and cur ~= ARGV[1] then\n"
    "  if ARGV[3] ~= '1' or redis.call('EXISTS', ARGV[4] .. cur) == 1 then\n"
    "    return {0, cur}\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "if cur ~= ARGV[1] then\n"
    "  redis.call('PUBLISH', ARGV[5], '+' .. ARGV[1] .. ' ' .. ARGV[6])\n"
    "end\n"
    "return {1, ARGV[1]}\n";

/* KEYS[1] svc key. ARGV: hub, channel, name */
static const char LUA_RELEASE[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('PUBLISH', ARGV[2], '-' .. ARGV[1] .. ' ' .. ARGV[3])\n"
    "end\n"
    "return 1\n";

/* ARGV: hub, lease, prefix, channel, names... Renews the hub's liveness
 * and its names (re-asserting those Redis lost), announces the hub, and
 * returns the names now held by another hub. */
static const char LUA_RENEW[] =
    "redis.call('SET', ARGV[3] .. 'alive:' .. ARGV[1], '1', 'PX', ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[4], 'H' .. ARGV[1])\n"
    "local lost = {}\n"
    "for i = 5, #ARGV do\n"
    "  local k = ARGV[3] .. 'svc:' .. ARGV[i]\n"
    "  local cur = redis.call('GET', k)\n"
    "  if cur == ARGV[1] then\n"
    "    redis.call('PEXPIRE', k, ARGV[2])\n"
    "  elseif not cur then\n"
    "    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])\n"
    "    redis.call('PUBLISH', ARGV[4], '+' .. ARGV[1] .. ' ' .. ARGV[i])\n"
    "  else\n"
    "    lost[#lost + 1] = ARGV[i]\n"
    "  end\n"
    "end\n"
    "return lost\n";

/* ARGV: prefix. The registry: name, hub, name, hub... */
static const char LUA_DUMP[] =
    "local out = {}\n"
    "local n = #ARGV[1] + 5\n"
    "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. 'svc:*')) do\n"
    "  local v = redis.call('GET', k)\n"
    "  if v then\n"
    "    out[#out + 1] = string.sub(k, n)\n"
    "    out[#out + 1] = v\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS[1] seq key, KEYS[2] stream. ARGV[1] this hub's last seq. The
 * counter never goes below what any hub has seen nor below the stream's
 * last id, so seq keeps growing across a Redis restart. */
static const char LUA_SEQ_FLOOR[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local floor = tonumber(ARGV[1])\n"
    "local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
    "if last[1] then\n"
    "  local s = tonumber(string.match(last[1][1], '-(%d+)$'))\n"
    "  if s and s > floor then floor = s end\n"
    "end\n"
    "if cur < floor then redis.call('SET', KEYS[1], floor) end\n"
    "return 1\n";

/* KEYS[1] seq key, KEYS[2] stream. ARGV: maxlen, channel, stream digit,
 * records... Each record gets the next seq, goes into the stream and to
 * every hub. */
static const char LUA_APPEND[] =
    "for i = 4, #ARGV do\n"
    "  local seq = redis.call('INCR', KEYS[1])\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. seq,\n"
    "             'r', ARGV[i])\n"
    "  redis.call('PUBLISH', ARGV[2], 'R' .. ARGV[3] .. seq .. ' ' .. ARGV[i])\n"
    "end\n"
    "return #ARGV - 3\n";

/* ---- hiredis adapter: an async context on the driver's watch hooks ---- */

static void rc_ready(ms_drv_io *io, unsigned events) {
  rconn *r = (rconn *)io;
  /* Either call may free the context (disconnect): re-check. */
  if ((events & MS_DRV_READ) && r->ac)
    redisAsyncHandleRead(r->ac);
  if ((events & MS_DRV_WRITE) && r->ac)
    redisAsyncHandleWrite(r->ac);
}

static void rc_update(rconn *r) {
  if (r->io.fd >= 0)
    ms_drv_watch(r->c->d, &r->io, r->ev);
}
static void ev_add_read(void *p) {
  rconn *r = p;
  r->ev |= MS_DRV_READ;
  rc_update(r);
}
static void ev_del_read(void *p) {
  rconn *r = p;
  r->ev &= ~(unsigned)MS_DRV_READ;
  rc_update(r);
}
static void ev_add_write(void *p) {
  rconn *r = p;
  r->ev |= MS_DRV_WRITE;
  rc_update(r);
}
static void ev_del_write(void *p) {
  rconn *r = p;
  r->ev &= ~(unsigned)MS_DRV_WRITE;
  rc_update(r);
}
/* hiredis frees the context (and then closes the fd). */
static void ev_cleanup(void *p) {
  rconn *r = p;
  if (r->io.fd >= 0)
    ms_drv_unwatch(r->c->d, &r->io);
  r->ev = 0;
  r->ac = NULL;
  r->connected = 0;
}

static void go_down(ms_rcl *c, const char *why);

static void on_connect(const redisAsyncContext *ac, int status) {
  rconn *r = ac->data;
  if (!r || r->c->closing)
    return;
  if (status != REDIS_OK) {
    r->ac = NULL; /* hiredis frees it after this call */
    r->io.fd = -1;
    go_down(r->c, "connect failed");
    return;
  }
  r->connected = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  rconn *r = ac->data;
  (void)status;
  if (!r)
    return;
  r->ac = NULL;
  r->connected = 0;
  if (!r->c->closing)
    go_down(r->c, "connection lost");
}

static int rc_open(ms_rcl *c, rconn *r) {
  memset(r, 0, sizeof *r);
  r->c = c;
  r->io.fd = -1;
  redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
  if (!ac)
    return MS_ERR_NOMEM;
  if (ac->err) {
    redisAsyncFree(ac);
    return MS_ERR_IO;
  }
  r->ac = ac;
  ac->data = r;
  ms_drv_io_setup(&r->io, c->d, ac->c.fd, rc_ready);
  ac->ev.data = r;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  redisAsyncSetConnectCallback(ac, on_connect); /* watches for writable */
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  return 0;
}

/* Free a context from outside its callbacks; its pending callbacks run
 * with no reply and see c->gen moved on. */
static void rc_close(rconn *r) {
  redisAsyncContext *ac = r->ac;
  if (!ac)
    return;
  r->ac = NULL;
  ac->data = NULL;
  redisAsyncFree(ac);
  if (r->io.fd >= 0)
    ms_drv_unwatch(r->c->d, &r->io);
}

/* ---- commands ---- */

typedef void (*reply_fn)(ms_rcl *c, redisReply *rep, void *priv);

typedef struct cmd_ctx {
  ms_rcl *c;
  unsigned gen;
  reply_fn fn;
  void *priv;
} cmd_ctx;

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  cmd_ctx *x = privdata;
  (void)ac;
  ms_rcl *c = x->c;
  redisReply *rep = reply;
  if (c->pending)
    c->pending--;
  if (rep)
    c->st.redis_replies++;
  if (rep && rep->type == REDIS_REPLY_ERROR)
    c->st.redis_errors++;
  int live = !c->closing && x->gen == c->gen;
  if (x->fn)
    x->fn(live ? c : NULL, live ? rep : NULL, x->priv);
  free(x);
}

/* Queue a command; fn is called exactly once (c NULL if the connection
 * it was sent on is gone, rep NULL if no reply came). */
static int command(ms_rcl *c, int argc, const char **argv,
                   const size_t *lens, reply_fn fn, void *priv) {
  if (!c->cmd.ac)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  cmd_ctx *x = malloc(sizeof *x);
  if (!x)
    return MS_ERR_NOMEM;
  x->c = c;
  x->gen = c->gen;
  x->fn = fn;
  x->priv = priv;
  if (redisAsyncCommandArgv(c->cmd.ac, on_reply, x, argc, argv, lens) !=
      REDIS_OK) {
    free(x);
    return MS_ERR_CLUSTER_UNAVAILABLE;
  }
  c->pending++;
  c->st.redis_commands++;
  return 0;
}

/* ---- peers and the registry replica ---- */

static peer *peer_get(ms_rcl *c, const char *id, size_t n, int create) {
  peer *p = sget(&c->peers, id, n);
  if (p || !create || n == 0 || n >= HUB_ID_MAX)
    return p;
  p = calloc(1, sizeof *p + n + 1);
  if (!p)
    return NULL;
  memcpy(p->id, id, n);
  p->last_seen = now_of(c);
  if (sput(&c->peers, id, n, p)) {
    free(p);
    return NULL;
  }
  c->st.hubs = c->peers.n;
  return p;
}

static void peer_free(void *v) {
  peer *p = v;
  free(p->out.p);
  free(p);
}

struct drop_ctx {
  ms_rcl *c;
  const char *hub;
};
static void drop_names_of(void *ud, sent *e) {
  struct drop_ctx *x = ud;
  reg *g = e->val;
  if (strcmp(g->hub, x->hub) == 0)
    free(sdel(&x->c->registry, e->key, e->len));
}

/* A hub is gone: its names leave the replica and its requests fail. */
static void peer_gone(ms_rcl *c, peer *p) {
  struct drop_ctx x = {c, p->id};
  seach(&c->registry, drop_names_of, &x);
  c->st.services = c->registry.n;
  /* Out of the flush list first. */
  for (peer **pp = &c->flush_head; *pp; pp = &(*pp)->flush_next)
    if (*pp == p) {
      *pp = p->flush_next;
      break;
    }
  char id[HUB_ID_MAX];
  snprintf(id, sizeof id, "%s", p->id);
  sdel(&c->peers, p->id, strlen(p->id));
  peer_free(p);
  c->st.hubs = c->peers.n;
  ms_hub_cluster_hub_down(c->h, id, MS_ERR_TARGET_DISCONNECTED, now_of(c));
}

static void reg_set(ms_rcl *c, const char *name, size_t n, const char *hub,
                    size_t hn) {
  if (hn == 0 || hn >= HUB_ID_MAX)
    return;
  reg *g = sget(&c->registry, name, n);
  if (!g) {
    g = malloc(sizeof *g);
    if (!g || sput(&c->registry, name, n, g)) {
      free(g);
      return;
    }
  }
  memcpy(g->hub, hub, hn);
  g->hub[hn] = '\0';
  c->st.services = c->registry.n;
  if (hn != strlen(c->me) || memcmp(hub, c->me, hn) != 0) {
    peer *p = peer_get(c, hub, hn, 1);
    if (p)
      p->last_seen = now_of(c);
  }
}

static void reg_del(ms_rcl *c, const char *name, size_t n, const char *hub,
                    size_t hn) {
  reg *g = sget(&c->registry, name, n);
  if (g && strlen(g->hub) == hn && memcmp(g->hub, hub, hn) == 0)
    free(sdel(&c->registry, name, n));
  c->st.services = c->registry.n;
}

/* ---- going up and down ---- */

static void flush_records(ms_rcl *c);

static void check_up(ms_rcl *c) {
  if (c->state != ST_CONNECTING || !c->sub_ready || !c->reg_ready ||
      c->sync_pending[0] || c->sync_pending[1])
    return;
  c->state = ST_UP;
  c->backoff = 0;
  c->next_renew = now_of(c); /* re-assert the leases at once */
  ms_drv_want_flush(c->d);
}

static void hold_clear(ms_rcl *c, int s) {
  while (c->hold_head[s]) {
    hrec *x = c->hold_head[s];
    c->hold_head[s] = x->next;
    free(x);
  }
  c->hold_tail[s] = NULL;
  c->hold_n[s] = 0;
}

static void go_down(ms_rcl *c, const char *why) {
  (void)why;
  if (c->state == ST_DOWN)
    return;
  int was_up = c->state == ST_UP;
  c->state = ST_DOWN;
  c->gen++;
  c->st.disconnects++;
  c->sub_ready = c->reg_ready = 0;
  c->sync_pending[0] = c->sync_pending[1] = 0;
  hold_clear(c, 0);
  hold_clear(c, 1);
  rc_close(&c->cmd);
  rc_close(&c->sub);
  c->pending = 0;
  /* Nothing is known about the others until Redis is back. */
  sclear(&c->registry, free);
  c->st.services = 0;
  c->flush_head = NULL;
  sclear(&c->peers, peer_free);
  c->st.hubs = 0;
  int64_t now = now_of(c);
  if (!c->backoff)
    c->backoff = BACKOFF_MIN_MS;
  else
    c->backoff = MS_MIN(c->backoff * 2, BACKOFF_MAX_MS);
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
    r = (uint32_t)now;
  c->next_try = now + c->backoff / 2 + (int64_t)(r % (uint32_t)(c->backoff / 2 + 1));
  if (was_up)
    ms_hub_cluster_hub_down(c->h, NULL, MS_ERR_CLUSTER_UNAVAILABLE, now);
  ms_drv_want_flush(c->d);
}

static void on_sub_message(ms_rcl *c, redisReply *rep);

static void sub_cb(redisAsyncContext *ac, void *reply, void *priv) {
  rconn *r = ac->data;
  (void)priv;
  if (!r || r->c->closing || !reply)
    return;
  ms_rcl *c = r->c;
  redisReply *rep = reply;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
      rep->element[0]->type != REDIS_REPLY_STRING)
    return;
  const char *kind = rep->element[0]->str;
  if (strcmp(kind, "subscribe") == 0) {
    if (rep->element[2]->type == REDIS_REPLY_INTEGER &&
        rep->element[2]->integer >= 2 && !c->sub_ready) {
      c->sub_ready = 1;
      check_up(c);
    }
    return;
  }
  if (strcmp(kind, "message") == 0)
    on_sub_message(c, rep);
}

static void reply_auth(ms_rcl *c, redisReply *rep, void *priv) {
  (void)priv;
  if (c && (!rep || rep->type == REDIS_REPLY_ERROR))
    go_down(c, "AUTH or SELECT refused");
}

static void reply_dump(ms_rcl *c, redisReply *rep, void *priv) {
  (void)priv;
  if (!c)
    return;
  if (!rep || rep->type != REDIS_REPLY_ARRAY) {
    go_down(c, "registry read failed");
    return;
  }
  for (size_t i = 0; i + 1 < rep->elements; i += 2) {
    redisReply *k = rep->element[i], *v = rep->element[i + 1];
    if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING)
      reg_set(c, k->str, k->len, v->str, v->len);
  }
  c->reg_ready = 1;
  check_up(c);
}

static void deliver_record(ms_rcl *c, int s, uint64_t seq, const uint8_t *p,
                           size_t n) {
  ms_hub_cluster_record(c->h, s, seq, p, n, now_of(c));
}

/* The stream's history since this hub's last record, newest first. */
static void reply_history(ms_rcl *c, redisReply *rep, void *priv) {
  int s = (int)(intptr_t)priv;
  if (!c)
    return;
  c->sync_pending[s] = 0;
  if (rep && rep->type == REDIS_REPLY_ARRAY) {
    for (size_t i = rep->elements; i-- > 0;) {
      redisReply *e = rep->element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
          e->element[0]->type != REDIS_REPLY_STRING ||
          e->element[1]->type != REDIS_REPLY_ARRAY ||
          e->element[1]->elements < 2 ||
          e->element[1]->element[1]->type != REDIS_REPLY_STRING)
        continue;
      const char *dash = strchr(e->element[0]->str, '-');
      uint64_t seq = dash ? strtoull(dash + 1, NULL, 10) : 0;
      redisReply *v = e->element[1]->element[1];
      deliver_record(c, s, seq, (const uint8_t *)v->str, v->len);
    }
  }
  /* Then what arrived live meanwhile (older ones are ignored by seq). */
  while (c->hold_head[s]) {
    hrec *x = c->hold_head[s];
    c->hold_head[s] = x->next;
    deliver_record(c, s, x->seq, x->data, x->len);
    free(x);
  }
  c->hold_tail[s] = NULL;
  c->hold_n[s] = 0;
  check_up(c);
}

static void reply_floor(ms_rcl *c, redisReply *rep, void *priv) {
  (void)rep, (void)priv, (void)c;
}

static void start_sync(ms_rcl *c) {
  const char *argv[16];
  size_t lens[16];
  char k_seq[2][PREFIX_MAX + 16], k_stream[2][PREFIX_MAX + 16];
  char last[2][32], start[2][40], count[32];
  snprintf(count, sizeof count, "%zu", c->stream_max);
  for (int s = 0; s < 2; s++) {
    snprintf(k_seq[s], sizeof k_seq[s], "%s:seq:%s", c->prefix,
             stream_names[s]);
    snprintf(k_stream[s], sizeof k_stream[s], "%s:%s", c->prefix,
             stream_names[s]);
    uint64_t ls = ms_hub_cluster_last_seq(c->h, s);
    snprintf(last[s], sizeof last[s], "%llu", (unsigned long long)ls);
    argv[0] = "EVAL";
    argv[1] = LUA_SEQ_FLOOR;
    argv[2] = "2";
    argv[3] = k_seq[s];
    argv[4] = k_stream[s];
    argv[5] = last[s];
    for (int i = 0; i < 6; i++)
      lens[i] = strlen(argv[i]);
    command(c, 6, argv, lens, reply_floor, NULL);
    /* Newest first, down to just after this hub's last record. */
    snprintf(start[s], sizeof start[s], "0-%llu", (unsigned long long)ls + 1);
    argv[0] = "XREVRANGE";
    argv[1] = k_stream[s];
    argv[2] = "+";
    argv[3] = start[s];
    argv[4] = "COUNT";
    argv[5] = count;
    for (int i = 0; i < 6; i++)
      lens[i] = strlen(argv[i]);
    if (command(c, 6, argv, lens, reply_history, (void *)(intptr_t)s) == 0)
      c->sync_pending[s] = 1;
  }
}

static void try_connect(ms_rcl *c) {
  c->state = ST_CONNECTING;
  c->connect_deadline = now_of(c) + CONNECT_TIMEOUT_MS;
  c->st.connects++;
  if (rc_open(c, &c->cmd) || rc_open(c, &c->sub)) {
    go_down(c, "cannot connect");
    return;
  }
  const char *argv[8];
  size_t lens[8];
  char db[16];
  if (c->password) {
    argv[0] = "AUTH";
    argv[1] = c->password;
    lens[0] = 4;
    lens[1] = strlen(c->password);
    command(c, 2, argv, lens, reply_auth, NULL);
    redisAsyncCommandArgv(c->sub.ac, NULL, NULL, 2, argv, lens);
  }
  if (c->db) {
    snprintf(db, sizeof db, "%d", c->db);
    argv[0] = "SELECT";
    argv[1] = db;
    lens[0] = 6;
    lens[1] = strlen(db);
    command(c, 2, argv, lens, reply_auth, NULL);
  }
  argv[0] = "SUBSCRIBE";
  argv[1] = c->ch_me;
  argv[2] = c->ch_all;
  lens[0] = 9;
  lens[1] = strlen(c->ch_me);
  lens[2] = strlen(c->ch_all);
  redisAsyncCommandArgv(c->sub.ac, sub_cb, NULL, 3, argv, lens);
  argv[0] = "EVAL";
  argv[1] = LUA_DUMP;
  argv[2] = "0";
  char pfx[PREFIX_MAX + 2];
  snprintf(pfx, sizeof pfx, "%s:", c->prefix);
  argv[3] = pfx;
  for (int i = 0; i < 4; i++)
    lens[i] = strlen(argv[i]);
  command(c, 4, argv, lens, reply_dump, NULL);
  start_sync(c);
}

/* ---- messages from the subscription ---- */

static void on_broadcast(ms_rcl *c, const char *m, size_t n) {
  if (n < 2)
    return;
  const char *body = m + 1;
  size_t bn = n - 1;
  switch (m[0]) {
  case '+':
  case '-': { /* "+HUB NAME" */
    const char *sp = memchr(body, ' ', bn);
    if (!sp)
      return;
    size_t hn = (size_t)(sp - body);
    const char *name = sp + 1;
    size_t nn = bn - hn - 1;
    if (m[0] == '+')
      reg_set(c, name, nn, body, hn);
    else
      reg_del(c, name, nn, body, hn);
    return;
  }
  case 'H': { /* heartbeat */
    if (bn == strlen(c->me) && memcmp(body, c->me, bn) == 0)
      return;
    peer *p = peer_get(c, body, bn, 1);
    if (p)
      p->last_seen = now_of(c);
    return;
  }
  case 'B': { /* goodbye: gone now, not after the lease */
    peer *p = peer_get(c, body, bn, 0);
    if (p)
      peer_gone(c, p);
    return;
  }
  case 'R': { /* "R<stream><seq> <record>" */
    int s = body[0] == '1' ? 1 : 0;
    const char *sp = memchr(body, ' ', bn);
    if (!sp || bn < 3)
      return;
    uint64_t seq = strtoull(body + 1, NULL, 10);
    const uint8_t *rec = (const uint8_t *)sp + 1;
    size_t rn = bn - (size_t)(sp + 1 - body);
    if (c->sync_pending[s]) {
      if (c->hold_n[s] >= SYNC_HOLD)
        return; /* the gap shows as a jump in seq */
      hrec *x = malloc(sizeof *x + rn);
      if (!x)
        return;
      x->next = NULL;
      x->seq = seq;
      x->len = rn;
      memcpy(x->data, rec, rn);
      if (c->hold_tail[s])
        c->hold_tail[s]->next = x;
      else
        c->hold_head[s] = x;
      c->hold_tail[s] = x;
      c->hold_n[s]++;
      return;
    }
    deliver_record(c, s, seq, rec, rn);
    return;
  }
  default:
    return;
  }
}

/* A batch for this hub: [u8 from_len][from][u32 len][msg]... */
static void on_batch(ms_rcl *c, const uint8_t *m, size_t n) {
  if (n < 1 || (size_t)m[0] + 1 > n || m[0] == 0 || m[0] >= HUB_ID_MAX)
    return;
  char from[HUB_ID_MAX];
  memcpy(from, m + 1, m[0]);
  from[m[0]] = '\0';
  size_t off = 1 + (size_t)m[0];
  peer *p = peer_get(c, from, m[0], 1);
  if (p)
    p->last_seen = now_of(c);
  int64_t now = now_of(c);
  while (off + 4 <= n) {
    uint32_t len = ((uint32_t)m[off] << 24) | ((uint32_t)m[off + 1] << 16) |
                   ((uint32_t)m[off + 2] << 8) | m[off + 3];
    off += 4;
    if (len > n - off)
      break;
    c->st.messages_in++;
    ms_hub_cluster_deliver(c->h, from, m + off, len, now);
    off += len;
  }
}

static void on_sub_message(ms_rcl *c, redisReply *rep) {
  redisReply *ch = rep->element[1], *msg = rep->element[2];
  if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING)
    return;
  if (c->state == ST_DOWN)
    return;
  if (ch->len == strlen(c->ch_me) && memcmp(ch->str, c->ch_me, ch->len) == 0)
    on_batch(c, (const uint8_t *)msg->str, msg->len);
  else
    on_broadcast(c, msg->str, msg->len);
}

/* ---- the engine's hooks ---- */

static void op_release(void *ctx, const char *name, size_t len);

static void reply_claim(ms_rcl *c, redisReply *rep, void *priv) {
  claim_ctx *x = priv;
  ms_rcl *cc = x->c;
  if (cc->closing) {
    free(x);
    return;
  }
  /* In flight one less for this name. */
  uintptr_t k = (uintptr_t)sget(&cc->claiming, x->name, x->len);
  if (k > 1)
    sput(&cc->claiming, x->name, x->len, (void *)(k - 1));
  else if (k)
    sdel(&cc->claiming, x->name, x->len);
  int result = MS_ERR_CLUSTER_UNAVAILABLE;
  const char *holder = NULL;
  if (c && rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[0]->type == REDIS_REPLY_INTEGER &&
      rep->element[1]->type == REDIS_REPLY_STRING) {
    if (rep->element[0]->integer == 1) {
      result = 0;
      sput(&cc->held, x->name, x->len, (void *)1);
      reg_set(cc, x->name, x->len, cc->me, strlen(cc->me));
    } else {
      result = MS_ERR_DUPLICATE_SERVICE_REGISTRATION;
      holder = rep->element[1]->str;
    }
  }
  int rv = ms_hub_cluster_claimed(cc->h, x->tag, result, holder, now_of(cc));
  if (rv == MS_ERR_NOT_FOUND && result == 0 &&
      !sget(&cc->claiming, x->name, x->len)) {
    /* Claimed for a connection that went away, and no newer claim of
     * the name is on its way: give it back. */
    sdel(&cc->held, x->name, x->len);
    op_release(cc, x->name, x->len);
  }
  free(x);
}

static void op_claim(void *ctx, const char *name, size_t len, uint64_t tag,
                     unsigned flags) {
  ms_rcl *c = ctx;
  int rv = MS_ERR_CLUSTER_UNAVAILABLE;
  claim_ctx *x = NULL;
  if (c->state == ST_UP) {
    x = malloc(sizeof *x + len + 1);
    if (x) {
      x->c = c;
      x->tag = tag;
      x->gen = c->gen;
      x->len = len;
      memcpy(x->name, name, len);
      x->name[len] = '\0';
      char key[PREFIX_MAX + 400], lease[32], alive[PREFIX_MAX + 16];
      snprintf(key, sizeof key, "%s:svc:%s", c->prefix, x->name);
      snprintf(lease, sizeof lease, "%lld", (long long)c->lease_ms);
      snprintf(alive, sizeof alive, "%s:alive:", c->prefix);
      const char *argv[] = {"EVAL", LUA_CLAIM, "1", key, c->me, lease,
                            (flags & MS_CLAIM_REPLACE_STALE) ? "1" : "0",
                            alive, c->ch_all, x->name};
      size_t lens[10];
      for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
      lens[9] = len;
      rv = command(c, 10, argv, lens, reply_claim, x);
      if (rv == 0) {
        uintptr_t k = (uintptr_t)sget(&c->claiming, name, len);
        sput(&c->claiming, name, len, (void *)(k + 1));
      } else {
        free(x);
      }
    }
  }
  if (rv != 0) {
    /* Answered at the end of this iteration, not from inside the hook. */
    early *e = malloc(sizeof *e);
    if (e) {
      e->tag = tag;
      e->result = MS_ERR_CLUSTER_UNAVAILABLE;
      e->next = c->early_head;
      c->early_head = e;
      ms_drv_want_flush(c->d);
    }
    /* (Without memory the engine's claim deadline answers it.) */
  }
}

static void op_release(void *ctx, const char *name, size_t len) {
  ms_rcl *c = ctx;
  sdel(&c->held, name, len);
  reg_del(c, name, len, c->me, strlen(c->me));
  if (c->state != ST_UP)
    return; /* its lease runs out; a re-assert skips it (not held) */
  char key[PREFIX_MAX + 400], nm[160];
  snprintf(nm, sizeof nm, "%.*s", (int)len, name);
  snprintf(key, sizeof key, "%s:svc:%s", c->prefix, nm);
  const char *argv[] = {"EVAL", LUA_RELEASE, "1", key, c->me, c->ch_all, nm};
  size_t lens[7];
  for (int i = 0; i < 7; i++)
    lens[i] = strlen(argv[i]);
  command(c, 7, argv, lens, NULL, NULL);
}

static int op_locate(void *ctx, const char *name, size_t len,
                     const char **hub_id) {
  ms_rcl *c = ctx;
  if (c->state != ST_UP)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  reg *g = sget(&c->registry, name, len);
  if (!g)
    return MS_ERR_NOT_FOUND;
  *hub_id = g->hub;
  return 0;
}

static int op_send(void *ctx, const char *hub_id, const uint8_t *msg,
                   size_t len);

typedef struct resolve_ctx {
  ms_rcl *c;
  uint64_t hid;
  size_t name_len, len;
  char *name;
  uint8_t msg[];
} resolve_ctx;

/* A name this hub has not heard of: Redis knows (a claim whose broadcast
 * has not arrived yet), so the request waits one round trip, no more. */
static void reply_resolve(ms_rcl *c, redisReply *rep, void *priv) {
  resolve_ctx *x = priv;
  ms_rcl *cc = x->c;
  if (!cc->closing) {
    const char *hub = NULL;
    int err = MS_ERR_CLUSTER_UNAVAILABLE;
    if (c && rep) {
      err = MS_ERR_NOT_FOUND;
      if (rep->type == REDIS_REPLY_STRING && rep->len < HUB_ID_MAX) {
        reg_set(cc, x->name, x->name_len, rep->str, rep->len);
        reg *g = sget(&cc->registry, x->name, x->name_len);
        hub = g ? g->hub : NULL;
      }
    }
    if (ms_hub_cluster_resolved(cc->h, x->hid, hub, err, now_of(cc)) == 0 &&
        hub)
      op_send(cc, hub, x->msg, x->len);
  }
  free(x);
}

static int op_resolve(void *ctx, const char *name, size_t len, uint64_t hid,
                      const uint8_t *msg, size_t n) {
  ms_rcl *c = ctx;
  if (c->state != ST_UP)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  resolve_ctx *x = malloc(sizeof *x + n + len + 1);
  if (!x)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  x->c = c;
  x->hid = hid;
  x->len = n;
  memcpy(x->msg, msg, n);
  x->name = (char *)x->msg + n;
  memcpy(x->name, name, len);
  x->name[len] = '\0';
  x->name_len = len;
  char key[PREFIX_MAX + 400];
  snprintf(key, sizeof key, "%s:svc:%s", c->prefix, x->name);
  const char *argv[] = {"GET", key};
  size_t lens[] = {3, strlen(key)};
  if (command(c, 2, argv, lens, reply_resolve, x) != 0) {
    free(x);
    return MS_ERR_CLUSTER_UNAVAILABLE;
  }
  return 0;
}

static int op_send(void *ctx, const char *hub_id, const uint8_t *msg,
                   size_t len) {
  ms_rcl *c = ctx;
  if (c->state != ST_UP)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  peer *p = peer_get(c, hub_id, strlen(hub_id), 1);
  if (!p || len > UINT32_MAX)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  if (p->out.n == 0) {
    uint8_t n = (uint8_t)strlen(c->me);
    if (badd(&p->out, &n, 1) || badd(&p->out, c->me, n))
      return MS_ERR_NOMEM;
  }
  uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16),
                    (uint8_t)(len >> 8), (uint8_t)len};
  if (badd(&p->out, hdr, 4) || badd(&p->out, msg, len))
    return MS_ERR_NOMEM;
  c->st.messages_out++;
  if (!p->dirty) {
    p->dirty = 1;
    p->flush_next = c->flush_head;
    c->flush_head = p;
    ms_drv_want_flush(c->d);
  }
  return 0;
}

static int op_publish(void *ctx, int stream, const uint8_t *rec,
                      size_t len) {
  ms_rcl *c = ctx;
  int s = stream == MS_CLUSTER_PRESENCE ? 1 : 0;
  if (c->out_n[s] >= OUTBOX_RECORDS) {
    /* Redis away too long: the oldest waiting record goes. */
    orec *o = c->out_head[s];
    c->out_head[s] = o->next;
    if (!c->out_head[s])
      c->out_tail[s] = NULL;
    free(o);
    c->out_n[s]--;
    c->st.records_dropped++;
  }
  orec *o = malloc(sizeof *o + len);
  if (!o)
    return MS_ERR_NOMEM;
  o->next = NULL;
  o->len = len;
  memcpy(o->data, rec, len);
  if (c->out_tail[s])
    c->out_tail[s]->next = o;
  else
    c->out_head[s] = o;
  c->out_tail[s] = o;
  c->out_n[s]++;
  ms_drv_want_flush(c->d);
  return 0;
}

static int mbuf_add(ms_buf *b, const char *d, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    const ms_allocator *m = b->mem ? b->mem : ms_default_allocator();
    char *p = m->realloc(b->data, cap, m->user_data);
    if (!p)
      return MS_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    b->mem = m;
  }
  memcpy(b->data + b->len, d, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static int op_metrics(void *ctx, ms_buf *b) {
  ms_rcl *c = ctx;
  const ms_cluster_stats *s = &c->st;
  char line[512];
  int rv = 0;
#define RM(name, type, help, val)                                          \
  if (rv == 0) {                                                           \
    int k = snprintf(line, sizeof line,                                    \
                     "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help,  \
                     name, type, name, (unsigned long long)(val));         \
    rv = mbuf_add(b, line, (size_t)k);                                     \
  }
  RM("microstream_cluster_up", "gauge",
     "1 while the hub is connected to Redis and in sync.", c->state == ST_UP);
  RM("microstream_cluster_hubs", "gauge", "Other hubs seen alive.",
     c->peers.n);
  RM("microstream_cluster_services", "gauge",
     "Service names in the cluster registry.", c->registry.n);
  RM("microstream_cluster_redis_commands_total", "counter",
     "Redis commands sent.", s->redis_commands);
  RM("microstream_cluster_redis_replies_total", "counter",
     "Redis replies received.", s->redis_replies);
  RM("microstream_cluster_redis_errors_total", "counter",
     "Redis error replies.", s->redis_errors);
  RM("microstream_cluster_redis_connects_total", "counter",
     "Connection attempts to Redis.", s->connects);
  RM("microstream_cluster_redis_disconnects_total", "counter",
     "Connections to Redis lost or refused.", s->disconnects);
  RM("microstream_cluster_lease_renewals_total", "counter",
     "Lease renewal rounds.", s->renewals);
  RM("microstream_cluster_batches_total", "counter",
     "PUBLISH commands carrying hub-to-hub messages.", s->batches);
  RM("microstream_cluster_messages_out_total", "counter",
     "Hub-to-hub messages sent.", s->messages_out);
  RM("microstream_cluster_messages_in_total", "counter",
     "Hub-to-hub messages received.", s->messages_in);
  RM("microstream_cluster_records_out_total", "counter",
     "Log and presence records appended to the cluster streams.",
     s->records_out);
  RM("microstream_cluster_records_dropped_total", "counter",
     "Records lost while Redis was unreachable.", s->records_dropped);
#undef RM
  return rv;
}

struct svc_ctx {
  ms_rcl *c;
  ms_buf *b;
  int first;
  int rv;
};

static void json_str(struct svc_ctx *x, const char *s, size_t n) {
  if (x->rv)
    return;
  x->rv = mbuf_add(x->b, "\"", 1);
  for (size_t i = 0; i < n && x->rv == 0; i++) {
    unsigned char ch = (unsigned char)s[i];
    char esc[8];
    if (ch == '"' || ch == '\\') {
      esc[0] = '\\';
      esc[1] = (char)ch;
      x->rv = mbuf_add(x->b, esc, 2);
    } else if (ch < 0x20) {
      int k = snprintf(esc, sizeof esc, "\\u%04x", ch);
      x->rv = mbuf_add(x->b, esc, (size_t)k);
    } else {
      x->rv = mbuf_add(x->b, (const char *)&ch, 1);
    }
  }
  if (x->rv == 0)
    x->rv = mbuf_add(x->b, "\"", 1);
}

static void svc_one(void *ud, sent *e) {
  struct svc_ctx *x = ud;
  reg *g = e->val;
  if (x->rv || strcmp(g->hub, x->c->me) == 0)
    return; /* the engine lists its own */
  if (!x->first)
    x->rv = mbuf_add(x->b, ",", 1);
  x->first = 0;
  if (x->rv == 0)
    x->rv = mbuf_add(x->b, "{\"name\":", 8);
  json_str(x, e->key, e->len);
  if (x->rv == 0)
    x->rv = mbuf_add(x->b, ",\"hub\":", 7);
  json_str(x, g->hub, strlen(g->hub));
  if (x->rv == 0)
    x->rv = mbuf_add(x->b, ",\"remote\":true}", 15);
}

static int op_services(void *ctx, ms_buf *b, int first) {
  ms_rcl *c = ctx;
  struct svc_ctx x = {c, b, first, 0};
  seach(&c->registry, svc_one, &x);
  return x.rv;
}

static const ms_hub_cluster_ops rcl_ops = {
    op_claim, op_release, op_locate, op_resolve, op_send, op_publish,
    op_metrics, op_services};

/* ---- the loop's side ---- */

static void reply_renew(ms_rcl *c, redisReply *rep, void *priv);

static void renew(ms_rcl *c) {
  size_t n = c->held.n;
  const char **argv = malloc((n + 8) * sizeof *argv);
  size_t *lens = malloc((n + 8) * sizeof *lens);
  if (!argv || !lens) {
    free(argv);
    free(lens);
    return;
  }
  char lease[32], pfx[PREFIX_MAX + 2];
  snprintf(lease, sizeof lease, "%lld", (long long)c->lease_ms);
  snprintf(pfx, sizeof pfx, "%s:", c->prefix);
  int k = 0;
  argv[k++] = "EVAL";
  argv[k++] = LUA_RENEW;
  argv[k++] = "0";
  argv[k++] = c->me;
  argv[k++] = lease;
  argv[k++] = pfx;
  argv[k++] = c->ch_all;
  for (int i = 0; i < k; i++)
    lens[i] = strlen(argv[i]);
  for (size_t i = 0; i < c->held.nb; i++)
    for (sent *e = c->held.b[i]; e; e = e->next) {
      argv[k] = e->key;
      lens[k++] = e->len;
    }
  command(c, k, argv, lens, reply_renew, NULL);
  c->st.renewals++;
  free(argv);
  free(lens);
}

static void reply_renew(ms_rcl *c, redisReply *rep, void *priv) {
  (void)priv;
  if (!c || !rep || rep->type != REDIS_REPLY_ARRAY)
    return;
  for (size_t i = 0; i < rep->elements; i++) {
    redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_STRING)
      continue;
    /* Another hub took it while this one could not renew. */
    sdel(&c->held, e->str, e->len);
    ms_hub_cluster_lost(c->h, e->str, e->len, now_of(c));
  }
}

static void flush_records(ms_rcl *c) {
  for (int s = 0; s < 2; s++) {
    if (!c->out_head[s])
      continue;
    size_t n = c->out_n[s];
    const char **argv = malloc((n + 8) * sizeof *argv);
    size_t *lens = malloc((n + 8) * sizeof *lens);
    if (!argv || !lens) {
      free(argv);
      free(lens);
      return;
    }
    char k_seq[PREFIX_MAX + 16], k_stream[PREFIX_MAX + 16], maxlen[32];
    snprintf(k_seq, sizeof k_seq, "%s:seq:%s", c->prefix, stream_names[s]);
    snprintf(k_stream, sizeof k_stream, "%s:%s", c->prefix, stream_names[s]);
    snprintf(maxlen, sizeof maxlen, "%zu", c->stream_max);
    int k = 0;
    argv[k++] = "EVAL";
    argv[k++] = LUA_APPEND;
    argv[k++] = "2";
    argv[k++] = k_seq;
    argv[k++] = k_stream;
    argv[k++] = maxlen;
    argv[k++] = c->ch_all;
    argv[k++] = s ? "1" : "0";
    for (int i = 0; i < k; i++)
      lens[i] = strlen(argv[i]);
    for (orec *o = c->out_head[s]; o; o = o->next) {
      argv[k] = (const char *)o->data;
      lens[k++] = o->len;
    }
    int rv = command(c, k, argv, lens, NULL, NULL);
    free(argv);
    free(lens);
    if (rv != 0)
      return; /* kept for the next connection */
    c->st.records_out += n;
    while (c->out_head[s]) {
      orec *o = c->out_head[s];
      c->out_head[s] = o->next;
      free(o);
    }
    c->out_tail[s] = NULL;
    c->out_n[s] = 0;
  }
}

void ms_rcl_flush(ms_rcl *c) {
  if (!c || c->closing)
    return;
  while (c->early_head) {
    early *e = c->early_head;
    c->early_head = e->next;
    ms_hub_cluster_claimed(c->h, e->tag, e->result, NULL, now_of(c));
    free(e);
  }
  if (c->state != ST_UP)
    return;
  while (c->flush_head) {
    peer *p = c->flush_head;
    c->flush_head = p->flush_next;
    p->dirty = 0;
    char ch[PREFIX_MAX + HUB_ID_MAX + 8];
    snprintf(ch, sizeof ch, "%s:hub:%s", c->prefix, p->id);
    const char *argv[] = {"PUBLISH", ch, p->out.p};
    size_t lens[] = {7, strlen(ch), p->out.n};
    command(c, 3, argv, lens, NULL, NULL);
    c->st.batches++;
    p->out.n = 0;
  }
  flush_records(c);
}

void ms_rcl_tick(ms_rcl *c, int64_t now) {
  if (!c || c->closing)
    return;
  c->last_tick = now;
  if (c->state == ST_DOWN && !c->leaving && now >= c->next_try) {
    try_connect(c);
  } else if (c->state == ST_CONNECTING && now >= c->connect_deadline) {
    go_down(c, "connect timed out");
  } else if (c->state == ST_UP) {
    if (now >= c->next_renew) {
      renew(c);
      c->next_renew = now + c->lease_ms / 3;
    }
    /* Hubs silent for a lease are gone. */
    for (size_t i = 0; i < c->peers.nb; i++) {
      sent *e = c->peers.b[i];
      while (e) {
        sent *nx = e->next;
        peer *p = e->val;
        if (now - p->last_seen > c->lease_ms) {
          peer_gone(c, p);
          if (c->state != ST_UP)
            return;
          i = (size_t)-1; /* the table changed: start over */
          break;
        }
        e = nx;
      }
      if (i == (size_t)-1)
        continue;
    }
  }
  ms_rcl_flush(c);
}

int64_t ms_rcl_next_deadline(const ms_rcl *c) {
  if (!c || c->closing)
    return MS_NO_DEADLINE;
  switch (c->state) {
  case ST_DOWN:
    return c->leaving ? MS_NO_DEADLINE : c->next_try;
  case ST_CONNECTING:
    return c->connect_deadline;
  default: {
    int64_t d = c->next_renew;
    /* Peers are checked at the renewal pace, well inside the lease. */
    return d;
  }
  }
}

void ms_rcl_stats(const ms_rcl *c, ms_cluster_stats *st) {
  *st = c->st;
  st->up = c->state == ST_UP;
  st->hubs = c->peers.n;
  st->services = c->registry.n;
}

size_t ms_rcl_pending(const ms_rcl *c) {
  return c ? c->pending + (c->flush_head != NULL) : 0;
}

void ms_rcl_leave(ms_rcl *c) {
  if (!c || c->leaving)
    return;
  c->leaving = 1;
  if (c->state != ST_UP)
    return;
  ms_rcl_flush(c);
  char msg[HUB_ID_MAX + 2];
  snprintf(msg, sizeof msg, "B%s", c->me);
  const char *argv[] = {"PUBLISH", c->ch_all, msg};
  size_t lens[] = {7, strlen(c->ch_all), strlen(msg)};
  command(c, 3, argv, lens, NULL, NULL);
  char key[PREFIX_MAX + HUB_ID_MAX + 16];
  snprintf(key, sizeof key, "%s:alive:%s", c->prefix, c->me);
  const char *a2[] = {"DEL", key};
  size_t l2[] = {3, strlen(key)};
  command(c, 2, a2, l2, NULL, NULL);
}

static int parse_url(ms_rcl *c, const char *url) {
  if (strncmp(url, "redis://", 8) != 0)
    return MS_ERR_INVALID_ARG; /* (rediss:// needs TLS: not built) */
  const char *p = url + 8;
  const char *at = strchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *pw = colon ? colon + 1 : p;
    size_t n = (size_t)(at - pw);
    if (n) {
      c->password = malloc(n + 1);
      if (!c->password)
        return MS_ERR_NOMEM;
      memcpy(c->password, pw, n);
      c->password[n] = '\0';
    }
    p = at + 1;
  }
  const char *slash = strchr(p, '/');
  size_t hl = slash ? (size_t)(slash - p) : strlen(p);
  char hp[300];
  if (hl == 0 || hl >= sizeof hp)
    return MS_ERR_INVALID_ARG;
  memcpy(hp, p, hl);
  hp[hl] = '\0';
  char *colon = strrchr(hp, ':');
  c->port = 6379;
  if (colon) {
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
      return MS_ERR_INVALID_ARG;
    c->port = (int)port;
    *colon = '\0';
  }
  size_t hn = strlen(hp);
  if (!hn || hn >= sizeof c->host)
    return MS_ERR_INVALID_ARG;
  memcpy(c->host, hp, hn + 1);
  if (slash && slash[1]) {
    char *end;
    long db = strtol(slash + 1, &end, 10);
    if (*end || db < 0 || db > 65535)
      return MS_ERR_INVALID_ARG;
    c->db = (int)db;
  }
  return 0;
}

int ms_rcl_new(ms_rcl **out, ms_drv *d, ms_hub *h,
               const ms_cluster_config *cfg) {
  if (!cfg || !cfg->url)
    return MS_ERR_INVALID_ARG;
  ms_rcl *c = calloc(1, sizeof *c);
  if (!c)
    return MS_ERR_NOMEM;
  c->d = d;
  c->h = h;
  int rv = parse_url(c, cfg->url);
  if (rv == 0 && cfg->password) {
    free(c->password);
    c->password = strdup(cfg->password);
    if (!c->password)
      rv = MS_ERR_NOMEM;
  }
  const char *pfx = cfg->prefix && *cfg->prefix ? cfg->prefix : "microstream";
  if (rv == 0 && (strlen(pfx) >= PREFIX_MAX ||
                  strlen(ms_hub_id(h)) >= HUB_ID_MAX))
    rv = MS_ERR_INVALID_ARG;
  if (rv) {
    free(c->password);
    free(c);
    return rv;
  }
  snprintf(c->prefix, sizeof c->prefix, "%s", pfx);
  snprintf(c->me, sizeof c->me, "%s", ms_hub_id(h));
  snprintf(c->ch_me, sizeof c->ch_me, "%s:hub:%s", c->prefix, c->me);
  snprintf(c->ch_all, sizeof c->ch_all, "%s:all", c->prefix);
  c->lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 3000;
  if (c->lease_ms < 300)
    c->lease_ms = 300;
  c->stream_max = cfg->stream_max ? cfg->stream_max : 10000;
  c->cmd.io.fd = c->sub.io.fd = -1;
  rv = ms_hub_set_cluster(h, &rcl_ops, c);
  if (rv) {
    free(c->password);
    free(c);
    return rv;
  }
  c->state = ST_DOWN;
  c->next_try = now_of(c); /* connect from the loop */
  *out = c;
  return 0;
}

void ms_rcl_detach(ms_rcl *c) {
  if (!c || c->closing)
    return;
  c->closing = 1;
  ms_hub_set_cluster(c->h, NULL, NULL);
}

void ms_rcl_del(ms_rcl *c) {
  if (!c)
    return;
  ms_rcl_detach(c);
  rc_close(&c->cmd);
  rc_close(&c->sub);
  while (c->early_head) {
    early *e = c->early_head;
    c->early_head = e->next;
    free(e);
  }
  for (int s = 0; s < 2; s++) {
    hold_clear(c, s);
    while (c->out_head[s]) {
      orec *o = c->out_head[s];
      c->out_head[s] = o->next;
      free(o);
    }
  }
  sfree(&c->peers, peer_free);
  sfree(&c->registry, free);
  sfree(&c->held, NULL);
  sfree(&c->claiming, NULL);
  free(c->password);
  free(c);
}
