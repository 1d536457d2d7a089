/*
 * microstream: the Redis side of a clustered hub (see ms_cluster.h and
 * PROTOCOL.md "Cluster"). The connections to Redis are driven here, on
 * the hub's loop through the driver core's watch hooks: names resolved
 * with c-ares, an optional TLS layer (rediss://, the program's
 * ms_stream_wrap), hiredis for what it is good at (the RESP reader and
 * command formatting); then the cluster protocol over them.
 *
 * Redis layout (P = prefix):
 *   P:svc:NAME    hub id holding NAME, PX lease, renewed by that hub
 *   P:alive:HUB   set by each hub at every renewal, PX lease
 *   P:logs, P:presence      streams (XADD MAXLEN ~), ids 0-SEQ
 *   P:seq:logs, P:seq:presence   the streams' cluster-wide seq counters
 *   P:hub:HUB     pub/sub channel of one hub: messages for it (also
 *                 sharded, SSUBSCRIBE, on Redis 7)
 *   P:all         pub/sub channel of every hub: claims, releases,
 *                 heartbeats, goodbyes, new records
 *
 * Two connections: one for commands (pipelined: what was queued during a
 * loop iteration leaves in one write), one subscribed.
 * Hub-to-hub messages queued during an iteration leave in one PUBLISH per
 * destination hub at its end.
 */
#include "ms_internal.h"

#include <hiredis/hiredis.h>
#include <microstream/ms_posix.h>
#include <microstream/ms_transport.h>

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ms_drv_cluster.h"
#include "ms_ring.h"

#define PREFIX_MAX 64
#define HUB_ID_MAX 64
/* Records kept for Redis while it is unreachable, per stream. */
#define OUTBOX_RECORDS 10000
/* Live records held while the history since the last one is read. */
#define SYNC_HOLD 20000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 3000
/* How long the claim to announce a lost hub is kept (a hub that comes
 * back within it says "rejoined"). */
#define LOST_TTL_MS (3600 * 1000)
/* c-ares sockets watched at once. */
#define RESOLVER_FDS 4
/* Bytes read from one connection in one pump. */
#define READ_MAX (256 * 1024)

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
  const ms_allocator *mem;
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
    sent **b = ms_calloc(m->mem, nb, sizeof *b);
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
    ms_free(m->mem, m->b);
    m->b = b;
    m->nb = nb;
  }
  sent *e = ms_malloc(m->mem, sizeof *e + n + 1);
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
  ms_free(m->mem, e);
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

/* free_val(mem, val) lets go of each value (NULL: values are not owned). */
typedef void (*sval_free_fn)(const ms_allocator *mem, void *val);

static void sclear(smap *m, sval_free_fn free_val) {
  for (size_t i = 0; i < m->nb; i++) {
    sent *e = m->b[i];
    while (e) {
      sent *nx = e->next;
      if (free_val)
        free_val(m->mem, e->val);
      ms_free(m->mem, e);
      e = nx;
    }
    m->b[i] = NULL;
  }
  m->n = 0;
}

static void sfree(smap *m, sval_free_fn free_val) {
  sclear(m, free_val);
  ms_free(m->mem, m->b);
  m->b = NULL;
  m->nb = 0;
}

/* ---- byte buffers: ms_buf on the hub's allocator ---- */

static void buf_init(ms_buf *b, const ms_allocator *mem) {
  b->data = NULL;
  b->len = b->cap = 0;
  b->mem = mem;
}

/* The values of a map, each one allocation. */
static void val_free(const ms_allocator *mem, void *v) { ms_free(mem, v); }

static const ms_allocator *rcl_mem(const ms_rcl *c);
/* What a ring of the driver lets go of: one allocation each. */
static void item_drop(void *item, void *ud) { ms_free(rcl_mem(ud), item); }

/* ---- state ---- */

/* Another hub, seen through its heartbeats. */
typedef struct peer {
  int64_t last_seen;
  int sharded; /* its channel is SSUBSCRIBEd (from its heartbeats) */
  ms_buf out;  /* frames queued for it: [u32 len][message]... */
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
  int shown; /* shown here already (made while the cluster was away) */
  size_t len;
  uint8_t data[];
} orec;

/* The records of one append (EVAL), kept until Redis answers it: when
 * the command connection ends first, the batch is sent again on the next
 * one under the same number, and the script skips a number it has run
 * already (the answer, not the append, may be what was lost). */
typedef struct obatch {
  struct ms_rcl *c; /* for an answer that comes without it */
  int s, shown;
  int sent;    /* on the current connection, its answer awaited */
  int resent;  /* sent on an earlier connection already */
  uint64_t no;
  size_t n;
  orec *r[];
} obatch;

/* A live record that arrived while the history was being read. */
/* How a record from the cluster relates to this hub. */
enum { OWN_NO = 0, OWN_SHOWN = 1, OWN_HOLE = 2 };

typedef struct hrec {
  int own; /* OWN_SHOWN: this hub's, shown here already; OWN_HOLE */
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
  uint64_t tag;
  int result;
} early;

/* A reply awaited on the command connection (FIFO). */
typedef void (*reply_fn)(struct ms_rcl *c, redisReply *rep, void *priv);
typedef struct cmd_ctx {
  reply_fn fn;
  void *priv;
} cmd_ctx;

enum { RC_NONE = 0, RC_CONNECTING, RC_OPEN };

/* One connection to Redis, driven here: a socket on the driver's watch
 * hooks, an optional TLS layer (the program's ms_stream_wrap), hiredis's
 * RESP reader for what comes in, and one output buffer that the loop
 * writes once per iteration (pipelining). io comes first: the ready
 * callback casts. */
/* A reader's reply functions: hiredis's own, with its array refused past
 * a bound (see capped_reader). */
typedef struct capped_fns {
  redisReplyObjectFunctions fns;
  void *(*array)(const redisReadTask *, int);
} capped_fns;

typedef struct rconn {
  ms_drv_io io;
  struct ms_rcl *c;
  int phase;
  ms_fd_stream s;
  ms_transport t;
  void *wrapped;              /* the TLS stream, or NULL */
  const ms_engine_ops *ops;   /* what the pump drives: rc_ops or TLS */
  void *eng;
  redisReader *rd;            /* non-NULL while an attempt is alive */
  ms_buf out;
  size_t out_off;
  ms_ring q;                  /* cmd_ctx: replies awaited, oldest first */
  int eof;
  capped_fns cap;             /* rd's reply functions */
} rconn;

enum { ST_DOWN = 0, ST_CONNECTING, ST_UP };

/* A c-ares socket (io first: the ready callback casts). */
typedef struct ares_slot {
  ms_drv_io io;
  struct ms_rcl *c;
} ares_slot;

struct ms_rcl {
  ms_drv *d;
  ms_hub *h;
  const ms_allocator *mem; /* the hub's: everything of this driver's own */
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

  int tls_url;           /* rediss:// */
  int state;
  unsigned gen;          /* connection generation: stale replies ignored */
  int closing;           /* being deleted: callbacks do nothing */
  int leaving;
  rconn cmd, sub;
  int sub_acks;          /* subscriptions confirmed (2: ready) */
  int sub_ready, reg_ready, info_ready;
  int sharded;           /* this hub's channel is also SSUBSCRIBEd */
  int classic_only;      /* configured: never sharded pub/sub */
  const ms_stream_wrap *tls; /* rediss:// */
  /* Name resolution (c-ares on the loop): one lookup per attempt. */
  ares_channel ares;
  ares_slot ares_io[RESOLVER_FDS];
  int resolving;
  unsigned resolve_gen;
  struct ares_addrinfo *addrs;  /* of this attempt, and the next to try */
  struct ares_addrinfo_node *next_addr;
  char err[256];         /* why the last attempt or connection failed */
  void (*on_state)(void *ud, int up, const char *why);
  void *state_ud;
  int sync_pending[2];   /* history reads outstanding per stream */
  uint64_t cl_seq[2];    /* newest cluster seq taken from Redis */
  uint64_t missed[2];    /* cluster records not shown here (seq taken) */
  ms_ring unanswered;    /* obatch: appends not answered yet, in number
                          * order (one numbering for both streams): those
                          * sent on this connection first, then those to
                          * send (again) before any new one */
  uint64_t batch_no;     /* the last append's number */
  int keep_sent;         /* (tests, no driver) keep what was written */
  ms_buf sent;
  size_t sent_off;
  char batch_key[PREFIX_MAX + HUB_ID_MAX + 32]; /* its key in Redis */
  uint64_t hold_refused[2];   /* other hubs' records not held (bound,
                               * memory) during a history read */
  uint64_t hold_refused_to[2]; /* the newest seq not held, of any kind */
  ms_ring hold[2];       /* hrec, live records held during a history read:
                          * at most SYNC_HOLD, the newest refused */
  int64_t next_try, backoff, connect_deadline;
  int64_t next_renew;
  size_t pending;        /* replies outstanding */

  smap peers;            /* hub id -> peer */
  smap registry;         /* name -> reg (replica of P:svc:*) */
  smap held;             /* names held here -> (void*)1 */
  smap claiming;         /* name -> (uintptr_t) claims in flight */
  peer *flush_head;
  ms_ring early;          /* early, answered at flush in order */
  ms_ring out[2];        /* orec, waiting for Redis: at most OUTBOX_RECORDS
                          * per stream, the oldest dropped (counted) */
  ms_cluster_stats st;
  int64_t last_tick;
  struct lost_ctx *lost_retry; /* claims refused while the hub's key lived */
};

static const char *const stream_names[2] = {"logs", "presence"};

static const ms_allocator *rcl_mem(const ms_rcl *c) { return c->mem; }

