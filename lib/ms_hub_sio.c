/*
 * Socket.IO sessions of the hub (PROTOCOL.md "Socket.IO endpoint").
 *
 * An Engine.IO 4 session (HTTP long-polling, WebSocket, or polling then
 * upgraded) carries Socket.IO 5 packets in namespace "/". Each session owns
 * a hub connection of its own (`vc`, no stream behind it) that the router
 * treats like any other: what a Socket.IO client sends is turned into the
 * native message it means (HELLO at CONNECT, REQUEST for a `request` event,
 * RESPONSE or ERROR for `response`, LOG, SUBSCRIBE) and dispatched; what the
 * router sends to `vc` (ms_hub_send_out) is turned into the Socket.IO packet
 * a MicroStream Node client expects. So registry, routes, deadlines, logs
 * and presence are shared by both wire formats.
 *
 * The streams that carry a session (a parked GET, the WebSocket) are hub
 * connections too ("carriers"); a session ends when its WebSocket ends,
 * when the client closes, or when it misses pongs. A polling client that
 * stops polling while output waits is a slow consumer.
 */
#include "ms_hub_int.h"

#include "ms_eio.h"
#include "ms_http.h"
#include "ms_json.h"
#include "ms_rand.h"

#include <nettle/base64.h>
#include <stdio.h>

#define SIO_PATH "/socket.io/"
#define SIO_MAX_NAME 128
#define SIO_MAX_TOKEN 4096
#define WATCHER_NAME "watcher"
/* Binary attachments of one Socket.IO packet, either way. */
#define SIO_MAX_ATTACHMENTS 64

typedef struct sio_req sio_req;
struct sio_req {
  uint64_t lid;          /* the id the session used toward the router */
  int64_t expires;       /* the route is gone by then */
  sio_req *prev, *next;  /* by expiry (all live equally long) */
  int has_ack;           /* answered by ACK ack_id, not a `response` */
  uint64_t ack_id;
  size_t id_len;         /* the requester's own id, as JSON text */
  size_t target_len;
  uint8_t bytes[];       /* id, then target name */
};

/* A request forwarded to a Socket.IO target, under the id it was shown:
 * the requester's own when that requester is a Socket.IO client (the Node
 * hub passed ids through), else the hub's. */
typedef struct sio_tid {
  uint64_t hid;
  size_t len;
  char s[];
} sio_tid;

struct ms_hub_sio {
  ms_hub *h;
  ms_hub_conn *vc;
  char sid[24];   /* Engine.IO session id */
  char ssid[24];  /* Socket.IO socket id */
  char *name;     /* serviceName from the handshake, or NULL (watcher) */
  char *token;    /* token from the query, or NULL */
  char *cors;     /* extra response headers for a browser, or NULL */
  ms_hub_conn *poll_hc; /* the parked GET */
  ms_hub_conn *ws_hc;   /* the WebSocket (probing, or the transport) */
  unsigned upgraded : 1, connected : 1, closing : 1, dead : 1, ping_out : 1;
  ms_buf pollq;         /* packets waiting for a GET, 0x1e-joined */
  int64_t created, next_ping, pong_due, close_due;
  ms_u64map reqs;       /* lid -> sio_req */
  sio_req *rq_head, *rq_tail;
  size_t n_reqs;
  uint64_t next_lid;
  uint64_t sub_id;      /* a watcher's current subscription */
  ms_u64map tids;       /* hub id -> sio_tid (requests it serves) */
  ms_strmap tid_names;  /* the id it was shown -> sio_tid */
  /* A BINARY_EVENT / BINARY_ACK waiting for its attachments. */
  ms_buf bin_pkt;       /* its text */
  ms_buf bin_data;      /* the attachments so far, back to back */
  size_t bin_off[SIO_MAX_ATTACHMENTS + 1];
  unsigned bin_need, bin_have;
};

struct ms_hub_sio_state {
  ms_strmap sids;
  ms_rand rng;
  ms_mpbuf rx;          /* a native message built from Socket.IO input */
  ms_mpbuf arg;         /* a Socket.IO event's arguments as MessagePack */
  ms_mpbuf js;          /* JSON text going out */
  msgpack_zone zrx, ztx, zarg;
  int zones;            /* how many of them were initialised */
  ms_buf b64;           /* a decoded binary packet */
  ms_buf pkt;           /* one outgoing packet */
  ms_buf atts;          /* an outgoing packet's attachments, back to back */
  size_t att_off[SIO_MAX_ATTACHMENTS + 1];
  size_t natt;
  int batching;         /* several packets: answer the poll after all */
  uint64_t json_seed;   /* keys ms_json_js_to_mp's map of duplicate keys */
};

static int64_t hb(const ms_hub *h) { return h->cfg.heartbeat_ms; }
static int64_t ping_timeout(const ms_hub *h) { return 2 * hb(h); }

int ms_hub_sio_is_path(const ms_http_request *req) {
  return req->path_len == sizeof SIO_PATH - 1 &&
         memcmp(req->path, SIO_PATH, sizeof SIO_PATH - 1) == 0;
}

static void state_free(ms_hub *h, ms_hub_sio_state *st) {
  ms_strmap_free(&st->sids);
  ms_mpbuf_destroy(&st->rx);
  ms_mpbuf_destroy(&st->arg);
  ms_mpbuf_destroy(&st->js);
  /* (msgpack_zone_destroy of a zone whose init failed would crash.) */
  if (st->zones > 0)
    msgpack_zone_destroy(&st->zrx);
  if (st->zones > 1)
    msgpack_zone_destroy(&st->ztx);
  if (st->zones > 2)
    msgpack_zone_destroy(&st->zarg);
  ms_buf_free(&st->atts);
  ms_buf_free(&st->b64);
  ms_buf_free(&st->pkt);
  ms_free(h->mem, st);
}

static ms_hub_sio_state *state(ms_hub *h) {
  if (h->sio)
    return h->sio;
  ms_hub_sio_state *st = ms_calloc(h->mem, 1, sizeof *st);
  if (!st)
    return NULL;
  /* Session ids are the keys to sessions: a failing (or missing) random
   * source means no sessions. */
  int rrv = ms_rand_init(&st->rng);
  ms_strmap_init(&st->sids, h->mem, ms_rand_u64(&st->rng));
  ms_mpbuf_init(&st->rx, h->mem);
  ms_mpbuf_init(&st->arg, h->mem);
  ms_mpbuf_init(&st->js, h->mem);
  ms_buf_init(&st->b64, h->mem);
  ms_buf_init(&st->pkt, h->mem);
  ms_buf_init(&st->atts, h->mem);
  st->json_seed = ms_rand_u64(&st->rng);
  if (msgpack_zone_init(&st->zrx, 1024)) {
    st->zones = 1;
    if (msgpack_zone_init(&st->ztx, 1024)) {
      st->zones = 2;
      if (msgpack_zone_init(&st->zarg, 1024))
        st->zones = 3;
    }
  }
  if (rrv || st->zones < 3) {
    state_free(h, st);
    return NULL;
  }
  h->sio = st;
  return st;
}

void ms_hub_sio_del(ms_hub *h) {
  if (h->sio)
    state_free(h, h->sio);
  h->sio = NULL;
}

/* ---- request ids of Socket.IO requesters ---- */

static void req_unlink(ms_hub_sio *s, sio_req *q) {
  ms_u64map_del(&s->reqs, q->lid);
  if (q->prev)
    q->prev->next = q->next;
  else
    s->rq_head = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    s->rq_tail = q->prev;
  s->n_reqs--;
  ms_free(s->h->mem, q);
}

static void reqs_expire(ms_hub_sio *s, int64_t now) {
  while (s->rq_head && s->rq_head->expires <= now)
    req_unlink(s, s->rq_head);
}

static void tid_drop(ms_hub_sio *s, sio_tid *t) {
  ms_u64map_del(&s->tids, t->hid);
  ms_strmap_del(&s->tid_names, t->s, t->len);
  ms_free(s->h->mem, t);
}

/* The id to show a Socket.IO target for hub id hid (remembered). */
static const sio_tid *tid_for(ms_hub *h, ms_hub_sio *s, uint64_t hid) {
  char buf[160];
  const char *p = NULL;
  size_t n = 0;
  route *r = ms_u64map_get(&h->routes, hid);
  if (r && r->origin && r->origin->sio) {
    /* A string id without escapes is shown as it is. */
    sio_req *q = ms_u64map_get(&r->origin->sio->reqs, r->origin_id);
    if (q && q->id_len >= 2 && q->id_len - 2 < sizeof buf &&
        q->bytes[0] == '"' && q->bytes[q->id_len - 1] == '"' &&
        !memchr(q->bytes + 1, '\\', q->id_len - 2)) {
      p = (const char *)q->bytes + 1;
      n = q->id_len - 2;
    }
  }
  if (p && ms_strmap_get(&s->tid_names, p, n))
    p = NULL; /* shown already (two requesters' ids met): the hub's */
  if (!p) {
    n = (size_t)snprintf(buf, sizeof buf, "%llu", (unsigned long long)hid);
    p = buf;
    if (ms_strmap_get(&s->tid_names, p, n))
      n = (size_t)snprintf(buf, sizeof buf, "hub-%llu",
                           (unsigned long long)hid);
  }
  sio_tid *t = ms_malloc(h->mem, sizeof *t + n + 1);
  if (!t)
    return NULL;
  t->hid = hid;
  t->len = n;
  memcpy(t->s, p, n);
  t->s[n] = '\0';
  if (ms_u64map_put(&s->tids, hid, t)) {
    ms_free(h->mem, t);
    return NULL;
  }
  if (ms_strmap_put(&s->tid_names, t->s, n, t)) {
    ms_u64map_del(&s->tids, hid);
    ms_free(h->mem, t);
    return NULL;
  }
  return t;
}