/* No driver: the fuzz entry point (ms_rcl_fuzz), time standing still. */
static int64_t now_of(ms_rcl *c) { return c->d ? ms_drv_now(c->d) : 1000000; }
static void want_flush(ms_rcl *c) {
  if (c->d)
    ms_drv_want_flush(c->d);
}

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

/* ARGV: hub, lease, prefix, channel, heartbeat, names... Renews the hub's liveness
 * and its names (re-asserting those Redis lost), announces the hub, and
 * returns 1 if another hub had declared it lost (PREFIX:lost:HUB), else
 * 0, then the names now held by another hub. */
static const char LUA_RENEW[] =
    "redis.call('SET', ARGV[3] .. 'alive:' .. ARGV[1], '1', 'PX', ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[4], ARGV[5])\n"
    "local lost = {redis.call('DEL', ARGV[3] .. 'lost:' .. ARGV[1])}\n"
    "for i = 6, #ARGV do\n"
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

/* KEYS[1] seq key, KEYS[2] stream. ARGV: this hub's last seq, maxlen,
 * channel, stream digit. The counter never goes below what any hub has
 * seen nor below the stream's last id, so seq keeps growing across a
 * Redis restart. Seqs it jumps over are never used: a hole entry (field
 * h: the first of them; its id: the last) and a broadcast ("J<stream>
 * FIRST LAST") say so, so that hubs do not take them for lost records. */
static const char LUA_SEQ_FLOOR[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local floor = tonumber(ARGV[1])\n"
    "local used = cur\n"
    "local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
    "if last[1] then\n"
    "  local s = tonumber(string.match(last[1][1], '-(%d+)$'))\n"
    "  if s and s > floor then floor = s end\n"
    "  if s and s > used then used = s end\n"
    "end\n"
    "if used < floor then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '0-' .. floor,\n"
    "             'h', used + 1)\n"
    "  redis.call('PUBLISH', ARGV[3], 'J' .. ARGV[4] .. (used + 1) .. ' ' ..\n"
    "             floor)\n"
    "end\n"
    "if cur < floor then redis.call('SET', KEYS[1], floor) end\n"
    "return 1\n";

/* KEYS[1] seq key, KEYS[2] stream, KEYS[3] the sending hub's batch key.
 * ARGV: maxlen, channel, stream digit, origin, batch number, records...
 * A batch number not above the last one run is an append sent again
 * after its answer was lost: skipped (-1). Each record gets the next seq,
 * goes into the stream and to every hub. origin (a hub id, or empty): the
 * records were shown on that hub already (made while it was cut off from
 * Redis); the stream entry says so (field o) and so does the broadcast
 * ("S..." instead of "R..."). */
static const char LUA_APPEND[] =
    "local no = tonumber(ARGV[5])\n"
    "if no <= tonumber(redis.call('GET', KEYS[3]) or '0') then\n"
    "  return -1\n"
    "end\n"
    "redis.call('SET', KEYS[3], ARGV[5], 'EX', 86400)\n"
    "for i = 6, #ARGV do\n"
    "  local seq = redis.call('INCR', KEYS[1])\n"
    "  if ARGV[4] == '' then\n"
    "    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. seq,\n"
    "               'r', ARGV[i])\n"
    "    redis.call('PUBLISH', ARGV[2], 'R' .. ARGV[3] .. seq .. ' ' .. ARGV[i])\n"
    "  else\n"
    "    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. seq,\n"
    "               'r', ARGV[i], 'o', ARGV[4])\n"
    "    redis.call('PUBLISH', ARGV[2], 'S' .. ARGV[3] .. seq .. ' ' ..\n"
    "               ARGV[4] .. ' ' .. ARGV[i])\n"
    "  end\n"
    "end\n"
    "return #ARGV - 5\n";

/* ---- the connections: sockets on the driver's loop, hiredis's parser ---- */

static void go_down(ms_rcl *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void dispatch_cmd(rconn *r, redisReply *rep);
static void dispatch_sub(rconn *r, redisReply *rep);
static int connect_next(ms_rcl *c);

/* The connection as an engine (plain bytes in and out), for ms_pump and
 * under a TLS layer. feed only buffers: replies are handled after the
 * pump, outside it. */
static int rc_feed(void *p, const uint8_t *d, size_t n, int64_t now) {
  rconn *r = p;
  (void)now;
  if (!r->rd || redisReaderFeed(r->rd, (const char *)d, n) != REDIS_OK)
    return MS_ERR_NOMEM;
  return 0;
}
static const uint8_t *rc_peek(void *p, size_t *len) {
  rconn *r = p;
  *len = r->out.len - r->out_off;
  return r->out.data ? (const uint8_t *)r->out.data + r->out_off
                  : (const uint8_t *)"";
}
static void rc_consume(void *p, size_t n) {
  rconn *r = p;
  r->out_off += n;
  if (r->out_off >= r->out.len)
    r->out_off = r->out.len = 0;
}
static int rc_want_read(const void *p) { return !((const rconn *)p)->eof; }
static int rc_want_write(const void *p) {
  const rconn *r = p;
  return !r->eof && r->out.len > r->out_off;
}
static void rc_eof(void *p, int64_t now) {
  (void)now;
  ((rconn *)p)->eof = 1;
}
static const ms_engine_ops rc_ops = {rc_feed,       rc_peek, rc_consume,
                                     rc_want_read,  rc_want_write,
                                     rc_eof,        NULL,    NULL};

static void rc_watch(rconn *r) {
  if (r->io.fd < 0)
    return;
  unsigned ev = 0;
  if (r->phase == RC_CONNECTING) {
    ev = MS_DRV_WRITE;
  } else if (r->phase == RC_OPEN) {
    size_t n = 0;
    r->ops->peek(r->eng, &n);
    ev = MS_DRV_READ | (n ? MS_DRV_WRITE : 0u);
  }
  ms_drv_watch(r->c->d, &r->io, ev);
}

/* Why the stream ended, for the log and the state callback. */
static const char *rc_why(rconn *r) {
  const char *e = r->wrapped ? r->c->tls->vt->error(r->wrapped) : NULL;
  return e ? e : "connection lost";
}

/* Handle the replies read so far: how many, or -1 when the connection
 * went down meanwhile (r is then closed). */
static int rc_process(rconn *r) {
  ms_rcl *c = r->c;
  unsigned gen = c->gen;
  int k = 0;
  while (r->rd && !c->closing && gen == c->gen) {
    void *rep = NULL;
    if (redisReaderGetReply(r->rd, &rep) != REDIS_OK) {
      go_down(c, "bad reply from Redis: %s", r->rd->errstr);
      return -1;
    }
    if (!rep)
      break;
    if (r == &c->cmd)
      dispatch_cmd(r, rep);
    else
      dispatch_sub(r, rep);
    freeReplyObject(rep);
    k++;
  }
  return (c->closing || gen != c->gen) ? -1 : k;
}

/* A TLS layer may hold records it has read but not yet decrypted for us
 * (it decrypts more when asked for output): ask, and handle the replies,
 * until nothing more comes. 0, or -1 when the connection went down. */
static int rc_settle(rconn *r) {
  for (;;) {
    size_t n = 0;
    if (r->phase == RC_OPEN)
      r->ops->peek(r->eng, &n);
    int k = rc_process(r);
    if (k <= 0)
      return k;
  }
}

/* Write what is queued (once per loop iteration, or when writable). */
static void rc_kick(rconn *r) {
  if (r->phase != RC_OPEN)
    return;
  if (!r->c->d) { /* no driver (the fuzz entry point): taken as written */
    if (r->c->keep_sent && r == &r->c->cmd &&
        ms_buf_append(&r->c->sent, r->out.data + r->out_off,
                      r->out.len - r->out_off))
      r->c->keep_sent = 0; /* (a test's memory: the test sees it missing) */
    r->out.len = r->out_off = 0;
    return;
  }
  int mask = ms_pump_write(r->ops, r->eng, &r->t, now_of(r->c));
  if (rc_settle(r) < 0)
    return;
  if (r->eof || mask < 0 || (mask & MS_PUMP_DONE)) {
    go_down(r->c, "%s", rc_why(r));
    return;
  }
  rc_watch(r);
}

static void rc_ready(ms_drv_io *io, unsigned events) {
  rconn *r = (rconn *)io;
  ms_rcl *c = r->c;
  if (c->closing)
    return;
  if (r->phase == RC_CONNECTING) {
    if (ms_tcp_connect_result(r->io.fd) < 0) {
      int e = errno ? errno : ECONNREFUSED;
      /* The next address of the name, if any (both sockets move, while
       * neither has sent anything). */
      rconn *o = r == &c->cmd ? &c->sub : &c->cmd;
      if (o->phase == RC_OPEN || connect_next(c) < 0)
        go_down(c, "cannot connect to %s:%d: %s", c->host, c->port,
                strerror(e));
      return;
    }
    if (c->tls) {
      if (c->tls->vt->open(c->tls->self, 0, c->host, &rc_ops, r,
                           &r->wrapped) != 0) {
        r->wrapped = NULL;
        go_down(c, "TLS: cannot open a session for %s", c->host);
        return;
      }
      r->ops = c->tls->ops;
      r->eng = r->wrapped;
    }
    r->phase = RC_OPEN;
    events = MS_DRV_WRITE;
  }
  if (r->phase != RC_OPEN)
    return;
  int mask = (events & MS_DRV_READ)
                 ? ms_pump(r->ops, r->eng, &r->t, READ_MAX, now_of(c))
                 : ms_pump_write(r->ops, r->eng, &r->t, now_of(c));
  if (rc_settle(r) < 0)
    return;
  if (r->eof || mask < 0 || (mask & MS_PUMP_DONE)) {
    go_down(c, "%s", rc_why(r));
    return;
  }
  rc_watch(r);
}

/* A new attempt: a reader and an empty buffer (commands may be queued
 * before the socket is open; they leave once it is). */

/* hiredis 0.14 allocates an array reply's element table as soon as it
 * reads the count ("*400000000" is 3.2 GB), before any element has come:
 * its default functions, with arrays above this many elements refused
 * (the reader then fails as out of memory, and the connection is given
 * up). No reply the driver asks for comes near it (history reads are at
 * most stream_max entries). */
#define REPLY_MAX_ELEMENTS (1 << 20)

static void *capped_array(const redisReadTask *t, int elements) {
  const capped_fns *cf = t->privdata;
  if (elements > REPLY_MAX_ELEMENTS)
    return NULL;
  return cf->array(t, elements);
}

static void capped_reader(redisReader *rd, capped_fns *cf) {
  cf->fns = *rd->fn;
  cf->array = cf->fns.createArray;
  cf->fns.createArray = capped_array;
  rd->fn = &cf->fns;
  rd->privdata = cf;
}

static int rc_init(ms_rcl *c, rconn *r) {
  memset(r, 0, sizeof *r);
  r->c = c;
  buf_init(&r->out, c->mem);
  /* No count bound: every command sent is awaited (its reply or the
   * connection's end). */
  ms_ring_init(&r->q, c->mem, SIZE_MAX, 0, MS_RING_REFUSE, NULL, NULL, NULL);
  r->io.fd = -1;
  r->s.fd = -1;
  r->ops = &rc_ops;
  r->eng = r;
  r->rd = redisReaderCreate();
  if (!r->rd)
    return MS_ERR_NOMEM;
  capped_reader(r->rd, &r->cap);
  return 0;
}

static int connect_one(const struct sockaddr *sa, socklen_t len) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, sa, len) == 0 || errno == EINPROGRESS)
    return fd;
  close(fd);
  return -1;
}