/* ---- output ---- */

static void mark(ms_hub *h, ms_hub_conn *hc) {
  if (hc)
    ms_hub_mark_dirty(h, hc);
}

static void cors_headers(const ms_http_request *req, char *out, size_t cap) {
  size_t n;
  const char *o = ms_http_header_get(req, "Origin", &n);
  out[0] = '\0';
  if (o && n < 256)
    snprintf(out, cap,
             "Access-Control-Allow-Origin: %.*s\r\n"
             "Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n",
             (int)n, o);
}

static void sio_finish(ms_hub *h, ms_hub_sio *s);

/* A 200 to a polling request: the connection stays open for the client's
 * next request when it allows (bounded by the idle and request limits of
 * ms_conn_http_respond_keep). */
static void poll_reply(ms_hub *h, ms_hub_conn *hc, const char *ctype,
                       const char *extra, const char *body, size_t len) {
  if (ms_conn_http_respond_keep(hc->ws, 200, ctype, extra, body, len) == 1) {
    hc->accepted_at = h->last_now; /* the next request's time starts */
    ms_hub_update_live(h, hc);
  }
}

/* Answer the parked GET with what is queued (or a NOOP). */
static void poll_answer(ms_hub *h, ms_hub_sio *s, const char *fallback) {
  ms_hub_conn *hc = s->poll_hc;
  if (!hc)
    return;
  s->poll_hc = NULL;
  hc->sio_carried = NULL;
  const char *body = s->pollq.len ? s->pollq.data : fallback;
  size_t len = s->pollq.len ? s->pollq.len : strlen(fallback);
  poll_reply(h, hc, "text/plain; charset=UTF-8", s->cors, body, len);
  ms_buf_reset(&s->pollq);
  mark(h, hc);
}

/* Queue one Engine.IO packet (type character included). */
static int emit(ms_hub *h, ms_hub_sio *s, const char *p, size_t n) {
  if (s->dead)
    return MS_ERR_CLOSED;
  if (s->upgraded) {
    if (!s->ws_hc)
      return MS_ERR_CLOSED;
    int rv = ms_conn_send(s->ws_hc->ws, 0, (const uint8_t *)p, n);
    mark(h, s->ws_hc);
    return rv;
  }
  if ((s->pollq.len && ms_buf_append(&s->pollq, "\x1e", 1)) ||
      ms_buf_append(&s->pollq, p, n))
    return MS_ERR_NOMEM;
  if (s->poll_hc && !h->sio->batching) {
    poll_answer(h, s, "6");
    if (s->closing)
      sio_finish(h, s);
  }
  return 0;
}

/* Queue one binary Engine.IO message (an attachment): a binary frame on
 * the WebSocket, "b" + base64 on polling. */
static int emit_bin(ms_hub *h, ms_hub_sio *s, const char *p, size_t n) {
  if (s->dead)
    return MS_ERR_CLOSED;
  if (s->upgraded) {
    if (!s->ws_hc)
      return MS_ERR_CLOSED;
    int rv = ms_conn_send(s->ws_hc->ws, 1, (const uint8_t *)p, n);
    mark(h, s->ws_hc);
    return rv;
  }
  size_t el = BASE64_ENCODE_RAW_LENGTH(n);
  if (ms_buf_reserve(&s->pollq, el + 2))
    return MS_ERR_NOMEM;
  if (s->pollq.len)
    s->pollq.data[s->pollq.len++] = '\x1e';
  s->pollq.data[s->pollq.len++] = 'b';
  base64_encode_raw(s->pollq.data + s->pollq.len, n, (const uint8_t *)p);
  s->pollq.len += el;
  if (s->poll_hc && !h->sio->batching) {
    poll_answer(h, s, "6");
    if (s->closing)
      sio_finish(h, s);
  }
  return 0;
}

/* Collects the attachments of an outgoing packet (ms_msgpack_to_json_bins). */
static int att_cb(void *ud, const char *p, size_t n) {
  ms_hub_sio_state *st = ud;
  if (st->natt >= SIO_MAX_ATTACHMENTS || ms_buf_append(&st->atts, p, n))
    return -1;
  st->natt++;
  st->att_off[st->natt] = st->atts.len;
  return 0;
}

static void atts_reset(ms_hub_sio_state *st) {
  ms_buf_reset(&st->atts);
  st->natt = 0;
  st->att_off[0] = 0;
}

/* Bin values (not keys) in o: whether there are any. */
static int has_bin(const msgpack_object *o) {
  switch (o->type) {
  case MSGPACK_OBJECT_BIN:
    return 1;
  case MSGPACK_OBJECT_ARRAY:
    for (uint32_t i = 0; i < o->via.array.size; i++)
      if (has_bin(&o->via.array.ptr[i]))
        return 1;
    return 0;
  case MSGPACK_OBJECT_MAP:
    for (uint32_t i = 0; i < o->via.map.size; i++)
      if (has_bin(&o->via.map.ptr[i].val))
        return 1;
    return 0;
  default:
    return 0;
  }
}

/* st->js (a JSON array, the event or ack arguments) with st->natt
 * attachments: "45<n>-" + it (BINARY_EVENT) or "46<n>-<ack>" + it
 * (BINARY_ACK), then the attachments; the poll is answered once. */
static int emit_with_atts(ms_hub *h, ms_hub_sio *s, int ack,
                          uint64_t ack_id) {
  ms_hub_sio_state *st = h->sio;
  char pre[48];
  int pn = ack ? snprintf(pre, sizeof pre, "46%zu-%llu", st->natt,
                          (unsigned long long)ack_id)
               : snprintf(pre, sizeof pre, "45%zu-", st->natt);
  if (st->js.sb.size + st->atts.len + (size_t)pn > h->cfg.max_message)
    return MS_ERR_TOO_BIG;
  ms_buf_reset(&st->pkt);
  if (ms_buf_append(&st->pkt, pre, (size_t)pn) ||
      ms_buf_append(&st->pkt, st->js.sb.data, st->js.sb.size))
    return MS_ERR_NOMEM;
  st->batching = 1;
  int rv = emit(h, s, st->pkt.data, st->pkt.len);
  for (size_t i = 0; rv == 0 && i < st->natt; i++)
    rv = emit_bin(h, s, st->atts.data + st->att_off[i],
                  st->att_off[i + 1] - st->att_off[i]);
  st->batching = 0;
  if (s->poll_hc && s->pollq.len && !s->dead) {
    poll_answer(h, s, "6");
    if (s->closing)
      sio_finish(h, s);
  }
  return rv;
}

size_t ms_hub_sio_pending(const ms_hub_conn *vc) {
  const ms_hub_sio *s = vc->sio;
  size_t n = s->pollq.len;
  if (s->ws_hc)
    n += ms_conn_out_pending(s->ws_hc->ws);
  return n;
}

int ms_hub_sio_on_ws(const ms_hub_conn *vc) {
  const ms_hub_sio *s = vc->sio;
  return s->upgraded && s->ws_hc != NULL;
}

/* The JSON of o, after `prefix`, as one packet; then emitted. */
static int emit_obj(ms_hub *h, ms_hub_sio *s, const char *prefix,
                    const msgpack_object *o) {
  ms_hub_sio_state *st = h->sio;
  ms_mpbuf_reset(&st->js);
  if (ms_mpbuf_write(&st->js, prefix, strlen(prefix)))
    return MS_ERR_NOMEM;
  int rv = ms_msgpack_to_json_mp(o, &st->js);
  if (rv)
    return rv;
  if (st->js.sb.size > h->cfg.max_message)
    return MS_ERR_TOO_BIG;
  return emit(h, s, st->js.sb.data, st->js.sb.size);
}

static void obj_str(msgpack_object *o, const char *p, size_t n) {
  o->type = MSGPACK_OBJECT_STR;
  o->via.str.ptr = p ? p : "";
  o->via.str.size = (uint32_t)n;
}

static void pack_cstr(msgpack_packer *pk, const char *s) {
  msgpack_pack_str_with_body(pk, s, strlen(s));
}

static const char *level_name(int64_t level) {
  if (level >= 40)
    return "error";
  if (level >= 30)
    return "warn";
  if (level >= 20)
    return "info";
  if (level >= 15)
    return "http";
  if (level >= 12)
    return "verbose";
  if (level >= 10)
    return "debug";
  return "silly";
}

static int level_from_name(const char *p, size_t n, int64_t *out) {
  static const struct {
    const char *name;
    int64_t level;
  } names[] = {{"error", 40}, {"warn", 30},   {"warning", 30}, {"info", 20},
               {"http", 15},  {"verbose", 12}, {"debug", 10},  {"silly", 5},
               {"fatal", 50}, {"critical", 50}, {"trace", 5}};
  for (size_t i = 0; i < MS_ARRAY_LEN(names); i++)
    if (ms_http_ieq(p, n, names[i].name)) {
      *out = names[i].level;
      return 0;
    }
  return -1;
}

static int key_is(const msgpack_object_kv *kv, const char *k) {
  size_t n = strlen(k);
  return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n &&
         memcmp(kv->key.via.str.ptr, k, n) == 0;
}

static void iso_time(int64_t ts_us, char out[64]) {
  int64_t secs = ts_us / 1000000, ms = (ts_us % 1000000) / 1000;
  if (ts_us < 0) {
    secs = 0;
    ms = 0;
  }
  /* Civil date from days since the epoch (proleptic Gregorian). */
  int64_t days = secs / 86400, rem = secs % 86400;
  int64_t z = days + 719468, era = z / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp < 10 ? mp + 3 : mp - 9;
  if (m <= 2)
    y++;
  if (y < 0 || y > 9999)
    y = 0;
  snprintf(out, 64, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03lldZ",
           (long long)y, (long long)m, (long long)d, (long long)(rem / 3600),
           (long long)(rem % 3600 / 60), (long long)(rem % 60),
           (long long)ms);
}

/* A RECORD as Winston's info object: level, message, service, timestamp,
 * then the fields (a field named timestamp wins over the hub's). The
 * object borrows from m and takes its entries from st->ztx, the zone m
 * was decoded into. */
static int emit_record(ms_hub *h, ms_hub_sio *s, const ms_msg *m) {
  ms_hub_sio_state *st = h->sio;
  const msgpack_object *f = &m->extra;
  uint32_t nf = f->type == MSGPACK_OBJECT_MAP ? f->via.map.size : 0;
  uint32_t keep = 0;
  int own_ts = 1;
  for (uint32_t i = 0; i < nf; i++) {
    const msgpack_object_kv *kv = &f->via.map.ptr[i];
    if (key_is(kv, "level") || key_is(kv, "message") || key_is(kv, "service"))
      continue;
    if (key_is(kv, "timestamp"))
      own_ts = 0;
    keep++;
  }
  uint32_t n = 3 + (uint32_t)own_ts + keep;
  msgpack_object_kv *kv = msgpack_zone_malloc(&st->ztx, n * sizeof *kv);
  if (!kv)
    return MS_ERR_NOMEM;
  static const char *const own[] = {"level", "message", "service",
                                    "timestamp"};
  for (uint32_t i = 0; i < 3 + (uint32_t)own_ts; i++)
    obj_str(&kv[i].key, own[i], strlen(own[i]));
  const char *lv = level_name(m->level);
  obj_str(&kv[0].val, lv, strlen(lv));
  obj_str(&kv[1].val, m->message.ptr, m->message.len);
  obj_str(&kv[2].val, m->name.ptr, m->name.len);
  char ts[64];
  if (own_ts) {
    iso_time(m->ts_us, ts);
    obj_str(&kv[3].val, ts, strlen(ts));
  }
  uint32_t k = 3 + (uint32_t)own_ts;
  for (uint32_t i = 0; i < nf; i++) {
    const msgpack_object_kv *fk = &f->via.map.ptr[i];
    if (!(key_is(fk, "level") || key_is(fk, "message") ||
          key_is(fk, "service")))
      kv[k++] = *fk;
  }
  msgpack_object ev[2];
  obj_str(&ev[0], "log", 3);
  ev[1].type = MSGPACK_OBJECT_MAP;
  ev[1].via.map.size = n;
  ev[1].via.map.ptr = kv;
  msgpack_object arr;
  arr.type = MSGPACK_OBJECT_ARRAY;
  arr.via.array.size = 2;
  arr.via.array.ptr = ev;
  return emit_obj(h, s, "42", &arr);
}

/* ---- JSON written directly (the routing paths) ---- */

static int js_lit(ms_hub_sio_state *st, const char *lit) {
  return ms_mpbuf_write(&st->js, lit, strlen(lit)) ? MS_ERR_NOMEM : 0;
}

static int js_raw_b(ms_mpbuf *b, const char *p, size_t n) {
  return ms_mpbuf_write(b, p, n) ? MS_ERR_NOMEM : 0;
}

static int js_raw(ms_hub_sio_state *st, const void *p, size_t n) {
  return ms_mpbuf_write(&st->js, p, n) ? MS_ERR_NOMEM : 0;
}

static int js_str(ms_hub_sio_state *st, const char *p, size_t n) {
  msgpack_object o;
  o.type = MSGPACK_OBJECT_STR;
  o.via.str.ptr = p ? p : "";
  o.via.str.size = (uint32_t)n;
  return ms_msgpack_to_json_mp(&o, &st->js);
}

/* Emit st->js as one packet. */
static int js_emit(ms_hub *h, ms_hub_sio *s) {
  ms_hub_sio_state *st = h->sio;
  if (st->js.sb.size > h->cfg.max_message)
    return MS_ERR_TOO_BIG;
  return emit(h, s, st->js.sb.data, st->js.sb.size);
}

/* {error: {code, message, errorData}} in the shape MicroStream clients
 * reject with. */
static int js_error_obj(ms_hub_sio_state *st, const ms_msg *m,
                        const sio_req *q) {
  const char *target = (const char *)q->bytes + q->id_len;
  int rv = js_lit(st, "{\"error\":{\"code\":");
  if (!rv)
    rv = js_str(st, m->code.ptr, m->code.len);
  if (!rv)
    rv = js_lit(st, ",\"message\":");
  if (!rv && ms_http_ieq(m->code.ptr, m->code.len,
                         "TARGET_SERVICE_NOT_FOUND")) {
    /* The Node hub's own wording and errorData. */
    char msg[200];
    int n = snprintf(msg, sizeof msg, "Service \"%.*s\" not found",
                     (int)q->target_len, target);
    rv = js_str(st, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    if (!rv)
      rv = js_lit(st, ",\"errorData\":{\"targetService\":");
    if (!rv)
      rv = js_str(st, target, q->target_len);
    if (!rv)
      rv = js_lit(st, ",\"requestID\":");
    if (!rv)
      rv = js_raw(st, q->bytes, q->id_len);
    return rv ? rv : js_lit(st, "}}}");
  }
  if (!rv)
    rv = js_str(st, m->message.ptr, m->message.len);
  if (!rv)
    rv = js_lit(st, ",\"errorData\":");
  if (!rv)
    rv = ms_msgpack_to_json_mp(&m->extra, &st->js);
  return rv ? rv : js_lit(st, "}}");
}

/* CONNECT_ERROR for a refused CONNECT: {message: CODE, data: {code,
 * message, errorData}}. */
static int emit_connect_error(ms_hub *h, ms_hub_sio *s, const ms_msg *m) {
  static const char dup_msg[] = "Duplicate Service Registration Name! A "
                                "service with the same name is already "
                                "registered.";
  int dup = ms_http_ieq(m->code.ptr, m->code.len,
                        "DUPLICATE_SERVICE_REGISTRATION");
  ms_objmap ed, data, top;
  ms_objmap_init(&ed);
  msgpack_object *name = ms_objmap_add(&ed, "serviceName");
  if (s->name)
    obj_str(name, s->name, strlen(s->name));
  else
    name->type = MSGPACK_OBJECT_NIL;
  ms_objmap_init(&data);
  obj_str(ms_objmap_add(&data, "code"), m->code.ptr, m->code.len);
  if (dup)
    obj_str(ms_objmap_add(&data, "message"), dup_msg, sizeof dup_msg - 1);
  else
    obj_str(ms_objmap_add(&data, "message"), m->message.ptr, m->message.len);
  *ms_objmap_add(&data, "errorData") = ed.obj;
  ms_objmap_init(&top);
  obj_str(ms_objmap_add(&top, "message"), m->code.ptr, m->code.len);
  *ms_objmap_add(&top, "data") = data.obj;
  return emit_obj(h, s, "44", &top.obj);
}

/* The router sent h->out to a session's connection: say it in Socket.IO. */
int ms_hub_sio_send(ms_hub *h, ms_hub_conn *vc) {
  ms_hub_sio *s = vc->sio;
  ms_hub_sio_state *st = h->sio;
  if (s->dead)
    return MS_ERR_CLOSED;
  msgpack_zone_clear(&st->ztx);
  ms_msg m;
  if (ms_msg_decode(&m, &st->ztx, (const uint8_t *)h->out.sb.data, h->out.sb.size,
                    MS_DIR_TO_CLIENT, NULL))
    return MS_ERR_INTERNAL;
  switch (m.type) {
  case MS_MSG_WELCOME: {
    s->connected = 1;
    if (s->ws_hc) /* a stream with a session: no longer "without one" */
      ms_hub_peer_done(h, s->ws_hc);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "40{\"sid\":\"%s\"}", s->ssid);
    return emit(h, s, buf, (size_t)n);
  }
  case MS_MSG_REQUEST: {
    /* To a Socket.IO target: {id, event, data}; the id comes back in
     * `response`. */
    const sio_tid *t = tid_for(h, s, m.id);
    if (!t)
      return MS_ERR_NOMEM;
    /* Bin in the data: a BINARY_EVENT with the bins as attachments. */
    int bins = has_bin(&m.data);
    ms_mpbuf_reset(&st->js);
    atts_reset(st);
    int rv = js_lit(st, bins ? "[\"request\",{\"id\":"
                             : "42[\"request\",{\"id\":");
    if (!rv)
      rv = js_str(st, t->s, t->len);
    if (!rv)
      rv = js_lit(st, ",\"event\":");
    if (!rv)
      rv = js_str(st, m.event.ptr, m.event.len);
    if (!rv)
      rv = js_lit(st, ",\"data\":");
    if (!rv)
      rv = bins ? ms_msgpack_to_json_bins(&m.data, &st->js, att_cb, st)
                : ms_msgpack_to_json_mp(&m.data, &st->js);
    if (rv == MS_ERR_NOMEM && st->natt >= SIO_MAX_ATTACHMENTS)
      rv = MS_ERR_TOO_BIG;
    if (!rv)
      rv = js_lit(st, "}]");
    if (!rv)
      rv = bins ? emit_with_atts(h, s, 0, 0) : js_emit(h, s);
    if (rv)
      tid_drop(s, (sio_tid *)t); /* not sent: the router answers for it */
    return rv;
  }
  case MS_MSG_RESPONSE:
  case MS_MSG_ERROR: {
    if (m.type == MS_MSG_ERROR && m.id == 0) {
      if (!s->connected)
        return emit_connect_error(h, s, &m);
      return 0; /* a session error: the close follows */
    }
    sio_req *q = ms_u64map_get(&s->reqs, m.id);
    if (!q)
      return 0; /* e.g. a watcher's bad subscribe: nothing to answer */
    if (m.type == MS_MSG_ERROR &&
        ms_http_ieq(m.code.ptr, m.code.len, "REQUEST_TIMEOUT"))
      return 0; /* the client keeps its own time; the route lives on */
    ms_mpbuf_reset(&st->js);
    atts_reset(st);
    int bins = m.type == MS_MSG_RESPONSE && has_bin(&m.data);
    int rv;
    if (q->has_ack) {
      /* An ACK carries what `response` would: the data, or {error}. */
      char pre[32];
      int pn = snprintf(pre, sizeof pre, "43%llu[",
                        (unsigned long long)q->ack_id);
      rv = bins ? js_lit(st, "[") : js_raw(st, pre, (size_t)pn);
    } else {
      rv = js_lit(st, bins ? "[\"response\",{\"id\":"
                           : "42[\"response\",{\"id\":");
      if (!rv)
        rv = js_raw(st, q->bytes, q->id_len);
      if (!rv)
        rv = js_lit(st, ",\"response\":");
    }
    if (!rv)
      rv = m.type != MS_MSG_RESPONSE ? js_error_obj(st, &m, q)
           : bins ? ms_msgpack_to_json_bins(&m.data, &st->js, att_cb, st)
                  : ms_msgpack_to_json_mp(&m.data, &st->js);
    if (rv == MS_ERR_NOMEM && st->natt >= SIO_MAX_ATTACHMENTS)
      rv = MS_ERR_TOO_BIG;
    if (!rv)
      rv = js_lit(st, q->has_ack ? "]" : "}]");
    if (!rv)
      rv = bins ? emit_with_atts(h, s, q->has_ack, q->ack_id) : js_emit(h, s);
    /* Too large or out of memory: the router answers with an error
     * instead, under the same id. */
    if (rv != MS_ERR_TOO_BIG && rv != MS_ERR_NOMEM)
      req_unlink(s, q);
    return rv;
  }
  case MS_MSG_RECORD:
    if (m.level == 0) {
      if (m.message.len == 3 && memcmp(m.message.ptr, "gap", 3) == 0) {
        msgpack_object ev[2], arr;
        obj_str(&ev[0], "gap", 3);
        ev[1] = m.extra;
        arr.type = MSGPACK_OBJECT_ARRAY;
        arr.via.array.size = 2;
        arr.via.array.ptr = ev;
        return emit_obj(h, s, "42", &arr);
      }
      return 0; /* the "live" marker */
    }
    return emit_record(h, s, &m);
  case MS_MSG_CANCEL: {
    /* Node clients know no CANCEL: only forget the id. */
    sio_tid *t = ms_u64map_get(&s->tids, m.id);
    if (t)
      tid_drop(s, t);
    return 0;
  }
  default:
    return 0; /* PRESENCE, PONG: nothing a Node client knows */
  }
}