static int rc_connect(rconn *r, const struct sockaddr *sa, socklen_t len) {
  int fd = connect_one(sa, len);
  if (fd < 0)
    return MS_ERR_IO;
  ms_fd_transport(&r->s, fd, &r->t);
  ms_drv_io_setup(&r->io, r->c->d, fd, rc_ready);
  r->phase = RC_CONNECTING;
  rc_watch(r);
  return 0;
}

/* Close from anywhere: the replies still awaited get (NULL, NULL). */
static void rc_close(rconn *r) {
  ms_rcl *c = r->c;
  if (!c)
    return;
  if (r->io.fd >= 0) {
    ms_drv_unwatch(c->d, &r->io);
    if (r->wrapped)
      c->tls->vt->close(r->wrapped);
    r->t.vt->close(r->t.self);
  }
  r->wrapped = NULL;
  r->phase = RC_NONE;
  if (r->rd)
    redisReaderFree(r->rd);
  r->rd = NULL;
  ms_buf_free(&r->out);
  r->out_off = 0;
  cmd_ctx *x;
  while ((x = ms_ring_pop(&r->q)) != NULL) {
    if (c->pending)
      c->pending--;
    if (x->fn)
      x->fn(NULL, NULL, x->priv);
    ms_free(c->mem, x);
  }
  ms_ring_free(&r->q);
}

/* ---- name resolution (c-ares on the loop) ---- */

static void resolver_ready(ms_drv_io *io, unsigned events);

static void ares_sock_state(void *data, ares_socket_t fd, int readable,
                            int writable) {
  ms_rcl *c = data;
  ms_drv_io *slot = NULL, *free_slot = NULL;
  for (int i = 0; i < RESOLVER_FDS; i++) {
    if (c->ares_io[i].io.fd == fd)
      slot = &c->ares_io[i].io;
    else if (c->ares_io[i].io.fd < 0 && !free_slot)
      free_slot = &c->ares_io[i].io;
  }
  if (!readable && !writable) {
    if (slot)
      ms_drv_unwatch(c->d, slot);
    return;
  }
  if (!slot) {
    if (!free_slot)
      return; /* more sockets than slots: its timeouts still run */
    slot = free_slot;
    ms_drv_io_setup(slot, c->d, fd, resolver_ready);
  }
  ms_drv_watch(c->d, slot,
               (readable ? MS_DRV_READ : 0u) | (writable ? MS_DRV_WRITE : 0u));
}

static void resolver_ready(ms_drv_io *io, unsigned events) {
  ms_rcl *c = ((ares_slot *)io)->c;
  if (!c->ares || c->closing)
    return;
  ares_socket_t fd = io->fd;
  ares_process_fd(c->ares, (events & MS_DRV_READ) ? fd : ARES_SOCKET_BAD,
                  (events & MS_DRV_WRITE) ? fd : ARES_SOCKET_BAD);
}

static int64_t resolver_deadline(ms_rcl *c, int64_t now) {
  struct timeval tv;
  if (!c->ares || !c->resolving || !ares_timeout(c->ares, NULL, &tv))
    return MS_NO_DEADLINE;
  return now + (int64_t)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
}

static int open_both(ms_rcl *c, const struct sockaddr *sa, socklen_t len) {
  if (rc_connect(&c->cmd, sa, len) || rc_connect(&c->sub, sa, len))
    return MS_ERR_IO;
  return 0;
}

static void free_addrs(ms_rcl *c) {
  if (c->addrs)
    ares_freeaddrinfo(c->addrs);
  c->addrs = NULL;
  c->next_addr = NULL;
}

/* Both sockets to the next address of the lookup that takes a connect;
 * 0, or -1 when none is left. */
static int connect_next(ms_rcl *c) {
  while (c->next_addr) {
    struct ares_addrinfo_node *n = c->next_addr;
    c->next_addr = n->ai_next;
    for (rconn *r = &c->cmd; r; r = r == &c->cmd ? &c->sub : NULL)
      if (r->io.fd >= 0) {
        ms_drv_unwatch(c->d, &r->io);
        r->t.vt->close(r->t.self);
        r->phase = RC_NONE;
      }
    if (open_both(c, n->ai_addr, n->ai_addrlen) == 0)
      return 0;
  }
  return -1;
}

static void on_resolved(void *arg, int status, int timeouts,
                        struct ares_addrinfo *res) {
  ms_rcl *c = arg;
  (void)timeouts;
  if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED ||
      c->closing || c->resolve_gen != c->gen || c->state != ST_CONNECTING) {
    if (res)
      ares_freeaddrinfo(res);
    return;
  }
  c->resolving = 0;
  if (status != ARES_SUCCESS || !res || !res->nodes) {
    if (res)
      ares_freeaddrinfo(res);
    go_down(c, "cannot resolve %s: %s", c->host, ares_strerror(status));
    return;
  }
  free_addrs(c);
  c->addrs = res;
  c->next_addr = res->nodes;
  if (connect_next(c) < 0)
    go_down(c, "cannot connect to %s:%d: %s", c->host, c->port,
            strerror(errno));
}

/* ---- commands ---- */

/* Queue a command on the command connection; fn is called exactly once
 * (c NULL if the connection it was sent on is gone, rep NULL if no reply
 * came). It leaves with the others at the end of the loop iteration. */
static int command(ms_rcl *c, int argc, const char **argv,
                   const size_t *lens, reply_fn fn, void *priv) {
  rconn *r = &c->cmd;
  if (!r->rd)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  cmd_ctx *x = ms_malloc(c->mem, sizeof *x);
  if (!x)
    return MS_ERR_NOMEM;
  x->fn = fn;
  x->priv = priv;
  size_t before = r->out.len;
  char *cmd = NULL;
  int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
  int rv = n < 0 ? MS_ERR_NOMEM : ms_buf_append(&r->out, cmd, (size_t)n);
  redisFreeCommand(cmd);
  if (rv == 0 && ms_ring_push(&r->q, x) != 0) {
    r->out.len = before; /* not sent: its reply would have no one */
    rv = MS_ERR_NOMEM;
  }
  if (rv) {
    ms_free(c->mem, x);
    return MS_ERR_NOMEM;
  }
  c->pending++;
  c->st.redis_commands++;
  want_flush(c);
  return 0;
}

/* A command on the subscriber connection (AUTH, SUBSCRIBE): its replies
 * are read by dispatch_sub. */
static int sub_command(ms_rcl *c, int argc, const char **argv,
                       const size_t *lens) {
  rconn *r = &c->sub;
  if (!r->rd)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  char *cmd = NULL;
  int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
  int rv = n < 0 ? MS_ERR_NOMEM : ms_buf_append(&r->out, cmd, (size_t)n);
  redisFreeCommand(cmd);
  if (rv == 0) {
    c->st.redis_commands++;
    want_flush(c);
  }
  return rv;
}

static void dispatch_cmd(rconn *r, redisReply *rep) {
  ms_rcl *c = r->c;
  cmd_ctx *x = ms_ring_pop(&r->q);
  if (!x) {
    go_down(c, "unexpected reply from Redis");
    return;
  }
  if (c->pending)
    c->pending--;
  c->st.redis_replies++;
  if (rep->type == REDIS_REPLY_ERROR)
    c->st.redis_errors++;
  if (x->fn)
    x->fn(c, rep, x->priv);
  ms_free(c->mem, x);
}

/* ---- peers and the registry replica ---- */

static peer *peer_get(ms_rcl *c, const char *id, size_t n, int create) {
  peer *p = sget(&c->peers, id, n);
  if (p || !create || n == 0 || n >= HUB_ID_MAX)
    return p;
  p = ms_calloc(c->mem, 1, sizeof *p + n + 1);
  if (!p)
    return NULL;
  buf_init(&p->out, c->mem);
  memcpy(p->id, id, n);
  p->last_seen = now_of(c);
  if (sput(&c->peers, id, n, p)) {
    ms_free(c->mem, p);
    return NULL;
  }
  c->st.hubs = c->peers.n;
  return p;
}