/* ---- session lifecycle ---- */

static void gen_id(ms_hub_sio_state *st, char out[24]) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint8_t raw[20];
  ms_rand_bytes(&st->rng, raw, sizeof raw);
  for (size_t i = 0; i < sizeof raw; i++)
    out[i] = abc[raw[i] & 63];
  out[20] = '\0';
}

static ms_hub_sio *session_new(ms_hub *h, ms_hub_conn *carrier,
                               const ms_http_request *req, int64_t now,
                               int *status) {
  ms_hub_sio_state *st = state(h);
  *status = 503;
  if (!st)
    return NULL;
  if (st->sids.n >= h->cfg.sio_max_sessions) {
    *status = 503;
    return NULL;
  }
  char name[SIO_MAX_NAME + 2], token[SIO_MAX_TOKEN];
  size_t name_len = 0, token_len = 0;
  int has_name = ms_eio_query_get(req->query, req->query_len, "serviceName",
                                  name, sizeof name, &name_len);
  int has_token = ms_eio_query_get(req->query, req->query_len, "token", token,
                                   sizeof token, &token_len);
  if (has_name < 0 || has_token < 0 || (has_name && name_len == 0)) {
    *status = 400;
    return NULL;
  }
  *status = 503;
  ms_hub_sio *s = ms_calloc(h->mem, 1, sizeof *s);
  ms_hub_conn *vc = ms_calloc(h->mem, 1, sizeof *vc);
  char cors[400];
  cors_headers(req, cors, sizeof cors);
  if (s) {
    s->name = has_name ? ms_strndup(h->mem, name, name_len) : NULL;
    s->token = has_token ? ms_strndup(h->mem, token, token_len) : NULL;
    s->cors = cors[0] ? ms_strndup(h->mem, cors, strlen(cors)) : NULL;
  }
  if (!s || !vc || (has_name && !s->name) || (has_token && !s->token) ||
      (cors[0] && !s->cors)) {
  fail:
    if (s) {
      ms_free(h->mem, s->name);
      ms_free(h->mem, s->token);
      ms_free(h->mem, s->cors);
    }
    ms_free(h->mem, s);
    ms_free(h->mem, vc);
    return NULL;
  }
  do
    gen_id(st, s->sid);
  while (ms_strmap_get(&st->sids, s->sid, 20));
  gen_id(st, s->ssid);
  if (ms_strmap_put(&st->sids, s->sid, 20, s))
    goto fail;
  s->h = h;
  s->vc = vc;
  s->created = now;
  s->next_ping = now + hb(h);
  s->next_lid = (uint64_t)1 << 40; /* apart from a watcher's sub ids */
  ms_buf_init(&s->pollq, h->mem);
  ms_buf_init(&s->bin_pkt, h->mem);
  ms_buf_init(&s->bin_data, h->mem);
  ms_u64map_init(&s->reqs, h->mem);
  ms_u64map_init(&s->tids, h->mem);
  ms_strmap_init(&s->tid_names, h->mem, ms_rand_u64(&st->rng));
  vc->hub = h;
  vc->sio = s;
  vc->serial = ++h->next_serial;
  vc->accepted_at = vc->last_rx = now;
  vc->state = HC_AWAIT_HELLO;
  vc->enc = MS_ENC_JSON;
  vc->expires_at = MS_NO_DEADLINE;
  vc->secure = carrier->secure;
  if (carrier->peer) /* for the hub's messages; not counted per peer */
    vc->peer = ms_strndup(h->mem, carrier->peer, strlen(carrier->peer));
  ms_u64map_init(&vc->origin_ids, h->mem);
  vc->all_next = h->all;
  if (h->all)
    h->all->all_prev = vc;
  h->all = vc;
  h->stats.sio_sessions++;
  ms_hub_update_live(h, vc);
  return s;
}

/* The handshake packet. */
static int open_packet(ms_hub *h, const ms_hub_sio *s, int upgrades,
                       char *out, size_t cap) {
  return snprintf(out, cap,
                  "0{\"sid\":\"%s\",\"upgrades\":[%s],\"pingInterval\":%lld,"
                  "\"pingTimeout\":%lld,\"maxPayload\":%zu}",
                  s->sid, upgrades ? "\"websocket\"" : "",
                  (long long)hb(h), (long long)ping_timeout(h),
                  h->cfg.max_message);
}

/* The session is over for good: out of the table, its streams let go;
 * its connection is released at the next tick. */
static void sio_finish(ms_hub *h, ms_hub_sio *s) {
  if (s->dead)
    return;
  s->dead = 1;
  ms_strmap_del(&h->sio->sids, s->sid, 20);
  h->stats.sio_sessions--;
  if (s->poll_hc)
    poll_answer(h, s, "1");
  if (s->ws_hc) {
    ms_hub_conn *w = s->ws_hc;
    s->ws_hc = NULL;
    w->sio_carried = NULL;
    ms_conn_close(w->ws, MS_CLOSE_NORMAL, "session closed");
    mark(h, w);
  }
  ms_heap_update(&h->live, &s->vc->live, h->last_now);
}

/* The client went away (closed, or its transport ended). */
static void client_gone(ms_hub *h, ms_hub_sio *s, int64_t now) {
  if (s->dead)
    return;
  ms_hub_conn_eof(s->vc, now);
  sio_finish(h, s);
}

/* The hub closes the session (ms_hub_close_conn on its connection). */
void ms_hub_sio_close(ms_hub *h, ms_hub_conn *vc, uint16_t code,
                      const char *reason) {
  ms_hub_sio *s = vc->sio;
  if (s->dead || s->closing)
    return;
  if (s->upgraded && s->ws_hc) {
    ms_hub_conn *w = s->ws_hc;
    s->ws_hc = NULL;
    w->sio_carried = NULL;
    ms_conn_close(w->ws, code, reason);
    mark(h, w);
    sio_finish(h, s);
    return;
  }
  /* Polling: the close packet goes out with the next poll (bounded). */
  s->closing = 1;
  s->close_due = h->last_now + hb(h);
  emit(h, s, "1", 1);
}

void ms_hub_sio_free(ms_hub *h, ms_hub_conn *vc) {
  ms_hub_sio *s = vc->sio;
  if (!s)
    return;
  if (!s->dead && h->sio) {
    ms_strmap_del(&h->sio->sids, s->sid, 20);
    h->stats.sio_sessions--;
  }
  while (s->rq_head)
    req_unlink(s, s->rq_head);
  ms_u64map_free(&s->reqs);
  for (size_t i = 0; i < s->tids.cap; i++)
    if (s->tids.keys && s->tids.keys[i])
      ms_free(h->mem, s->tids.vals[i]);
  ms_u64map_free(&s->tids);
  ms_strmap_free(&s->tid_names);
  ms_buf_free(&s->pollq);
  ms_buf_free(&s->bin_pkt);
  ms_buf_free(&s->bin_data);
  ms_free(h->mem, s->name);
  ms_free(h->mem, s->token);
  ms_free(h->mem, s->cors);
  if (s->poll_hc)
    s->poll_hc->sio_carried = NULL;
  if (s->ws_hc)
    s->ws_hc->sio_carried = NULL;
  ms_free(h->mem, s);
  vc->sio = NULL;
}

void ms_hub_sio_carrier_gone(ms_hub *h, ms_hub_conn *hc) {
  ms_hub_sio *s = hc->sio_carried;
  hc->sio_carried = NULL;
  if (!s)
    return;
  if (s->poll_hc == hc)
    s->poll_hc = NULL;
  if (s->ws_hc == hc) {
    s->ws_hc = NULL;
    /* A probe that never finished leaves the session on polling; the
     * WebSocket of an upgraded session was its transport. */
    if (s->upgraded)
      client_gone(h, s, h->last_now);
  }
}

/* ---- liveness ---- */

int64_t ms_hub_sio_deadline(const ms_hub *h, const ms_hub_conn *vc) {
  const ms_hub_sio *s = vc->sio;
  if (s->dead)
    return h->last_now;
  int64_t d = s->ping_out ? s->pong_due : s->next_ping;
  if (s->closing && s->close_due < d)
    d = s->close_due;
  if (!s->connected && s->created + 3 * hb(h) < d)
    d = s->created + 3 * hb(h);
  if (s->rq_head && s->rq_head->expires < d)
    d = s->rq_head->expires;
  if (vc->expires_at < d)
    d = vc->expires_at;
  return d;
}

void ms_hub_sio_ping(ms_hub *h, ms_hub_conn *vc) {
  ms_hub_sio *s = vc->sio;
  if (s->dead || s->closing)
    return;
  if (!s->ping_out) {
    s->ping_out = 1;
    s->pong_due = h->last_now + ping_timeout(h);
  }
  emit(h, s, "2", 1);
}

void ms_hub_sio_live(ms_hub *h, ms_hub_conn *vc, int64_t now) {
  ms_hub_sio *s = vc->sio;
  if (!s->dead && s->closing && now >= s->close_due)
    sio_finish(h, s);
  if (s->dead) {
    ms_hub_conn_release(vc);
    return;
  }
  reqs_expire(s, now);
  if (now >= vc->expires_at && vc->state == HC_READY) {
    ms_hub_close_conn(h, vc, MS_CLOSE_TOKEN_EXPIRED, "token expired",
                      "closed", now);
  } else if (!s->connected && vc->state == HC_AWAIT_HELLO &&
             now >= s->created + 3 * hb(h)) {
    ms_hub_close_conn(h, vc, MS_CLOSE_PROTOCOL, "no CONNECT in time",
                      "closed", now);
  } else if (s->ping_out && now >= s->pong_due) {
    if (!s->upgraded && !s->poll_hc)
      ms_hub_close_conn(h, vc, MS_CLOSE_SLOW_CONSUMER,
                        "stopped polling", "closed", now);
    else
      ms_hub_close_conn(h, vc, MS_CLOSE_HEARTBEAT, "heartbeat missed",
                        "heartbeat", now);
  } else if (!s->ping_out && now >= s->next_ping) {
    s->ping_out = 1;
    s->pong_due = now + ping_timeout(h);
    emit(h, s, "2", 1);
  }
  if (s->dead) {
    ms_hub_conn_release(vc);
    return;
  }
  ms_heap_remove(&h->live, &vc->live);
  ms_hub_update_live(h, vc);
  if (vc->live.idx && vc->live.deadline <= now)
    ms_heap_update(&h->live, &vc->live, now + 1);
}

/* ---- input: Socket.IO events to native messages ---- */

/* Decode st->rx as a client message and hand it to the router. */
static void dispatch_rx(ms_hub *h, ms_hub_sio *s, int64_t now) {
  ms_hub_sio_state *st = h->sio;
  msgpack_zone_clear(&st->zrx);
  ms_msg m;
  ms_decode_error de;
  if (st->rx.failed) /* out of memory: as if it never came */
    return;
  if (ms_msg_decode(&m, &st->zrx, (const uint8_t *)st->rx.sb.data,
                    st->rx.sb.size,
                    MS_DIR_TO_HUB, &de))
    return;
  ms_hub_dispatch(h, s->vc, &m, now);
}

static msgpack_packer *rx_packer(ms_hub_sio_state *st, msgpack_packer *pk) {
  ms_mpbuf_reset(&st->rx);
  msgpack_packer_init(pk, &st->rx, ms_mpbuf_write);
  return pk;
}

static void on_connect(ms_hub *h, ms_hub_sio *s, const msgpack_object *auth,
                       int64_t now) {
  ms_hub_sio_state *st = h->sio;
  if (s->connected || s->vc->state != HC_AWAIT_HELLO)
    return;
  ms_str token = {NULL, 0};
  ms_str t;
  if (auth && ms_map_get_str(auth, "token", &t) == 0)
    token = t;
  else if (s->token)
    token = ms_str_c(s->token);
  /* A watcher is named by its token's subject when it has one that may
   * watch (any name: the token says who watches), else "watcher". */
  char sub[129];
  const char *name = s->name ? s->name : WATCHER_NAME;
  if (!s->name && token.ptr &&
      ms_hub_auth_watch_sub(h, token.ptr, token.len, now, sub) == 0 &&
      ms_valid_service_name(sub, strlen(sub)))
    name = sub;
  if (!ms_valid_service_name(name, strlen(name))) {
    ms_msg m;
    memset(&m, 0, sizeof m);
    m.type = MS_MSG_ERROR;
    m.code = ms_str_c("BAD_REQUEST");
    m.message = ms_str_c("serviceName: 1 to 128 of [A-Za-z0-9._:-]");
    emit_connect_error(h, s, &m);
    ms_hub_close_conn(h, s->vc, MS_CLOSE_PROTOCOL, "bad serviceName",
                      "closed", now);
    return;
  }
  msgpack_packer pkb, *pk = rx_packer(st, &pkb);
  msgpack_pack_array(pk, 5);
  msgpack_pack_uint8(pk, MS_MSG_HELLO);
  msgpack_pack_uint8(pk, MS_PROTOCOL_VERSION);
  pack_cstr(pk, name);
  if (token.ptr)
    msgpack_pack_str_with_body(pk, token.ptr, token.len);
  else
    msgpack_pack_nil(pk);
  msgpack_pack_map(pk, s->name ? 1 : 2);
  pack_cstr(pk, "instance");
  pack_cstr(pk, "socket.io");
  if (!s->name) {
    pack_cstr(pk, "watch");
    msgpack_pack_true(pk);
  }
  dispatch_rx(h, s, now);
  if (!s->name && s->vc->state == HC_READY) {
    /* A watcher follows the log stream from the start. */
    s->sub_id = 1;
    pk = rx_packer(st, &pkb);
    ms_enc_subscribe(pk, s->sub_id, ms_str_c("logs"), NULL);
    dispatch_rx(h, s, now);
  }
}