static void peer_free(const ms_allocator *mem, void *v) {
  peer *p = v;
  ms_buf_free(&p->out);
  ms_free(mem, p);
}

struct drop_ctx {
  ms_rcl *c;
  const char *hub;
  ms_buf *names; /* NULL, or where the names go ("name\0name\0...") */
  int failed;
};
static void drop_names_of(void *ud, sent *e) {
  struct drop_ctx *x = ud;
  reg *g = e->val;
  if (strcmp(g->hub, x->hub) != 0)
    return;
  if (x->names && ms_buf_append(x->names, e->key, e->len + 1))
    x->failed = 1;
  ms_free(x->c->mem, sdel(&x->c->registry, e->key, e->len));
}

/* A hub that went silent: one surviving hub (the first to claim
 * PREFIX:lost:HUB, and only while HUB has not renewed meanwhile) says
 * PRESENCE down for each name it held. */
typedef struct lost_ctx {
  struct ms_rcl *c;
  struct lost_ctx *next;
  int64_t give_up; /* no more retries after this */
  char hub[HUB_ID_MAX];
  ms_buf names;
} lost_ctx;

static lost_ctx *lost_new(ms_rcl *c, const char *hub, int64_t give_up) {
  lost_ctx *l = ms_calloc(c->mem, 1, sizeof *l);
  if (!l)
    return NULL;
  l->c = c;
  l->give_up = give_up;
  snprintf(l->hub, sizeof l->hub, "%s", hub);
  buf_init(&l->names, c->mem);
  return l;
}

static void lost_free(lost_ctx *l) {
  ms_buf_free(&l->names);
  ms_free(l->c->mem, l);
}

/* KEYS[1] lost key, KEYS[2] the hub's alive key. ARGV: claimer, ttl.
 * 1: claimed, 0: another hub claimed it, -1: the hub's alive key is
 * still there (noticed before it expired: tried again later). */
static const char LUA_LOST[] =
    "if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end\n"
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

static void reply_lost(ms_rcl *c, redisReply *rep, void *priv) {
  lost_ctx *x = priv;
  ms_rcl *cc = x->c;
  if (c && rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == -1 &&
      !cc->closing && now_of(cc) < x->give_up) {
    /* Its alive key has not expired yet: claim again at a later check
     * (unless the hub shows up again meanwhile). */
    x->next = cc->lost_retry;
    cc->lost_retry = x;
    return;
  }
  if (c && rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1 &&
      !cc->closing) {
    int64_t now = now_of(cc);
    for (size_t off = 0; off < x->names.len;) {
      const char *nm = x->names.data + off;
      size_t n = strlen(nm);
      if (ms_hub_cluster_presence_lost(cc->h, nm, n, x->hub, now) == 0)
        cc->st.presence_lost++;
      off += n + 1;
    }
  }
  lost_free(x);
}

static void announce_lost(ms_rcl *c, lost_ctx *x) {
  char k_lost[PREFIX_MAX + HUB_ID_MAX + 8], k_alive[PREFIX_MAX + HUB_ID_MAX + 8],
      ttl[32];
  snprintf(k_lost, sizeof k_lost, "%s:lost:%s", c->prefix, x->hub);
  snprintf(k_alive, sizeof k_alive, "%s:alive:%s", c->prefix, x->hub);
  snprintf(ttl, sizeof ttl, "%lld", (long long)LOST_TTL_MS);
  const char *argv[] = {"EVAL", LUA_LOST, "2", k_lost, k_alive, c->me, ttl};
  size_t lens[7];
  for (int i = 0; i < 7; i++)
    lens[i] = strlen(argv[i]);
  if (command(c, 7, argv, lens, reply_lost, x) != 0)
    lost_free(x);
}

/* Claims refused earlier because the hub's alive key still lived: tried
 * again until one is taken (here or elsewhere), the hub is seen again,
 * or the alive key should long have lapsed. */
static void retry_lost(ms_rcl *c, int64_t now) {
  lost_ctx *l = c->lost_retry;
  c->lost_retry = NULL;
  while (l) {
    lost_ctx *nx = l->next;
    l->next = NULL;
    if (now >= l->give_up || peer_get(c, l->hub, strlen(l->hub), 0)) {
      lost_free(l);
    } else {
      announce_lost(c, l);
    }
    l = nx;
  }
}

static void lost_free_all(ms_rcl *c) {
  while (c->lost_retry) {
    lost_ctx *l = c->lost_retry;
    c->lost_retry = l->next;
    lost_free(l);
  }
}

/* A hub is gone: its names leave the replica and its requests fail.
 * silent: it stopped renewing (killed, cut off), not a goodbye. */
static void peer_gone(ms_rcl *c, peer *p, int silent) {
  lost_ctx *lx = NULL;
  if (silent) /* its alive key lapses within a lease of its last renewal */
    lx = lost_new(c, p->id, now_of(c) + 3 * c->lease_ms);
  struct drop_ctx x = {c, p->id, lx ? &lx->names : NULL, 0};
  seach(&c->registry, drop_names_of, &x);
  c->st.services = c->registry.n;
  if (lx && lx->names.len && !x.failed)
    announce_lost(c, lx);
  else if (lx)
    lost_free(lx);
  /* Out of the flush list first. */
  for (peer **pp = &c->flush_head; *pp; pp = &(*pp)->flush_next)
    if (*pp == p) {
      *pp = p->flush_next;
      break;
    }
  char id[HUB_ID_MAX];
  snprintf(id, sizeof id, "%s", p->id);
  sdel(&c->peers, p->id, strlen(p->id));
  peer_free(c->mem, p);
  c->st.hubs = c->peers.n;
  ms_hub_cluster_hub_down(c->h, id, MS_ERR_TARGET_DISCONNECTED, now_of(c));
}

static void reg_set(ms_rcl *c, const char *name, size_t n, const char *hub,
                    size_t hn) {
  if (hn == 0 || hn >= HUB_ID_MAX)
    return;
  reg *g = sget(&c->registry, name, n);
  if (!g) {
    g = ms_malloc(c->mem, sizeof *g);
    if (!g || sput(&c->registry, name, n, g)) {
      ms_free(c->mem, g);
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
    ms_free(c->mem, sdel(&c->registry, name, n));
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
  free_addrs(c);
  c->err[0] = '\0';
  c->next_renew = now_of(c); /* re-assert the leases at once */
  want_flush(c);
  ms_hub_cluster_streams(c->h, 1, now_of(c));
  if (c->on_state)
    c->on_state(c->state_ud, 1, NULL);
}

/* The held records go (the slots too: held only during a history read). */
static void hold_clear(ms_rcl *c, int s) {
  ms_ring_free(&c->hold[s]);
  c->hold_refused[s] = c->hold_refused_to[s] = 0;
}

static void go_down(ms_rcl *c, const char *fmt, ...) {
  if (c->state == ST_DOWN)
    return;
  char why[sizeof c->err];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  int was_up = c->state == ST_UP;
  /* Said once per reason, not at every retry. */
  int news = was_up || strcmp(why, c->err) != 0;
  snprintf(c->err, sizeof c->err, "%s", why);
  c->state = ST_DOWN;
  c->gen++;
  c->st.disconnects++;
  c->sub_ready = c->reg_ready = c->info_ready = 0;
  c->sub_acks = 0;
  c->sync_pending[0] = c->sync_pending[1] = 0;
  hold_clear(c, 0);
  hold_clear(c, 1);
  if (c->resolving && c->ares)
    ares_cancel(c->ares);
  c->resolving = 0;
  free_addrs(c);
  rc_close(&c->cmd);
  rc_close(&c->sub);
  c->pending = 0;
  /* Nothing is known about the others until Redis is back. */
  sclear(&c->registry, val_free);
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
  if (!c->closing)
    ms_hub_cluster_streams(c->h, 0, now); /* records shown here at once */
  if (news && c->on_state && !c->closing)
    c->on_state(c->state_ud, 0, c->err);
  want_flush(c);
}

static void on_sub_message(ms_rcl *c, redisReply *rep);
static void start_sync(ms_rcl *c);

/* What the subscriber connection reads: confirmations, messages, and
 * the status of AUTH. */
static void dispatch_sub(rconn *r, redisReply *rep) {
  ms_rcl *c = r->c;
  c->st.redis_replies++;
  if (rep->type == REDIS_REPLY_ERROR) {
    c->st.redis_errors++;
    go_down(c, "Redis refused the subscriber: %.*s", (int)rep->len,
            rep->str);
    return;
  }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
      rep->element[0]->type != REDIS_REPLY_STRING)
    return; /* +OK of AUTH */
  c->st.redis_replies--; /* pushed messages are not replies */
  const char *kind = rep->element[0]->str;
  if (strcmp(kind, "subscribe") == 0 || strcmp(kind, "ssubscribe") == 0) {
    c->st.redis_replies++;
    if (++c->sub_acks == (c->sharded ? 3 : 2) && !c->sub_ready) {
      c->sub_ready = 1;
      /* Only now the history: whatever is appended after this read
       * reaches the subscription (held until the history is in). */
      start_sync(c);
      check_up(c);
    }
    return;
  }
  if (strcmp(kind, "message") == 0 || strcmp(kind, "smessage") == 0)
    on_sub_message(c, rep);
}

static void reply_auth(ms_rcl *c, redisReply *rep, void *priv) {
  (void)priv;
  if (c && (!rep || rep->type == REDIS_REPLY_ERROR))
    go_down(c, "Redis refused %s: %.*s", priv ? "SELECT" : "AUTH",
            rep ? (int)rep->len : 0, rep ? rep->str : "");
}

/* The server's version decides how this hub's channel is subscribed:
 * sharded (SSUBSCRIBE, Redis 7) besides classic, so that hubs publishing
 * either way reach it. The channel for every hub stays classic (the
 * scripts PUBLISH to it). */
static void reply_info(ms_rcl *c, redisReply *rep, void *priv) {
  (void)priv;
  if (!c)
    return;
  if (!rep || rep->type == REDIS_REPLY_ERROR) {
    go_down(c, "Redis refused INFO: %.*s", rep ? (int)rep->len : 0,
            rep ? rep->str : "");
    return;
  }
  int major = 0;
  if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS) {
    const char *v = strstr(rep->str, "redis_version:");
    if (v)
      major = atoi(v + strlen("redis_version:"));
  }
  c->sharded = !c->classic_only && major >= 7;
  const char *argv[3];
  size_t lens[3];
  argv[0] = "SUBSCRIBE";
  argv[1] = c->ch_me;
  argv[2] = c->ch_all;
  lens[0] = 9;
  lens[1] = strlen(c->ch_me);
  lens[2] = strlen(c->ch_all);
  int rv = sub_command(c, 3, argv, lens);
  if (rv == 0 && c->sharded) {
    argv[0] = "SSUBSCRIBE";
    lens[0] = 10;
    rv = sub_command(c, 2, argv, lens);
  }
  if (rv)
    go_down(c, "out of memory");
  c->info_ready = 1;
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

/* One record in cluster order. Its seq may already be taken here by a
 * record of this hub's shown while the cluster was away: then it cannot
 * be shown, and subscribers are told (a gap marker, see flush_missed). */
static void deliver_record(ms_rcl *c, int s, uint64_t seq, const uint8_t *p,
                           size_t n, int own) {
  if (seq <= c->cl_seq[s])
    return; /* had it */
  c->cl_seq[s] = seq;
  if (own == OWN_HOLE) { /* seqs up to seq are never used */
    ms_hub_cluster_skip(c->h, s, seq, now_of(c));
    return;
  }
  if (seq <= ms_hub_cluster_last_seq(c->h, s)) {
    if (!own)
      c->missed[s]++;
    return;
  }
  if (own)
    ms_hub_cluster_record_shown(c->h, s, seq, p, n, now_of(c));
  else
    ms_hub_cluster_record(c->h, s, seq, p, n, now_of(c));
}

static void flush_missed(ms_rcl *c, int s) {
  if (c->missed[s]) {
    uint64_t n = c->missed[s];
    c->missed[s] = 0;
    c->st.records_unshown += n;
    ms_hub_cluster_missed(c->h, s, n, now_of(c));
  }
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
          e->element[1]->element[0]->type != REDIS_REPLY_STRING ||
          e->element[1]->element[1]->type != REDIS_REPLY_STRING)
        continue;
      const char *dash = strchr(e->element[0]->str, '-');
      uint64_t seq = dash ? strtoull(dash + 1, NULL, 10) : 0;
      redisReply *v = e->element[1]->element[1];
      /* Fields: r RECORD [o ORIGIN], or h FIRST (a hole up to seq) */
      redisReply *f = e->element[1];
      int own = OWN_NO;
      if (f->element[0]->len == 1 && f->element[0]->str[0] == 'h')
        own = OWN_HOLE;
      else if (f->elements >= 4 && f->element[3]->type == REDIS_REPLY_STRING &&
               f->element[3]->len == strlen(c->me) &&
               memcmp(f->element[3]->str, c->me, f->element[3]->len) == 0)
        own = OWN_SHOWN;
      deliver_record(c, s, seq, (const uint8_t *)v->str, v->len, own);
    }
  }
  /* Then what arrived live meanwhile (older ones are ignored by seq). */
  hrec *x;
  while ((x = ms_ring_pop(&c->hold[s])) != NULL) {
    deliver_record(c, s, x->seq, x->data, x->len, x->own);
    ms_free(c->mem, x);
  }
  /* Records that could not be held: those newer than what was shown are
   * missing here (they stay in the cluster's stream), and subscribers are
   * told with the gap marker. The refused are the newest that came, with
   * distinct seqs up to hold_refused_to. Their seqs are then passed over
   * (no second gap when the next one comes, the history kept). (When the
   * connection drops instead, the next history read takes them from the
   * stream.) */
  uint64_t to = c->hold_refused_to[s];
  if (to > c->cl_seq[s]) {
    c->missed[s] += MS_MIN(to - c->cl_seq[s], c->hold_refused[s]);
    c->cl_seq[s] = to;
  }
  hold_clear(c, s);
  flush_missed(c, s);
  if (to)
    ms_hub_cluster_skip(c->h, s, to, now_of(c));
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
    argv[6] = count;
    argv[7] = c->ch_all;
    argv[8] = s ? "1" : "0";
    for (int i = 0; i < 9; i++)
      lens[i] = strlen(argv[i]);
    command(c, 9, argv, lens, reply_floor, NULL);
    /* Newest first, down to just after the last record this hub took
     * from the cluster (its own since may have taken seqs: see
     * deliver_record). */
    snprintf(start[s], sizeof start[s], "0-%llu",
             (unsigned long long)c->cl_seq[s] + 1);
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

static int resolver_init(ms_rcl *c) {
  return ms_drv_ares_channel(&c->ares, ares_sock_state, c);
}

/* Connect both sockets: an address literal at once, a name after a
 * lookup on the loop (never blocking it). */
static void start_address(ms_rcl *c) {
  struct sockaddr_in6 a6;
  struct sockaddr_in a4;
  memset(&a6, 0, sizeof a6);
  memset(&a4, 0, sizeof a4);
  int rv;
  if (inet_pton(AF_INET, c->host, &a4.sin_addr) == 1) {
    a4.sin_family = AF_INET;
    a4.sin_port = htons((uint16_t)c->port);
    rv = open_both(c, (struct sockaddr *)&a4, sizeof a4);
  } else if (inet_pton(AF_INET6, c->host, &a6.sin6_addr) == 1) {
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons((uint16_t)c->port);
    rv = open_both(c, (struct sockaddr *)&a6, sizeof a6);
  } else {
    if (!c->ares && resolver_init(c) < 0) {
      go_down(c, "cannot start the resolver");
      return;
    }
    char port[8];
    snprintf(port, sizeof port, "%d", c->port);
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = ARES_AI_NUMERICSERV;
    c->resolving = 1;
    c->resolve_gen = c->gen;
    ares_getaddrinfo(c->ares, c->host, port, &hints, on_resolved, c);
    return; /* (the answer may have come already: hosts file) */
  }
  if (rv)
    go_down(c, "cannot connect to %s:%d: %s", c->host, c->port,
            strerror(errno));
}

static void try_connect(ms_rcl *c) {
  c->state = ST_CONNECTING;
  c->connect_deadline = now_of(c) + CONNECT_TIMEOUT_MS;
  c->st.connects++;
  c->sharded = 0;
  if (rc_init(c, &c->cmd) || rc_init(c, &c->sub)) {
    go_down(c, "out of memory");
    return;
  }
  /* Queued now, sent once the sockets are open (TLS: after the
   * handshake). */
  const char *argv[8];
  size_t lens[8];
  char db[16];
  if (c->password) {
    argv[0] = "AUTH";
    argv[1] = c->password;
    lens[0] = 4;
    lens[1] = strlen(c->password);
    command(c, 2, argv, lens, reply_auth, NULL);
    sub_command(c, 2, argv, lens);
  }
  if (c->db) {
    snprintf(db, sizeof db, "%d", c->db);
    argv[0] = "SELECT";
    argv[1] = db;
    lens[0] = 6;
    lens[1] = strlen(db);
    command(c, 2, argv, lens, reply_auth, (void *)1);
  }
  argv[0] = "INFO";
  argv[1] = "server";
  lens[0] = 4;
  lens[1] = 6;
  command(c, 2, argv, lens, reply_info, NULL);
  argv[0] = "EVAL";
  argv[1] = LUA_DUMP;
  argv[2] = "0";
  char pfx[PREFIX_MAX + 2];
  snprintf(pfx, sizeof pfx, "%s:", c->prefix);
  argv[3] = pfx;
  for (int i = 0; i < 4; i++)
    lens[i] = strlen(argv[i]);
  command(c, 4, argv, lens, reply_dump, NULL);
  /* Live records are held until the history is read (start_sync, once
   * subscribed). */
  c->sync_pending[0] = c->sync_pending[1] = 1;
  if (c->state == ST_CONNECTING)
    start_address(c);
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
  case 'H': { /* heartbeat: "HHUB" or "HHUB s" (sharded) */
    const char *sp = memchr(body, ' ', bn);
    size_t hn = sp ? (size_t)(sp - body) : bn;
    if (hn == strlen(c->me) && memcmp(body, c->me, hn) == 0)
      return;
    peer *p = peer_get(c, body, hn, 1);
    if (p) {
      p->last_seen = now_of(c);
      p->sharded = sp && bn - hn == 2 && sp[1] == 's';
    }
    return;
  }
  case 'B': { /* goodbye: gone now, not after the lease */
    peer *p = peer_get(c, body, bn, 0);
    if (p)
      peer_gone(c, p, 0);
    return;
  }
  case 'R':   /* "R<stream><seq> <record>" */
  case 'J':   /* "J<stream><first> <last>": a hole */
  case 'S': { /* "S<stream><seq> <origin hub> <record>" */
    int s = body[0] == '1' ? 1 : 0;
    const char *sp = memchr(body, ' ', bn);
    if (!sp || bn < 3)
      return;
    uint64_t seq = strtoull(body + 1, NULL, 10);
    int own = OWN_NO;
    if (m[0] == 'J') {
      char num[24];
      size_t k = bn - (size_t)(sp + 1 - body);
      if (k == 0 || k >= sizeof num)
        return;
      memcpy(num, sp + 1, k);
      num[k] = '\0';
      seq = strtoull(num, NULL, 10); /* the last seq of the hole */
      own = OWN_HOLE;
    } else if (m[0] == 'S') {
      const char *o = sp + 1;
      const char *sp2 = memchr(o, ' ', bn - (size_t)(o - body));
      if (!sp2)
        return;
      own = (size_t)(sp2 - o) == strlen(c->me) &&
                    memcmp(o, c->me, (size_t)(sp2 - o)) == 0
                ? OWN_SHOWN
                : OWN_NO;
      sp = sp2;
    }
    const uint8_t *rec = (const uint8_t *)sp + 1;
    size_t rn = bn - (size_t)(sp + 1 - body);
    if (c->sync_pending[s]) {
      /* Full (or out of memory): counted, and told as a gap once the
       * history is in (a hole or this hub's own record is no loss). */
      hrec *x = ms_malloc(c->mem, sizeof *x + rn);
      if (x) {
        x->own = own;
        x->seq = seq;
        x->len = rn;
        if (rn)
          memcpy(x->data, rec, rn);
        if (ms_ring_push(&c->hold[s], x) == 0)
          return;
        ms_free(c->mem, x);
      }
      if (own == OWN_NO)
        c->hold_refused[s]++;
      c->hold_refused_to[s] = MS_MAX(c->hold_refused_to[s], seq);
      return;
    }
    deliver_record(c, s, seq, rec, rn, own);
    flush_missed(c, s);
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
    ms_free(cc->mem, x);
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
  ms_free(cc->mem, x);
}

static void op_claim(void *ctx, const char *name, size_t len, uint64_t tag,
                     unsigned flags) {
  ms_rcl *c = ctx;
  int rv = MS_ERR_CLUSTER_UNAVAILABLE;
  claim_ctx *x = NULL;
  if (c->state == ST_UP) {
    x = ms_malloc(c->mem, sizeof *x + len + 1);
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
        ms_free(c->mem, x);
      }
    }
  }
  if (rv != 0) {
    /* Answered at the end of this iteration, not from inside the hook.
     * (Without memory the engine's claim deadline answers it.) */
    early *e = ms_malloc(c->mem, sizeof *e);
    if (e) {
      e->tag = tag;
      e->result = MS_ERR_CLUSTER_UNAVAILABLE;
      if (ms_ring_push(&c->early, e) == 0)
        want_flush(c);
      else
        ms_free(c->mem, e);
    }
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
  ms_free(cc->mem, x);
}