/* `request` {targetService, payload: {id, event, data}}. */
static void on_sio_request(ms_hub *h, ms_hub_sio *s, const msgpack_object *a,
                           const ms_sio_packet *sp, int64_t now) {
  ms_hub_sio_state *st = h->sio;
  const msgpack_object *target = ms_map_get(a, "targetService");
  const msgpack_object *payload = ms_map_get(a, "payload");
  const msgpack_object *id = payload ? ms_map_get(payload, "id") : NULL;
  const msgpack_object *ev = payload ? ms_map_get(payload, "event") : NULL;
  const msgpack_object *data = payload ? ms_map_get(payload, "data") : NULL;
  if ((!id || id->type == MSGPACK_OBJECT_NIL) && !sp->has_ack)
    return; /* nowhere to answer: dropped */
  /* The requester's id, kept as JSON to be echoed as it came. */
  ms_mpbuf idb_buf;
  ms_mpbuf_init(&idb_buf, h->mem);
  ms_mpbuf *idb = &idb_buf;
  const char *tp = "";
  size_t tl = 0;
  if (target && target->type == MSGPACK_OBJECT_STR) {
    tp = target->via.str.ptr;
    tl = target->via.str.size;
  }
  sio_req *q = NULL;
  if ((id ? ms_msgpack_to_json_mp(id, idb) : js_raw_b(idb, "null", 4)) == 0 &&
      idb->sb.size <= 1024 && tl <= 1024)
    q = ms_malloc(h->mem, sizeof *q + idb->sb.size + tl);
  if (!q) {
    ms_mpbuf_destroy(idb);
    return;
  }
  memset(q, 0, sizeof *q);
  q->lid = s->next_lid++;
  q->expires = now + h->cfg.default_timeout_ms + h->cfg.max_late_ms + 1000;
  q->id_len = idb->sb.size;
  q->has_ack = sp->has_ack;
  q->ack_id = sp->ack_id;
  q->target_len = tl;
  if (idb->sb.size)
    memcpy(q->bytes, idb->sb.data, idb->sb.size);
  ms_mpbuf_destroy(idb);
  if (tl)
    memcpy(q->bytes + q->id_len, tp, tl);
  if (ms_u64map_put(&s->reqs, q->lid, q)) {
    ms_free(h->mem, q);
    return;
  }
  q->prev = s->rq_tail;
  if (s->rq_tail)
    s->rq_tail->next = q;
  else
    s->rq_head = q;
  s->rq_tail = q;
  s->n_reqs++;

  /* Answer through the router's own paths, so every error reads the same
   * as for a native requester. */
  ms_msg m;
  memset(&m, 0, sizeof m);
  m.type = MS_MSG_ERROR;
  m.id = q->lid;
  if (s->n_reqs > 2 * h->cfg.max_pending) {
    m.code = ms_str_c("TOO_MANY_PENDING");
    m.message = ms_str_c("too many requests in flight on this connection");
  } else if (!ms_valid_service_name(tp, tl)) {
    m.code = ms_str_c("TARGET_SERVICE_NOT_FOUND");
    m.message = ms_str_c("no such service");
  } else if (!ev || ev->type != MSGPACK_OBJECT_STR || ev->via.str.size == 0 ||
             ev->via.str.size > 256) {
    m.code = ms_str_c("BAD_REQUEST");
    m.message = ms_str_c("payload.event must be a non-empty string");
  } else {
    msgpack_packer pkb, *pk = rx_packer(st, &pkb);
    msgpack_pack_array(pk, 7);
    msgpack_pack_uint8(pk, MS_MSG_REQUEST);
    msgpack_pack_uint64(pk, q->lid);
    msgpack_pack_str_with_body(pk, tp, tl);
    msgpack_pack_str_with_body(pk, ev->via.str.ptr, ev->via.str.size);
    if (data)
      msgpack_pack_object(pk, *data);
    else
      msgpack_pack_nil(pk);
    msgpack_pack_uint8(pk, 0); /* the hub's default timeout */
    msgpack_pack_map(pk, 1);
    pack_cstr(pk, "late_ms");
    msgpack_pack_int64(pk, h->cfg.max_late_ms);
    dispatch_rx(h, s, now);
    return;
  }
  ms_hub_send_error(h, s->vc, m.id, m.code.ptr, m.message.ptr, NULL);
}

/* `response` {id, response} from a Socket.IO target. */
static void on_sio_response(ms_hub *h, ms_hub_sio *s,
                            const msgpack_object *a, int64_t now) {
  ms_hub_sio_state *st = h->sio;
  const msgpack_object *id = ms_map_get(a, "id");
  const msgpack_object *resp = ms_map_get(a, "response");
  char num[24];
  const char *ip = NULL;
  size_t il = 0;
  if (id && id->type == MSGPACK_OBJECT_STR) {
    ip = id->via.str.ptr;
    il = id->via.str.size;
  } else if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    il = (size_t)snprintf(num, sizeof num, "%llu",
                          (unsigned long long)id->via.u64);
    ip = num;
  }
  sio_tid *t = ip ? ms_strmap_get(&s->tid_names, ip, il) : NULL;
  if (!t) {
    h->stats.late_dropped++; /* not a request this session was sent */
    return;
  }
  uint64_t hid = t->hid;
  tid_drop(s, t);
  const msgpack_object *err = resp ? ms_map_get(resp, "error") : NULL;
  int is_err = err && err->type != MSGPACK_OBJECT_NIL &&
               !(err->type == MSGPACK_OBJECT_BOOLEAN && !err->via.boolean);
  msgpack_packer pkb, *pk = rx_packer(st, &pkb);
  if (!is_err) {
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, MS_MSG_RESPONSE);
    msgpack_pack_uint64(pk, hid);
    if (resp)
      msgpack_pack_object(pk, *resp);
    else
      msgpack_pack_nil(pk);
  } else {
    ms_str code = ms_str_c("INTERNAL_SERVER_ERROR"), msg = ms_str_c("");
    ms_str v;
    if (ms_map_get_str(err, "code", &v) == 0 && v.len > 0)
      code = v;
    if (ms_map_get_str(err, "message", &v) == 0)
      msg = v;
    const msgpack_object *ed = ms_map_get(err, "errorData");
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint8(pk, MS_MSG_ERROR);
    msgpack_pack_uint64(pk, hid);
    msgpack_pack_str_with_body(pk, code.ptr, code.len);
    msgpack_pack_str_with_body(pk, msg.ptr ? msg.ptr : "", msg.len);
    if (ed)
      msgpack_pack_object(pk, *ed);
    else
      msgpack_pack_nil(pk);
  }
  dispatch_rx(h, s, now);
}

/* `log` {level, message, ...fields}: Winston's info object. */
static void on_sio_log(ms_hub *h, ms_hub_sio *s, const msgpack_object *a,
                       int64_t now) {
  ms_hub_sio_state *st = h->sio;
  if (a->type != MSGPACK_OBJECT_MAP)
    return;
  int64_t level = 20;
  const msgpack_object *lv = ms_map_get(a, "level");
  if (lv && lv->type == MSGPACK_OBJECT_STR)
    level_from_name(lv->via.str.ptr, lv->via.str.size, &level);
  else if (lv && lv->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
           lv->via.u64 > 0 && lv->via.u64 < 1000)
    level = (int64_t)lv->via.u64;
  const msgpack_object *msg = ms_map_get(a, "message");
  uint32_t keep = 0;
  for (uint32_t i = 0; i < a->via.map.size; i++)
    if (!key_is(&a->via.map.ptr[i], "level") &&
        !key_is(&a->via.map.ptr[i], "message"))
      keep++;
  msgpack_packer pkb, *pk = rx_packer(st, &pkb);
  msgpack_pack_array(pk, 5);
  msgpack_pack_uint8(pk, MS_MSG_LOG);
  msgpack_pack_nil(pk); /* the hub stamps its time */
  msgpack_pack_int64(pk, level);
  if (msg && msg->type == MSGPACK_OBJECT_STR) {
    msgpack_pack_object(pk, *msg);
  } else if (msg) {
    /* Not a string: its JSON text. */
    ms_mpbuf_reset(&st->js);
    if (ms_msgpack_to_json_mp(msg, &st->js) == 0)
      msgpack_pack_str_with_body(pk, st->js.sb.data, st->js.sb.size);
    else
      pack_cstr(pk, "");
  } else {
    pack_cstr(pk, "");
  }
  msgpack_pack_map(pk, keep);
  for (uint32_t i = 0; i < a->via.map.size; i++) {
    const msgpack_object_kv *kv = &a->via.map.ptr[i];
    if (key_is(kv, "level") || key_is(kv, "message"))
      continue;
    msgpack_pack_object(pk, kv->key);
    msgpack_pack_object(pk, kv->val);
  }
  dispatch_rx(h, s, now);
}

/* `subscribe` {services, min_level, contains, history, since_seq}: the
 * watcher's filter, as SUBSCRIBE has it (min_level may be a name). */
static void on_sio_subscribe(ms_hub *h, ms_hub_sio *s,
                             const msgpack_object *a, int64_t now) {
  ms_hub_sio_state *st = h->sio;
  if (a->type != MSGPACK_OBJECT_MAP)
    return;
  msgpack_packer pkb, *pk;
  if (s->sub_id) {
    pk = rx_packer(st, &pkb);
    ms_enc_unsubscribe(pk, s->sub_id);
    dispatch_rx(h, s, now);
  }
  s->sub_id++;
  pk = rx_packer(st, &pkb);
  msgpack_pack_array(pk, 4);
  msgpack_pack_uint8(pk, MS_MSG_SUBSCRIBE);
  msgpack_pack_uint64(pk, s->sub_id);
  pack_cstr(pk, "logs");
  msgpack_pack_map(pk, a->via.map.size);
  for (uint32_t i = 0; i < a->via.map.size; i++) {
    const msgpack_object_kv *kv = &a->via.map.ptr[i];
    int64_t level;
    msgpack_pack_object(pk, kv->key);
    if (key_is(kv, "min_level") && kv->val.type == MSGPACK_OBJECT_STR &&
        level_from_name(kv->val.via.str.ptr, kv->val.via.str.size, &level) ==
            0)
      msgpack_pack_int64(pk, level);
    else
      msgpack_pack_object(pk, kv->val);
  }
  dispatch_rx(h, s, now);
}

/* The ACK of an event the client emitted with an ack id: no arguments
 * once handled; for an event the hub does not know, an EVENT_NOT_FOUND
 * error in the shape MicroStream clients reject with. */
static void emit_event_ack(ms_hub *h, ms_hub_sio *s, uint64_t ack_id,
                           const msgpack_object_str *unknown) {
  ms_hub_sio_state *st = h->sio;
  char pre[32];
  int pn = snprintf(pre, sizeof pre, "43%llu[", (unsigned long long)ack_id);
  ms_mpbuf_reset(&st->js);
  int rv = js_raw(st, pre, (size_t)pn);
  if (!rv && unknown) {
    char msg[300];
    int mn = snprintf(msg, sizeof msg, "Event \"%.*s\" not found",
                      (int)MS_MIN(unknown->size, 256), unknown->ptr);
    rv = js_lit(st, "{\"error\":{\"code\":\"EVENT_NOT_FOUND\",\"message\":");
    if (!rv)
      rv = js_str(st, msg, (size_t)mn < sizeof msg ? (size_t)mn : sizeof msg - 1);
    if (!rv)
      rv = js_lit(st, ",\"errorData\":{\"event\":");
    if (!rv)
      rv = js_str(st, unknown->ptr, unknown->size);
    if (!rv)
      rv = js_lit(st, "}}}");
  }
  if (!rv)
    rv = js_lit(st, "]");
  if (!rv)
    js_emit(h, s);
}