static int op_resolve(void *ctx, const char *name, size_t len, uint64_t hid,
                      const uint8_t *msg, size_t n) {
  ms_rcl *c = ctx;
  if (c->state != ST_UP)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  resolve_ctx *x = ms_malloc(c->mem, sizeof *x + n + len + 1);
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
    ms_free(c->mem, x);
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
  /* All of the frame or none of it (the batch stays whole). */
  size_t before = p->out.len;
  int rv = 0;
  if (p->out.len == 0) {
    uint8_t n = (uint8_t)strlen(c->me);
    rv = ms_buf_append(&p->out, &n, 1);
    if (rv == 0)
      rv = ms_buf_append(&p->out, c->me, n);
  }
  uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16),
                    (uint8_t)(len >> 8), (uint8_t)len};
  if (rv == 0)
    rv = ms_buf_append(&p->out, hdr, 4);
  if (rv == 0)
    rv = ms_buf_append(&p->out, msg, len);
  if (rv) {
    p->out.len = before;
    return MS_ERR_NOMEM;
  }
  c->st.messages_out++;
  if (!p->dirty) {
    p->dirty = 1;
    p->flush_next = c->flush_head;
    c->flush_head = p;
    want_flush(c);
  }
  return 0;
}

static int op_publish(void *ctx, int stream, const uint8_t *rec,
                      size_t len) {
  ms_rcl *c = ctx;
  int s = stream == MS_CLUSTER_PRESENCE ? 1 : 0;
  orec *o = ms_malloc(c->mem, sizeof *o + len);
  if (!o)
    return MS_ERR_NOMEM;
  /* Not up: the hub shows it at once (ms_hub_cluster_streams). */
  o->shown = c->state != ST_UP;
  o->len = len;
  if (len)
    memcpy(o->data, rec, len);
  /* Redis away too long: the oldest waiting record goes (counted). */
  uint64_t dropped = c->out[s].dropped;
  if (ms_ring_push(&c->out[s], o) != 0) {
    ms_free(c->mem, o);
    return MS_ERR_NOMEM;
  }
  c->st.records_dropped += c->out[s].dropped - dropped;
  want_flush(c);
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
    rv = ms_buf_append(b, line, (size_t)k);                                \
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
  RM("microstream_cluster_sharded_pubsub", "gauge",
     "1 while this hub's channel is sharded (SSUBSCRIBE).",
     c->state == ST_UP && c->sharded);
  RM("microstream_cluster_sharded_batches_total", "counter",
     "Of the batches, those sent with SPUBLISH.", s->sharded_batches);
  RM("microstream_cluster_messages_out_total", "counter",
     "Hub-to-hub messages sent.", s->messages_out);
  RM("microstream_cluster_messages_in_total", "counter",
     "Hub-to-hub messages received.", s->messages_in);
  RM("microstream_cluster_records_out_total", "counter",
     "Log and presence records appended to the cluster streams.",
     s->records_out);
  RM("microstream_cluster_presence_lost_total", "counter",
     "PRESENCE down said by this hub for services of a vanished hub.",
     s->presence_lost);
  RM("microstream_cluster_records_unshown_total", "counter",
     "Cluster records not shown here (gap markers): their seq was taken by "
     "this hub's own records while Redis was away, or they came past the "
     "bound while the history was read.", s->records_unshown);
  RM("microstream_cluster_records_dropped_total", "counter",
     "Records lost: Redis unreachable past the backlog's bound, or the "
     "append refused.", s->records_dropped);
  RM("microstream_cluster_records_resent_total", "counter",
     "Records appended again: the connection ended before Redis answered "
     "(an append that had run is skipped).", s->records_resent);
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
  x->rv = ms_buf_append(x->b, "\"", 1);
  for (size_t i = 0; i < n && x->rv == 0; i++) {
    unsigned char ch = (unsigned char)s[i];
    char esc[8];
    if (ch == '"' || ch == '\\') {
      esc[0] = '\\';
      esc[1] = (char)ch;
      x->rv = ms_buf_append(x->b, esc, 2);
    } else if (ch < 0x20) {
      int k = snprintf(esc, sizeof esc, "\\u%04x", ch);
      x->rv = ms_buf_append(x->b, esc, (size_t)k);
    } else {
      x->rv = ms_buf_append(x->b, (const char *)&ch, 1);
    }
  }
  if (x->rv == 0)
    x->rv = ms_buf_append(x->b, "\"", 1);
}

static void svc_one(void *ud, sent *e) {
  struct svc_ctx *x = ud;
  reg *g = e->val;
  if (x->rv || strcmp(g->hub, x->c->me) == 0)
    return; /* the engine lists its own */
  if (!x->first)
    x->rv = ms_buf_append(x->b, ",", 1);
  x->first = 0;
  if (x->rv == 0)
    x->rv = ms_buf_append(x->b, "{\"name\":", 8);
  json_str(x, e->key, e->len);
  if (x->rv == 0)
    x->rv = ms_buf_append(x->b, ",\"hub\":", 7);
  json_str(x, g->hub, strlen(g->hub));
  if (x->rv == 0)
    x->rv = ms_buf_append(x->b, ",\"remote\":true}", 15);
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
  const char **argv = ms_malloc(c->mem, (n + 8) * sizeof *argv);
  size_t *lens = ms_malloc(c->mem, (n + 8) * sizeof *lens);
  if (!argv || !lens) {
    ms_free(c->mem, argv);
    ms_free(c->mem, lens);
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
  /* "H<hub>", " s" when its channel is also sharded */
  char hb[HUB_ID_MAX + 4];
  snprintf(hb, sizeof hb, "H%s%s", c->me, c->sharded ? " s" : "");
  argv[k++] = hb;
  for (int i = 0; i < k; i++)
    lens[i] = strlen(argv[i]);
  for (size_t i = 0; i < c->held.nb; i++)
    for (sent *e = c->held.b[i]; e; e = e->next) {
      argv[k] = e->key;
      lens[k++] = e->len;
    }
  command(c, k, argv, lens, reply_renew, NULL);
  c->st.renewals++;
  ms_free(c->mem, argv);
  ms_free(c->mem, lens);
}

static void reply_renew(ms_rcl *c, redisReply *rep, void *priv) {
  (void)priv;
  if (!c || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1)
    return;
  for (size_t i = 1; i < rep->elements; i++) {
    redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_STRING)
      continue;
    /* Another hub took it while this one could not renew. */
    sdel(&c->held, e->str, e->len);
    ms_hub_cluster_lost(c->h, e->str, e->len, now_of(c));
  }
  if (rep->element[0]->type == REDIS_REPLY_INTEGER &&
      rep->element[0]->integer == 1) {
    /* The others said PRESENCE down (hub_lost) for this hub's names:
     * those still held here are up again. */
    for (size_t i = 0; i < c->held.nb; i++)
      for (sent *e = c->held.b[i]; e; e = e->next)
        ms_hub_cluster_rejoined(c->h, e->key, e->len, now_of(c));
  }
}

static void batch_free(ms_rcl *c, obatch *b) {
  for (size_t i = 0; i < b->n; i++)
    ms_free(c->mem, b->r[i]);
  ms_free(c->mem, b);
}
static void batch_drop(void *item, void *ud) { batch_free(ud, item); }

static void reply_append(ms_rcl *c, redisReply *rep, void *priv);

/* One EVAL for the batch; 0, or the command could not be queued. */
#define APPEND_ARGS 11 /* EVAL, script, 3, the keys, ARGV before records */
static int send_batch(ms_rcl *c, obatch *b) {
  const char **argv = ms_malloc(c->mem, (b->n + APPEND_ARGS) * sizeof *argv);
  size_t *lens = ms_malloc(c->mem, (b->n + APPEND_ARGS) * sizeof *lens);
  if (!argv || !lens) {
    ms_free(c->mem, argv);
    ms_free(c->mem, lens);
    return MS_ERR_NOMEM;
  }
  char k_seq[PREFIX_MAX + 16], k_stream[PREFIX_MAX + 16], maxlen[32], no[24];
  snprintf(k_seq, sizeof k_seq, "%s:seq:%s", c->prefix, stream_names[b->s]);
  snprintf(k_stream, sizeof k_stream, "%s:%s", c->prefix,
           stream_names[b->s]);
  snprintf(maxlen, sizeof maxlen, "%zu", c->stream_max);
  snprintf(no, sizeof no, "%llu", (unsigned long long)b->no);
  int k = 0;
  argv[k++] = "EVAL";
  argv[k++] = LUA_APPEND;
  argv[k++] = "3";
  argv[k++] = k_seq;
  argv[k++] = k_stream;
  argv[k++] = c->batch_key;
  argv[k++] = maxlen;
  argv[k++] = c->ch_all;
  argv[k++] = b->s ? "1" : "0";
  argv[k++] = b->shown ? c->me : "";
  argv[k++] = no;
  for (int i = 0; i < k; i++)
    lens[i] = strlen(argv[i]);
  for (size_t i = 0; i < b->n; i++) {
    argv[k] = (const char *)b->r[i]->data;
    lens[k++] = b->r[i]->len;
  }
  int rv = command(c, k, argv, lens, reply_append, b);
  ms_free(c->mem, argv);
  ms_free(c->mem, lens);
  return rv;
}

/* Redis answered an append (c set): the oldest unanswered (answers come
 * in order); or the command connection ended before it did (c NULL): the
 * batch stays, to be sent again (when the driver is being deleted, the
 * ring frees it). */
static void reply_append(ms_rcl *c, redisReply *rep, void *priv) {
  obatch *b = priv;
  if (!c) {
    if (b->sent)
      b->resent = 1;
    b->sent = 0;
    return;
  }
  if (ms_ring_len(&c->unanswered) == 0 ||
      ms_ring_at(&c->unanswered, 0) != b) {
    go_down(c, "append answered out of order"); /* cannot happen */
    return;
  }
  ms_ring_pop(&c->unanswered);
  if (rep->type == REDIS_REPLY_ERROR)
    c->st.records_dropped += b->n; /* refused (a script error, OOM) */
  batch_free(c, b);
}

/* The records waiting for Redis, in order: first the appends not sent on
 * this connection (their answer was lost with an earlier one), again;
 * then one EVAL per run of records alike (shown here already or not).
 * An append joins `unanswered` before it is sent, so that keeping it can
 * not fail afterwards; one that could not be sent stays there, to go
 * first next time. */
static void flush_records(ms_rcl *c) {
  for (size_t i = 0; i < ms_ring_len(&c->unanswered); i++) {
    obatch *b = ms_ring_at(&c->unanswered, i);
    if (b->sent)
      continue;
    if (send_batch(c, b) != 0)
      return; /* kept, in order, for the next flush or connection */
    b->sent = 1;
    if (b->resent)
      c->st.records_resent += b->n;
  }
  for (int s = 0; s < 2; s++) {
    ms_ring *q = &c->out[s];
    while (ms_ring_len(q)) {
      int shown = ((orec *)ms_ring_at(q, 0))->shown;
      size_t n = 1;
      while (n < ms_ring_len(q) && ((orec *)ms_ring_at(q, n))->shown == shown)
        n++;
      obatch *b = ms_malloc(c->mem, sizeof *b + n * sizeof(orec *));
      if (!b)
        return; /* kept for the next flush */
      b->c = c;
      b->s = s;
      b->shown = shown;
      b->sent = b->resent = 0;
      b->no = c->batch_no + 1;
      b->n = n;
      for (size_t i = 0; i < n; i++)
        b->r[i] = ms_ring_at(q, i);
      if (ms_ring_push(&c->unanswered, b) != 0) {
        ms_free(c->mem, b);
        return; /* the records stay waiting */
      }
      c->batch_no++;
      c->st.records_out += n;
      for (size_t i = 0; i < n; i++)
        ms_ring_pop(q); /* the batch has them now */
      if (send_batch(c, b) != 0)
        return; /* it goes first next time */
      b->sent = 1;
    }
    /* The slots of an outage's backlog are given back once it is sent. */
    if (q->cap > 64)
      ms_ring_free(q);
  }
}

static void kick_both(ms_rcl *c);

void ms_rcl_flush(ms_rcl *c) {
  if (!c || c->closing)
    return;
  early *e;
  while ((e = ms_ring_pop(&c->early)) != NULL) {
    uint64_t tag = e->tag;
    int result = e->result;
    ms_free(c->mem, e);
    ms_hub_cluster_claimed(c->h, tag, result, NULL, now_of(c));
  }
  if (c->state != ST_UP) {
    if (c->state == ST_CONNECTING)
      kick_both(c);
    return;
  }
  while (c->flush_head) {
    peer *p = c->flush_head;
    c->flush_head = p->flush_next;
    p->dirty = 0;
    char ch[PREFIX_MAX + HUB_ID_MAX + 8];
    snprintf(ch, sizeof ch, "%s:hub:%s", c->prefix, p->id);
    /* Sharded to a hub that said it listens so (and this one may). */
    int sh = c->sharded && p->sharded;
    const char *argv[] = {sh ? "SPUBLISH" : "PUBLISH", ch, p->out.data};
    size_t lens[] = {sh ? 8u : 7u, strlen(ch), p->out.len};
    command(c, 3, argv, lens, NULL, NULL);
    c->st.batches++;
    if (sh)
      c->st.sharded_batches++;
    p->out.len = 0;
  }
  flush_records(c);
  kick_both(c);
}

/* The end of a loop iteration: what was queued leaves, one write per
 * connection. */
static void kick_both(ms_rcl *c) {
  unsigned gen = c->gen;
  rc_kick(&c->cmd);
  if (gen == c->gen && !c->closing)
    rc_kick(&c->sub);
}