static void sio_fail(ms_hub *h, ms_hub_sio *s, int64_t now) {
  ms_hub_close_conn(h, s->vc, MS_CLOSE_PROTOCOL, "bad Socket.IO packet",
                    "closed", now);
}

/* Each attachment placeholder {"_placeholder":true, "num":k} in o
 * becomes attachment k as bin, in place (borrowing s->bin_data, which
 * stays until the packet is handled). -1 for a placeholder that names no
 * attachment. */
static int subst_atts(msgpack_object *o, const ms_hub_sio *s, int depth) {
  if (depth > 64)
    return -1;
  if (o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 2) {
    const msgpack_object *ph = ms_map_get(o, "_placeholder");
    const msgpack_object *num = ms_map_get(o, "num");
    if (ph && num && ph->type == MSGPACK_OBJECT_BOOLEAN && ph->via.boolean) {
      if (num->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
          num->via.u64 >= s->bin_need)
        return -1;
      size_t k = (size_t)num->via.u64;
      size_t b = s->bin_off[k], e = s->bin_off[k + 1];
      o->type = MSGPACK_OBJECT_BIN;
      o->via.bin.ptr = e > b ? (const char *)s->bin_data.data + b : "";
      o->via.bin.size = (uint32_t)(e - b);
      return 0;
    }
  }
  if (o->type == MSGPACK_OBJECT_ARRAY) {
    for (uint32_t i = 0; i < o->via.array.size; i++)
      if (subst_atts(&o->via.array.ptr[i], s, depth + 1))
        return -1;
  } else if (o->type == MSGPACK_OBJECT_MAP) {
    for (uint32_t i = 0; i < o->via.map.size; i++)
      if (subst_atts(&o->via.map.ptr[i].val, s, depth + 1))
        return -1;
  }
  return 0;
}

static void on_sio_packet_parsed(ms_hub *h, ms_hub_sio *s,
                                 ms_sio_packet sp, int with_atts,
                                 int64_t now);

static void on_sio_packet(ms_hub *h, ms_hub_sio *s, const char *p, size_t n,
                          int64_t now) {
  ms_sio_packet sp;
  if (s->bin_need || ms_sio_parse(p, n, &sp)) {
    sio_fail(h, s, now); /* (a text packet while attachments were due) */
    return;
  }
  if ((sp.type == MS_SIO_BINARY_EVENT || sp.type == MS_SIO_BINARY_ACK) &&
      sp.attachments > 0) {
    /* Keep it until its attachments are in (bounded: count and bytes). */
    if (sp.attachments > SIO_MAX_ATTACHMENTS || n > h->cfg.max_message) {
      ms_hub_close_conn(h, s->vc, MS_CLOSE_TOO_BIG, "too many attachments",
                        "closed", now);
      return;
    }
    ms_buf_reset(&s->bin_pkt);
    ms_buf_reset(&s->bin_data);
    if (ms_buf_append(&s->bin_pkt, p, n)) {
      ms_hub_close_conn(h, s->vc, MS_CLOSE_INTERNAL, "out of memory",
                        "closed", now);
      return;
    }
    s->bin_need = (unsigned)sp.attachments;
    s->bin_have = 0;
    s->bin_off[0] = 0;
    return;
  }
  on_sio_packet_parsed(h, s, sp, 0, now);
}

/* One attachment of the packet in s->bin_pkt; the last one completes it. */
static void on_attachment(ms_hub *h, ms_hub_sio *s, const uint8_t *p,
                          size_t n, int64_t now) {
  if (!s->bin_need) {
    sio_fail(h, s, now); /* binary data nobody announced */
    return;
  }
  if (s->bin_pkt.len + s->bin_data.len + n > h->cfg.max_message) {
    ms_hub_close_conn(h, s->vc, MS_CLOSE_TOO_BIG, "attachments too large",
                      "closed", now);
    return;
  }
  if (ms_buf_append(&s->bin_data, p, n)) {
    ms_hub_close_conn(h, s->vc, MS_CLOSE_INTERNAL, "out of memory", "closed",
                      now);
    return;
  }
  s->bin_off[++s->bin_have] = s->bin_data.len;
  if (s->bin_have < s->bin_need)
    return;
  ms_sio_packet sp;
  if (ms_sio_parse(s->bin_pkt.data, s->bin_pkt.len, &sp)) {
    sio_fail(h, s, now);
    return;
  }
  on_sio_packet_parsed(h, s, sp, 1, now);
  s->bin_need = s->bin_have = 0;
  if (!s->dead) {
    ms_buf_reset(&s->bin_pkt);
    ms_buf_reset(&s->bin_data);
  }
}

static void on_sio_packet_parsed(ms_hub *h, ms_hub_sio *s,
                                 ms_sio_packet sp, int with_atts,
                                 int64_t now) {
  ms_hub_sio_state *st = h->sio;
  if (sp.type == MS_SIO_BINARY_EVENT)
    sp.type = MS_SIO_EVENT;
  else if (sp.type == MS_SIO_BINARY_ACK)
    sp.type = MS_SIO_ACK;
  if (!(sp.nsp_len == 1 && sp.nsp[0] == '/')) {
    if (sp.type == MS_SIO_CONNECT) {
      static const char e[] = "44{\"message\":\"Invalid namespace\"}";
      emit(h, s, e, sizeof e - 1);
    }
    return; /* only "/" exists */
  }
  msgpack_object arg;
  arg.type = MSGPACK_OBJECT_NIL;
  if (sp.data_len) {
    ms_mpbuf_reset(&st->arg);
    msgpack_zone_clear(&st->zarg);
    size_t off = 0;
    if (ms_json_js_to_mp(sp.data, sp.data_len, &st->arg, st->json_seed,
                         MS_JSON_AUTO) ||
        msgpack_unpack(st->arg.sb.data, st->arg.sb.size, &off, &st->zarg,
                       &arg) != MSGPACK_UNPACK_SUCCESS) {
      sio_fail(h, s, now);
      return;
    }
    /* The placeholders become the attachments, as MessagePack bin. */
    if (with_atts && subst_atts(&arg, s, 0)) {
      sio_fail(h, s, now);
      return;
    }
  }
  switch (sp.type) {
  case MS_SIO_CONNECT:
    on_connect(h, s, arg.type == MSGPACK_OBJECT_MAP ? &arg : NULL, now);
    return;
  case MS_SIO_DISCONNECT:
    client_gone(h, s, now);
    return;
  case MS_SIO_EVENT:
    break;
  default:
    return; /* ACK, CONNECT_ERROR from a client: nothing to do */
  }
  if (arg.type != MSGPACK_OBJECT_ARRAY || arg.via.array.size < 1 ||
      arg.via.array.ptr[0].type != MSGPACK_OBJECT_STR) {
    sio_fail(h, s, now);
    return;
  }
  if (!s->connected || s->vc->state != HC_READY)
    return;
  const msgpack_object_str *ev = &arg.via.array.ptr[0].via.str;
  msgpack_object nil;
  nil.type = MSGPACK_OBJECT_NIL;
  const msgpack_object *a1 =
      arg.via.array.size > 1 ? &arg.via.array.ptr[1] : &nil;
#define EV_IS(lit)                                                         \
  (ev->size == sizeof lit - 1 && memcmp(ev->ptr, lit, sizeof lit - 1) == 0)
  int known = 1;
  if (EV_IS("request"))
    on_sio_request(h, s, a1, &sp, now); /* its ACK is the answer */
  else if (EV_IS("response"))
    on_sio_response(h, s, a1, now);
  else if (EV_IS("log"))
    on_sio_log(h, s, a1, now);
  else if (EV_IS("subscribe") && !s->name)
    on_sio_subscribe(h, s, a1, now);
  else if (!EV_IS("heartbeat"))
    known = 0; /* life, nothing more */
  if (sp.has_ack && !EV_IS("request") && !s->dead)
    emit_event_ack(h, s, sp.ack_id, known ? NULL : ev);
#undef EV_IS
}

static void on_eio_packet(ms_hub *h, ms_hub_sio *s, const ms_eio_packet *pk,
                          int64_t now) {
  if (s->dead)
    return;
  ms_hub_conn_alive(h, s->vc, now);
  switch (pk->type) {
  case MS_EIO_PING: {
    char buf[64];
    size_t n = pk->len < sizeof buf - 1 ? pk->len : sizeof buf - 1;
    buf[0] = '3';
    memcpy(buf + 1, pk->data, n);
    emit(h, s, buf, n + 1);
    return;
  }
  case MS_EIO_PONG:
    if (s->ping_out) {
      s->ping_out = 0;
      s->next_ping = now + hb(h);
    }
    return;
  case MS_EIO_CLOSE:
    client_gone(h, s, now);
    return;
  case MS_EIO_MESSAGE:
    if (pk->binary) {
      on_attachment(h, s, pk->data, pk->len, now);
      return;
    }
    on_sio_packet(h, s, (const char *)pk->data, pk->len, now);
    return;
  case MS_EIO_OPEN:
    sio_fail(h, s, now);
    return;
  default:
    return; /* NOOP; UPGRADE outside a probe */
  }
}