void ms_rcl_tick(ms_rcl *c, int64_t now) {
  if (!c || c->closing)
    return;
  c->last_tick = now;
  if (c->state == ST_DOWN && !c->leaving && now >= c->next_try) {
    if (c->d) /* (no driver: the fuzz entry point connects itself) */
      try_connect(c);
  } else if (c->state == ST_CONNECTING && c->resolving && c->ares &&
             now < c->connect_deadline) {
    ares_process_fd(c->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timers */
  } else if (c->state == ST_CONNECTING && now >= c->connect_deadline) {
    if (c->resolving)
      go_down(c, "cannot resolve %s: timed out", c->host);
    else if (c->cmd.phase != RC_OPEN || c->sub.phase != RC_OPEN)
      go_down(c, "cannot connect to %s:%d: timed out", c->host, c->port);
    else if ((c->cmd.wrapped &&
              !c->tls->vt->established(c->cmd.wrapped)) ||
             (c->sub.wrapped && !c->tls->vt->established(c->sub.wrapped)))
      go_down(c, "TLS handshake with %s:%d timed out", c->host, c->port);
    else
      go_down(c, "Redis at %s:%d did not answer in time", c->host, c->port);
  } else if (c->state == ST_UP) {
    if (now >= c->next_renew) {
      renew(c);
      c->next_renew = now + c->lease_ms / 3;
      retry_lost(c, now);
    }
    /* Hubs silent for a lease are gone. */
    for (size_t i = 0; i < c->peers.nb; i++) {
      sent *e = c->peers.b[i];
      while (e) {
        sent *nx = e->next;
        peer *p = e->val;
        if (now - p->last_seen > c->lease_ms) {
          peer_gone(c, p, 1);
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
  case ST_CONNECTING: {
    int64_t r = resolver_deadline((ms_rcl *)c, ms_drv_now(c->d));
    return r < c->connect_deadline ? r : c->connect_deadline;
  }
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
  st->sharded = c->state == ST_UP && c->sharded;
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

static char *dup_str(const ms_allocator *mem, const char *s, size_t n) {
  char *r = ms_malloc(mem, n + 1);
  if (r) {
    memcpy(r, s, n);
    r[n] = '\0';
  }
  return r;
}

static int parse_url(ms_rcl *c, const char *url) {
  const char *p;
  if (strncmp(url, "redis://", 8) == 0)
    p = url + 8;
  else if (strncmp(url, "rediss://", 9) == 0)
    p = url + 9, c->tls_url = 1;
  else
    return MS_ERR_INVALID_ARG;
  const char *at = strchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *pw = colon ? colon + 1 : p;
    size_t n = (size_t)(at - pw);
    if (n) {
      c->password = dup_str(c->mem, pw, n);
      if (!c->password)
        return MS_ERR_NOMEM;
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
  char *h0 = hp;
  if (hp[0] == '[') { /* [IPv6]:PORT */
    char *rb = strchr(hp, ']');
    if (!rb || (rb[1] && rb[1] != ':'))
      return MS_ERR_INVALID_ARG;
    *rb = '\0';
    h0 = hp + 1;
    colon = rb[1] ? rb + 1 : NULL;
  }
  if (colon) {
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
      return MS_ERR_INVALID_ARG;
    c->port = (int)port;
    *colon = '\0';
  }
  size_t hn = strlen(h0);
  if (!hn || hn >= sizeof c->host)
    return MS_ERR_INVALID_ARG;
  memcpy(c->host, h0, hn + 1);
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
  /* The driver's memory: from the hub's allocator, as the driver core's. */
  const ms_allocator *mem = ms_mem_or_default(ms_hub_allocator(h));
  ms_rcl *c = ms_calloc(mem, 1, sizeof *c);
  if (!c)
    return MS_ERR_NOMEM;
  c->mem = mem;
  c->d = d;
  c->h = h;
  c->peers.mem = c->registry.mem = c->held.mem = c->claiming.mem = mem;
  for (int s = 0; s < 2; s++) {
    ms_ring_init(&c->hold[s], mem, SYNC_HOLD, 0, MS_RING_REFUSE, NULL,
                 item_drop, c);
    ms_ring_init(&c->out[s], mem, OUTBOX_RECORDS, 0, MS_RING_DROP_OLDEST,
                 NULL, item_drop, c);
  }
  ms_ring_init(&c->unanswered, mem, SIZE_MAX, 0, MS_RING_REFUSE, NULL,
               batch_drop, c);
  buf_init(&c->sent, mem);
  ms_ring_init(&c->early, mem, SIZE_MAX, 0, MS_RING_REFUSE, NULL, item_drop,
               c);
  int rv = parse_url(c, cfg->url);
  if (rv == 0 && cfg->password) {
    ms_free(mem, c->password);
    c->password = dup_str(mem, cfg->password, strlen(cfg->password));
    if (!c->password)
      rv = MS_ERR_NOMEM;
  }
  const char *pfx = cfg->prefix && *cfg->prefix ? cfg->prefix : "microstream";
  if (rv == 0 && c->tls_url && !cfg->tls)
    rv = MS_ERR_INVALID_ARG; /* rediss:// needs the program's TLS layer */
  if (rv == 0 && (strlen(pfx) >= PREFIX_MAX ||
                  strlen(ms_hub_id(h)) >= HUB_ID_MAX))
    rv = MS_ERR_INVALID_ARG;
  if (rv) {
    ms_free(mem, c->password);
    ms_free(mem, c);
    return rv;
  }
  snprintf(c->prefix, sizeof c->prefix, "%s", pfx);
  snprintf(c->me, sizeof c->me, "%s", ms_hub_id(h));
  snprintf(c->ch_me, sizeof c->ch_me, "%s:hub:%s", c->prefix, c->me);
  snprintf(c->ch_all, sizeof c->ch_all, "%s:all", c->prefix);
  /* Append numbers start again with each driver: their key is this
   * driver's own (a hub restarted under the same id starts afresh). */
  uint64_t nonce = 0;
  if (getrandom(&nonce, sizeof nonce, GRND_NONBLOCK) !=
      (ssize_t)sizeof nonce) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    nonce = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
            ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)c;
  }
  snprintf(c->batch_key, sizeof c->batch_key, "%s:batch:%s:%016llx",
           c->prefix, c->me, (unsigned long long)nonce);
  c->lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 3000;
  if (c->lease_ms < 300)
    c->lease_ms = 300;
  c->stream_max = cfg->stream_max ? cfg->stream_max : 10000;
  c->cmd.io.fd = c->sub.io.fd = -1;
  c->cmd.s.fd = c->sub.s.fd = -1;
  for (int i = 0; i < RESOLVER_FDS; i++) {
    c->ares_io[i].io.fd = -1;
    c->ares_io[i].c = c;
  }
  c->tls = c->tls_url ? cfg->tls : NULL;
  c->classic_only = cfg->classic_pubsub;
  c->on_state = cfg->on_state;
  c->state_ud = cfg->state_ud;
  rv = ms_hub_set_cluster(h, &rcl_ops, c);
  if (rv) {
    ms_free(mem, c->password);
    ms_free(mem, c);
    return rv;
  }
  c->state = ST_DOWN;
  c->next_try = now_of(c); /* connect from the loop */
  ms_hub_cluster_streams(h, 0, now_of(c));
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
  if (c->ares)
    ares_destroy(c->ares);
  free_addrs(c);
  for (int i = 0; i < RESOLVER_FDS; i++)
    if (c->ares_io[i].io.fd >= 0)
      ms_drv_unwatch(c->d, &c->ares_io[i].io);
  ms_ring_free(&c->early);
  for (int s = 0; s < 2; s++) {
    hold_clear(c, s);
    ms_ring_free(&c->out[s]);
  }
  ms_ring_free(&c->unanswered);
  ms_buf_free(&c->sent);
  lost_free_all(c);
  sfree(&c->peers, peer_free);
  sfree(&c->registry, val_free);
  sfree(&c->held, NULL);
  sfree(&c->claiming, NULL);
  const ms_allocator *mem = c->mem;
  ms_free(mem, c->password);
  ms_free(mem, c);
}

/* ---- the fuzz entry point ---- */

/* One expected reply on the command connection, picked by k. */
static void fuzz_expect(ms_rcl *c, unsigned k, const uint8_t *p, size_t n) {
  cmd_ctx *x = ms_calloc(c->mem, 1, sizeof *x);
  if (!x)
    return;
  switch (k % 8) {
  case 0: x->fn = reply_renew; break;
  case 1: x->fn = reply_dump; break;
  case 2: x->fn = reply_info; break;
  case 3:
  case 4:
    x->fn = reply_history;
    x->priv = (void *)(intptr_t)(k % 8 - 3);
    break;
  case 5: {
    lost_ctx *l = lost_new(c, "hub-peer", now_of(c) + c->lease_ms);
    if (!l)
      break;
    /* The names it held: the chunk's bytes up to a NUL, or "rsvc". */
    const char *nm = "rsvc";
    size_t nl = 4;
    if (n && memchr(p, 0, n)) {
      nm = (const char *)p;
      nl = strlen(nm);
    }
    if (ms_buf_append(&l->names, nm, nl) ||
        ms_buf_append(&l->names, "", 1)) {
      lost_free(l);
      break;
    }
    x->fn = reply_lost;
    x->priv = l;
    break;
  }
  case 6: {
    const char *nm = n && p[0] < 0x80 ? "rsvc" : "svc";
    claim_ctx *cl = ms_calloc(c->mem, 1, sizeof *cl + strlen(nm) + 1);
    if (!cl)
      break;
    cl->c = c;
    cl->tag = n ? p[0] : 1;
    cl->gen = c->gen;
    cl->len = strlen(nm);
    memcpy(cl->name, nm, cl->len + 1);
    x->fn = reply_claim;
    x->priv = cl;
    break;
  }
  default: x->fn = reply_auth; break;
  }
  if (x->fn && ms_ring_push(&c->cmd.q, x) == 0) {
    c->pending++;
    return;
  }
  if (x->fn == reply_lost)
    lost_free(x->priv);
  else if (x->fn == reply_claim)
    ms_free(c->mem, x->priv);
  ms_free(c->mem, x);
}

/* Both connections as if open (again after a go_down); the
 * subscriptions' confirmations, when they come, start a history read
 * (live records held meanwhile). */
static int fuzz_arm(ms_rcl *c) {
  if (c->state == ST_UP)
    return 0;
  if (rc_init(c, &c->cmd) || rc_init(c, &c->sub))
    return -1;
  c->cmd.phase = c->sub.phase = RC_OPEN;
  c->state = ST_UP;
  c->reg_ready = c->info_ready = 1;
  c->sub_ready = 0;
  c->sub_acks = 0;
  return 0;
}

ms_rcl *ms_rcl_fuzz_new(ms_hub *h) {
  ms_cluster_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.url = "redis://127.0.0.1:1";
  cfg.lease_ms = 1000;
  ms_rcl *c = NULL;
  if (ms_rcl_new(&c, NULL, h, &cfg))
    return NULL;
  if (fuzz_arm(c)) {
    ms_rcl_del(c);
    return NULL;
  }
  return c;
}

const char *ms_rcl_fuzz_sent(ms_rcl *c, size_t *len) {
  c->keep_sent = 1;
  *len = c->sent.len - c->sent_off;
  const char *p = c->sent.data ? c->sent.data + c->sent_off : "";
  c->sent_off = c->sent.len;
  return p;
}

void ms_rcl_fuzz_feed(ms_rcl *c, const uint8_t *data, size_t size) {
  /* Chunks: [op][len, 2 bytes big-endian][bytes as read from Redis].
   * op bit 0: the subscriber connection, else the command connection
   * with a reply of the kind op >> 1 picks awaited (after those of the
   * commands the hub sent itself). */
  size_t i = 0;
  while (i + 3 <= size && !c->closing) {
    uint8_t op = data[i];
    size_t n = ((size_t)data[i + 1] << 8) | data[i + 2];
    i += 3;
    if (n > size - i)
      n = size - i;
    const uint8_t *p = data + i;
    i += n;
    if (fuzz_arm(c))
      break;
    rconn *r = (op & 1) ? &c->sub : &c->cmd;
    if (!(op & 1))
      fuzz_expect(c, op >> 1, p, n);
    if (rc_feed(r, p, n, now_of(c)) == 0)
      rc_process(r);
    /* What the hub had sent meanwhile is taken as written. */
    c->cmd.out.len = c->cmd.out_off = 0;
    c->sub.out.len = c->sub.out_off = 0;
  }
}