/* ---- HTTP: long-polling ---- */

static void http_error(ms_conn *c, int status, int code, const char *msg,
                       const char *cors) {
  char body[128];
  int n = snprintf(body, sizeof body, "{\"code\":%d,\"message\":\"%s\"}",
                   code, msg);
  ms_conn_http_respond(c, status, "application/json", cors[0] ? cors : NULL,
                       body, (size_t)n);
}

static ms_hub_sio *find(ms_hub *h, const char *sid, size_t n) {
  if (!h->sio || n != 20)
    return NULL;
  ms_hub_sio *s = ms_strmap_get(&h->sio->sids, sid, n);
  return s && !s->dead ? s : NULL;
}

void ms_hub_sio_http(ms_hub *h, ms_hub_conn *hc, const ms_http_request *req) {
  ms_conn *c = hc->ws;
  int64_t now = h->last_now;
  char cors[400];
  const char *why;
  int gst = ms_hub_http_guard(h, req, 0, hc->secure, hc->peer, now, &why);
  if (gst) { /* Host or Origin refused, as for every other request */
    http_error(c, gst, 4, "Forbidden", "");
    return;
  }
  cors_headers(req, cors, sizeof cors);
  if (ms_http_ieq(req->method, req->method_len, "OPTIONS")) {
    char extra[600];
    snprintf(extra, sizeof extra,
             "%sAccess-Control-Allow-Methods: GET, POST\r\n"
             "Access-Control-Allow-Headers: content-type\r\n",
             cors);
    ms_conn_http_respond(c, 204, NULL, extra, NULL, 0);
    return;
  }
  char v[32];
  size_t vn;
  if (ms_eio_query_get(req->query, req->query_len, "EIO", v, sizeof v, &vn) !=
          1 ||
      strcmp(v, "4") != 0) {
    http_error(c, 400, 5, "Unsupported protocol version", cors);
    return;
  }
  if (ms_eio_query_get(req->query, req->query_len, "transport", v, sizeof v,
                       &vn) != 1 ||
      strcmp(v, "polling") != 0) {
    http_error(c, 400, 0, "Transport unknown", cors);
    return;
  }
  int is_get = ms_http_ieq(req->method, req->method_len, "GET");
  int is_post = ms_http_ieq(req->method, req->method_len, "POST");
  int has_sid =
      ms_eio_query_get(req->query, req->query_len, "sid", v, sizeof v, &vn);
  if (has_sid != 1) {
    if (!is_get) {
      http_error(c, 400, 2, "Bad handshake method", cors);
      return;
    }
    int status;
    ms_hub_sio *s = session_new(h, hc, req, now, &status);
    if (!s) {
      http_error(c, status, 3, status == 400 ? "Bad request"
                                             : "Too many sessions", cors);
      return;
    }
    char buf[256];
    int n = open_packet(h, s, 1, buf, sizeof buf);
    poll_reply(h, hc, "text/plain; charset=UTF-8", cors[0] ? cors : NULL,
               buf, (size_t)n);
    return;
  }
  ms_hub_sio *s = find(h, v, vn);
  if (!s) {
    http_error(c, 400, 1, "Session ID unknown", cors);
    return;
  }
  if (is_get) {
    if (s->upgraded || s->poll_hc) {
      /* A second GET while one is parked, or polling after the upgrade:
       * the client is confused; end the session. */
      http_error(c, 400, 3, "Bad request", cors);
      ms_hub_close_conn(h, s->vc, MS_CLOSE_PROTOCOL, "overlapping polls",
                        "closed", now);
      return;
    }
    ms_hub_conn_alive(h, s->vc, now);
    s->poll_hc = hc;
    hc->sio_carried = s;
    if (s->connected)
      ms_hub_peer_done(h, hc);
    if (s->pollq.len) {
      poll_answer(h, s, "6");
      if (s->closing)
        sio_finish(h, s);
    }
    return;
  }
  if (!is_post) {
    http_error(c, 400, 2, "Bad request method", cors);
    return;
  }
  /* Answer first: handling the packets may end the session. */
  poll_reply(h, hc, "text/html", cors[0] ? cors : NULL, "ok", 2);
  ms_hub_sio_state *st = h->sio;
  size_t pos = 0;
  for (;;) {
    ms_eio_packet pk;
    int rv = ms_eio_payload_next(req->body, req->body_len, &pos, &st->b64,
                                 &pk);
    if (rv == MS_ERR_NEED_MORE)
      break;
    if (rv) {
      sio_fail(h, s, now);
      break;
    }
    on_eio_packet(h, s, &pk, now);
    if (s->dead || s->closing)
      break;
  }
}

/* ---- WebSocket ---- */

int ms_hub_sio_upgrade(ms_hub *h, ms_hub_conn *hc,
                       const ms_http_request *req) {
  char v[32];
  size_t vn;
  if (ms_eio_query_get(req->query, req->query_len, "EIO", v, sizeof v, &vn) !=
          1 ||
      strcmp(v, "4") != 0)
    return 400;
  if (ms_eio_query_get(req->query, req->query_len, "transport", v, sizeof v,
                       &vn) != 1 ||
      strcmp(v, "websocket") != 0)
    return 400;
  int has_sid =
      ms_eio_query_get(req->query, req->query_len, "sid", v, sizeof v, &vn);
  if (has_sid < 0)
    return 400;
  if (has_sid == 1) {
    ms_hub_sio *s = find(h, v, vn);
    if (!s || s->upgraded || s->ws_hc || s->closing)
      return 400;
  } else if (h->sio && h->sio->sids.n >= h->cfg.sio_max_sessions) {
    return 503;
  }
  hc->eio_ws = 1;
  return 0;
}

void ms_hub_sio_ws_open(ms_hub *h, ms_hub_conn *hc,
                        const ms_http_request *req) {
  char v[32];
  size_t vn;
  int64_t now = h->last_now;
  if (ms_eio_query_get(req->query, req->query_len, "sid", v, sizeof v,
                       &vn) == 1) {
    ms_hub_sio *s = find(h, v, vn);
    if (!s || s->upgraded || s->ws_hc) {
      ms_conn_close(hc->ws, MS_CLOSE_PROTOCOL, "session unknown");
      return;
    }
    s->ws_hc = hc; /* probing */
    hc->sio_carried = s;
    if (s->connected)
      ms_hub_peer_done(h, hc);
    return;
  }
  int status;
  ms_hub_sio *s = session_new(h, hc, req, now, &status);
  if (!s) {
    ms_conn_close(hc->ws, status == 400 ? MS_CLOSE_PROTOCOL : 1013,
                  status == 400 ? "bad request" : "too many sessions");
    return;
  }
  s->upgraded = 1;
  s->ws_hc = hc;
  hc->sio_carried = s;
  char buf[256];
  int n = open_packet(h, s, 0, buf, sizeof buf);
  emit(h, s, buf, (size_t)n);
}

void ms_hub_sio_ws_message(ms_hub *h, ms_hub_conn *hc,
                           const ms_conn_message_arg *arg) {
  ms_hub_sio *s = hc->sio_carried;
  int64_t now = h->last_now;
  if (!s)
    return; /* the session is over; the close is under way */
  ms_eio_packet pk;
  if (ms_eio_parse_ws(arg->binary, arg->data, arg->len, &pk)) {
    sio_fail(h, s, now);
    return;
  }
  if (!s->upgraded) {
    /* The probe: "2probe" -> "3probe", then "5" switches transports. */
    ms_hub_conn_alive(h, s->vc, now);
    if (pk.type == MS_EIO_PING && pk.len == 5 &&
        memcmp(pk.data, "probe", 5) == 0) {
      ms_conn_send(hc->ws, 0, (const uint8_t *)"3probe", 6);
      mark(h, hc);
      /* Let the parked poll return so the client can pause polling. */
      if (s->poll_hc && !s->pollq.len)
        poll_answer(h, s, "6");
      return;
    }
    if (pk.type == MS_EIO_UPGRADE) {
      s->upgraded = 1;
      if (s->poll_hc)
        poll_answer(h, s, "6");
      /* What waited for a poll goes out on the WebSocket, in order. */
      size_t pos = 0;
      ms_buf q = s->pollq;
      ms_buf_init(&s->pollq, h->mem);
      for (;;) {
        ms_eio_packet op;
        if (ms_eio_payload_next((const uint8_t *)q.data, q.len, &pos,
                                &h->sio->b64, &op))
          break;
        if (op.binary) { /* an attachment */
          ms_conn_send(hc->ws, 1, op.data, op.len);
          continue;
        }
        char t = (char)('0' + op.type);
        ms_buf_reset(&h->sio->pkt);
        if (ms_buf_append(&h->sio->pkt, &t, 1) ||
            ms_buf_append(&h->sio->pkt, op.data, op.len))
          break;
        ms_conn_send(hc->ws, 0, (const uint8_t *)h->sio->pkt.data,
                     h->sio->pkt.len);
      }
      ms_buf_free(&q);
      mark(h, hc);
      return;
    }
    /* Anything else before the upgrade: not a probe; drop the socket. */
    s->ws_hc = NULL;
    hc->sio_carried = NULL;
    ms_conn_close(hc->ws, MS_CLOSE_PROTOCOL, "bad upgrade");
    mark(h, hc);
    return;
  }
  on_eio_packet(h, s, &pk, now);
}
