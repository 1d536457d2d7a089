/* The hub's two streams, "logs" and "presence": a ring of kept records
 * per stream (history), subscribers with filters, live fan-out, gap and
 * live markers (PROTOCOL.md "Logs and presence"). */
#include "ms_hub_int.h"
#include "ms_ring.h"

#include <stdio.h>

enum { STREAM_LOGS = 0, STREAM_PRESENCE = 1, N_STREAMS = 2 };

typedef struct rec {
  uint64_t seq;
  int64_t ts_us;
  int64_t level;      /* logs */
  uint8_t kind;       /* presence: 1 up, 2 down */
  /* A cluster record of this hub's that its subscribers were shown
   * before (under a local seq, while the cluster streams were away):
   * kept for its seq, never shown again. */
  uint8_t hidden;
  uint16_t service_len;
  uint32_t message_len;
  uint32_t extra_len; /* fields / detail, MessagePack */
  char data[];        /* service, message, extra */
} rec;

/* The subscriptions of one stream that name one service: a record of
 * that service is offered to them (and to those without a services
 * filter), never to the rest, so a record costs O(subscriptions that can
 * match it) however many filter on other names. */
typedef struct svc_list {
  struct sub_link *head;
  size_t len;
  char key[]; /* the service name; the stream's map borrows it */
} svc_list;

/* A subscription's place in one service's list (one per distinct name in
 * its filter), or in the stream's list of unfiltered subscriptions. */
typedef struct sub_link {
  hub_sub *sub;
  struct sub_link *prev, *next;
  svc_list *list; /* NULL: the unfiltered list */
} sub_link;

struct hub_sub {
  ms_hub_conn *hc;
  uint64_t sub_id;
  int stream;
  hub_sub *conn_next;
  hub_sub *s_prev, *s_next; /* every subscription of the stream */
  sub_link *links;          /* its entries in the service index */
  size_t n_links;
  /* filter */
  char **services;
  size_t n_services;
  int64_t min_level;
  char *contains;
  size_t contains_len;
  /* Next seq this subscriber has not been shown. The stream's ring is
   * the queue: a subscriber that falls behind (its connection backed up)
   * catches up from the ring when its output drains, and whatever the
   * ring dropped meanwhile (or more than sub_queue behind) is reported
   * with one gap marker. No per-subscriber copies. */
  uint64_t cursor;
  /* Caught up: it has been offered every kept record (cursor is then
   * implicitly the stream's seq + 1). Only live subscriptions take
   * records from fan-out, which visits only those that can match; a
   * matching one that is backed up stops being live at that record. */
  int live;
  /* Replaying history: the live marker is still to come, and fan-out
   * leaves the subscriber to catch_up() until it is sent. */
  int replaying;
  /* `history` N: still looking back (from walk_seq down) for the start of
   * the last N matching records; walk_left matches still to find. */
  uint64_t walk_left, walk_seq;
  size_t bytes; /* filter bytes, counted against max_filter_bytes */
};

/* Ring entries one connection's subscriptions examine per call (a
 * SUBSCRIBE, a drained write, a tick): replaying or searching a 10,000
 * record history is spread over a few loop turns instead of stalling
 * every other connection. */
#define STEP_RECORDS 1024
/* Filter limits of one subscription (past them: BAD_REQUEST). */
#define MAX_FILTER_SERVICES 64
#define MAX_FILTER_CONTAINS 1024
#define MS_MAX_NAME 128

typedef struct stream {
  ms_ring ring;        /* rec *, oldest first; bounded by cfg.log_ring
                          and cfg.log_ring_bytes, the oldest leave */
  uint64_t seq;        /* newest seq kept, 0 if none */
  hub_sub *subs;
  ms_strmap by_service; /* service name -> svc_list */
  sub_link *unfiltered; /* subscriptions without a services filter */
} stream;

struct ms_hub_streams {
  stream s[N_STREAMS];
  ms_mpbuf body; /* record encoded once, after [type, sub_id] */
  msgpack_packer bpk;
};

static size_t rec_size(const void *p) {
  const rec *r = p;
  return sizeof *r + r->service_len + r->message_len + r->extra_len;
}

static void rec_drop(void *p, void *ud) {
  ms_hub *h = ud;
  ms_free(h->mem, p);
}

int ms_hub_streams_new(ms_hub *h) {
  ms_hub_streams *st = ms_calloc(h->mem, 1, sizeof *st);
  if (!st)
    return MS_ERR_NOMEM;
  size_t cap[N_STREAMS];
  cap[STREAM_LOGS] = h->cfg.log_ring;
  cap[STREAM_PRESENCE] = MS_MAX(h->cfg.log_ring / 10, (size_t)1000);
  for (int i = 0; i < N_STREAMS; i++) {
    ms_strmap_init(&st->s[i].by_service, h->mem,
                   h->registry.seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)));
    ms_ring_init(&st->s[i].ring, h->mem, cap[i], h->cfg.log_ring_bytes,
                 MS_RING_DROP_OLDEST, rec_size, rec_drop, h);
    /* Every slot now: keeping a record never fails for want of one. */
    if (ms_ring_reserve(&st->s[i].ring) != 0) {
      for (int j = 0; j < i; j++)
        ms_ring_free(&st->s[j].ring);
      ms_free(h->mem, st);
      return MS_ERR_NOMEM;
    }
  }
  ms_mpbuf_init(&st->body, h->mem);
  msgpack_packer_init(&st->bpk, &st->body, ms_mpbuf_write);
  h->streams = st;
  return 0;
}

static void sub_free(ms_hub *h, hub_sub *s) {
  for (size_t i = 0; i < s->n_services; i++)
    ms_free(h->mem, s->services[i]);
  ms_free(h->mem, s->services);
  ms_free(h->mem, s->contains);
  ms_free(h->mem, s->links);
  ms_free(h->mem, s);
}

void ms_hub_streams_del(ms_hub *h) {
  ms_hub_streams *st = h->streams;
  if (!st)
    return;
  for (int i = 0; i < N_STREAMS; i++) {
    ms_ring_free(&st->s[i].ring);
    /* Subscriptions are dropped with their connections, before this:
     * the lists are empty, and so is the map. */
    ms_strmap_free(&st->s[i].by_service);
  }
  ms_mpbuf_destroy(&st->body);
  ms_free(h->mem, st);
  h->streams = NULL;
}

static rec *ring_at(const stream *s, size_t k) {
  return ms_ring_at(&s->ring, k);
}

static uint64_t oldest_seq(const stream *s) {
  return ms_ring_len(&s->ring) ? ring_at(s, 0)->seq : s->seq + 1;
}

/* The index of the first kept record with a seq >= seq (the ring's length
 * if none). Seqs are contiguous but for the holes a cluster declares
 * (ms_hub_cluster_skip): the direct index first, else a search. */
static size_t ring_find(const stream *s, uint64_t seq) {
  uint64_t lo = oldest_seq(s);
  size_t n = ms_ring_len(&s->ring);
  if (seq <= lo)
    return 0;
  if (seq - lo < n && ring_at(s, (size_t)(seq - lo))->seq == seq)
    return (size_t)(seq - lo);
  size_t a = 0, b = n;
  while (a < b) {
    size_t mid = a + (b - a) / 2;
    if (ring_at(s, mid)->seq < seq)
      a = mid + 1;
    else
      b = mid;
  }
  return a;
}

/* A record's fields (or a presence detail) as a MessagePack map: the
 * bytes they came in (raw, a checked map) as they are, else extra packed
 * into eb (a map, or an empty one). 0 with *out set, or nonzero when out
 * of memory. */
static int fields_bytes(ms_mpbuf *eb, const msgpack_object *extra,
                        const ms_raw *raw, ms_raw *out) {
  if (raw && raw->ptr && raw->len) {
    *out = *raw;
    return 0;
  }
  msgpack_packer epk;
  msgpack_packer_init(&epk, eb, ms_mpbuf_write);
  if (extra && extra->type == MSGPACK_OBJECT_MAP)
    msgpack_pack_object(&epk, *extra);
  else
    msgpack_pack_map(&epk, 0);
  out->ptr = (const uint8_t *)eb->sb.data;
  out->len = eb->sb.size;
  return eb->failed;
}

static rec *keep(ms_hub *h, stream *s, int64_t ts_us, int64_t level,
                 int kind, const char *service, size_t service_len,
                 const char *message, size_t message_len,
                 const msgpack_object *extra, const ms_raw *extra_raw) {
  ms_mpbuf eb;
  ms_mpbuf_init(&eb, h->mem);
  ms_raw fb;
  int prv = fields_bytes(&eb, extra, extra_raw, &fb);
  if (service_len > 65535)
    service_len = 65535;
  /* A record without its fields is not kept half. */
  rec *r = prv ? NULL
               : ms_malloc(h->mem,
                           sizeof *r + service_len + message_len + fb.len);
  if (!r) {
    ms_mpbuf_destroy(&eb);
    return NULL;
  }
  r->seq = ++s->seq;
  r->hidden = 0;
  r->ts_us = ts_us;
  r->level = level;
  r->kind = (uint8_t)kind;
  r->service_len = (uint16_t)service_len;
  r->message_len = (uint32_t)message_len;
  r->extra_len = (uint32_t)fb.len;
  memcpy(r->data, service, service_len);
  if (message_len)
    memcpy(r->data + service_len, message, message_len);
  memcpy(r->data + service_len + message_len, fb.ptr, fb.len);
  ms_mpbuf_destroy(&eb);
  /* Oldest out while over the count or the byte budget (every slot is
   * reserved: this cannot fail). */
  if (ms_ring_push(&s->ring, r) != 0) {
    ms_free(h->mem, r);
    return NULL;
  }
  return r;
}

static unsigned char ascii_lower(unsigned char ch) {
  return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + 32) : ch;
}

/* `contains`: an ASCII case-insensitive substring (the same rule as the
 * store's /api/logs and the viewer's search). */
static int contains_icase(const char *hay, size_t n, const char *needle,
                          size_t k) {
  if (k > n)
    return 0;
  unsigned char first = ascii_lower((unsigned char)needle[0]);
  for (size_t i = 0; i + k <= n; i++) {
    if (ascii_lower((unsigned char)hay[i]) != first)
      continue;
    size_t j = 1;
    while (j < k && ascii_lower((unsigned char)hay[i + j]) ==
                        ascii_lower((unsigned char)needle[j]))
      j++;
    if (j == k)
      return 1;
  }
  return 0;
}

/* The filter but its services (the index has checked those). */
static int matches_rest(const hub_sub *sub, const rec *r) {
  if (sub->stream == STREAM_LOGS) {
    if (r->level < sub->min_level)
      return 0;
    if (sub->contains_len &&
        !contains_icase(r->data + r->service_len, r->message_len,
                        sub->contains, sub->contains_len))
      return 0;
  }
  return 1;
}

static int matches(const hub_sub *sub, const rec *r) {
  const char *svc = r->data;
  if (r->hidden)
    return 0;
  if (sub->n_services) {
    size_t i;
    for (i = 0; i < sub->n_services; i++)
      if (strlen(sub->services[i]) == r->service_len &&
          memcmp(sub->services[i], svc, r->service_len) == 0)
        break;
    if (i == sub->n_services)
      return 0;
  }
  return matches_rest(sub, r);
}

/* Encode the record's body (everything after type and sub_id) once. */
static void encode_body(ms_hub_streams *st, int stream_id, const rec *r) {
  msgpack_packer *pk = &st->bpk;
  ms_mpbuf_reset(&st->body);
  const uint8_t *extra =
      (const uint8_t *)r->data + r->service_len + r->message_len;
  if (stream_id == STREAM_LOGS)
    ms_enc_record_rest(pk, r->seq, r->ts_us, r->level,
                       (ms_str){r->data, r->service_len},
                       (ms_str){r->data + r->service_len, r->message_len},
                       extra, r->extra_len, NULL);
  else
    ms_enc_presence_rest(pk, r->seq, r->ts_us,
                         ms_str_c(r->kind == 1 ? "up" : "down"),
                         (ms_str){r->data, r->service_len}, extra,
                         r->extra_len, NULL);
}

static int send_body(ms_hub *h, hub_sub *sub) {
  ms_hub_streams *st = h->streams;
  msgpack_packer *pk = ms_hub_packer(h);
  ms_enc_stream_head(pk,
                     sub->stream == STREAM_LOGS ? MS_MSG_RECORD
                                                : MS_MSG_PRESENCE,
                     sub->sub_id);
  if (st->body.failed)
    return MS_ERR_NOMEM; /* never a record cut short */
  ms_mpbuf_write(&h->out, st->body.sb.data, st->body.sb.size);
  int rv = ms_hub_send_out(h, sub->hc);
  if (rv == 0 && sub->stream == STREAM_LOGS)
    h->stats.log_records_out++;
  return rv;
}

static void send_marker_of(ms_hub *h, hub_sub *sub, uint64_t seq,
                           const char *what, uint64_t missed, int store,
                           int64_t now) {
  if (missed && sub->stream == STREAM_LOGS && !store)
    h->stats.log_records_missed += missed;
  /* A marker is a RECORD of level 0 and no service: {missed: n}, and for
   * records the store could not keep, store: true. */
  ms_objmap fields;
  ms_objmap_init(&fields);
  if (missed)
    ms_objmap_int(&fields, "missed", (int64_t)missed);
  if (missed && store)
    ms_objmap_true(&fields, "store");
  ms_enc_record(ms_hub_packer(h), sub->sub_id, seq, ms_hub_wall_us(h, now),
                0, ms_str_c(""), ms_str_c(what), &fields.obj);
  ms_hub_send_out(h, sub->hc);
}

static void send_marker(ms_hub *h, hub_sub *sub, uint64_t seq,
                        const char *what, uint64_t missed, int64_t now) {
  send_marker_of(h, sub, seq, what, missed, 0, now);
}

int ms_hub_store_gap(ms_hub *h, uint64_t last_seq, uint64_t missed,
                     int64_t now) {
  if (!h || missed == 0)
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  ms_hub_enter(h);
  h->last_now = now;
  for (hub_sub *sub = h->streams->s[STREAM_LOGS].subs; sub; sub = sub->s_next)
    if (sub->hc->state == HC_READY)
      send_marker_of(h, sub, last_seq, "gap", missed, 1, now);
  ms_hub_leave(h);
  return 0;
}

static int backed_up(const ms_hub *h, const hub_sub *sub) {
  return ms_hub_conn_out_pending(sub->hc) > h->cfg.out_high_water;
}

static void send_marker(ms_hub *h, hub_sub *sub, uint64_t seq,
                        const char *what, uint64_t missed, int64_t now);

/* Send one kept record; one that cannot go out in the subscriber's
 * encoding (too large once JSON) is reported as missed, not skipped
 * silently. */
static void deliver(ms_hub *h, hub_sub *sub, const rec *r, int64_t now) {
  if (send_body(h, sub) == MS_ERR_TOO_BIG)
    send_marker(h, sub, r->seq, "gap", 1, now);
}

static void kept_log(ms_hub *h, rec *r);

/* Offer a new record to the subscriptions of one index list. Sending
 * never frees a subscription (a connection past its output limit is
 * closed when the outermost call returns), so the list holds still. */
static void offer(ms_hub *h, int stream_id, const rec *r, sub_link *l,
                  int *encoded) {
  for (; l; l = l->next) {
    hub_sub *sub = l->sub;
    if (!sub->live || !matches_rest(sub, r))
      continue; /* not live: it catches up from the ring when drained */
    if (backed_up(h, sub)) {
      sub->live = 0;
      sub->cursor = r->seq;
      continue;
    }
    if (!*encoded) {
      encode_body(h->streams, stream_id, r);
      *encoded = 1;
    }
    deliver(h, sub, r, h->last_now);
  }
}

static void fan_out(ms_hub *h, int stream_id, const rec *r) {
  stream *s = &h->streams->s[stream_id];
  int encoded = 0;
  if (r->hidden)
    return; /* shown before; live subscribers are past it already */
  svc_list *l = ms_strmap_get(&s->by_service, r->data, r->service_len);
  if (l)
    offer(h, stream_id, r, l->head, &encoded);
  offer(h, stream_id, r, s->unfiltered, &encoded);
}

static void link_in(sub_link **head, sub_link *l) {
  l->prev = NULL;
  l->next = *head;
  if (*head)
    (*head)->prev = l;
  *head = l;
}

static void index_remove(ms_hub *h, stream *s, hub_sub *sub) {
  for (size_t i = 0; i < sub->n_links; i++) {
    sub_link *l = &sub->links[i];
    sub_link **head = l->list ? &l->list->head : &s->unfiltered;
    if (l->prev)
      l->prev->next = l->next;
    else
      *head = l->next;
    if (l->next)
      l->next->prev = l->prev;
    if (l->list && !l->list->head) {
      ms_strmap_del(&s->by_service, l->list->key, l->list->len);
      ms_free(h->mem, l->list);
    }
  }
  sub->n_links = 0;
}

/* Enter a subscription in the stream's index: under each distinct name
 * of its filter, or in the unfiltered list. 0, or MS_ERR_NOMEM with
 * nothing entered. */
static int index_add(ms_hub *h, stream *s, hub_sub *sub) {
  size_t n = sub->n_services ? sub->n_services : 1;
  sub->links = ms_calloc(h->mem, n, sizeof *sub->links);
  if (!sub->links)
    return MS_ERR_NOMEM;
  sub->n_links = 0;
  if (!sub->n_services) {
    sub->links[0].sub = sub;
    link_in(&s->unfiltered, &sub->links[0]);
    sub->n_links = 1;
    return 0;
  }
  for (size_t i = 0; i < sub->n_services; i++) {
    const char *name = sub->services[i];
    size_t len = strlen(name), j;
    for (j = 0; j < i; j++)
      if (strcmp(sub->services[j], name) == 0)
        break;
    if (j < i)
      continue; /* named twice: offered once */
    svc_list *sl = ms_strmap_get(&s->by_service, name, len);
    if (!sl) {
      sl = ms_malloc(h->mem, sizeof *sl + len + 1);
      if (!sl) {
        index_remove(h, s, sub);
        return MS_ERR_NOMEM;
      }
      sl->head = NULL;
      sl->len = len;
      memcpy(sl->key, name, len + 1);
      if (ms_strmap_put(&s->by_service, sl->key, len, sl)) {
        ms_free(h->mem, sl);
        index_remove(h, s, sub);
        return MS_ERR_NOMEM;
      }
    }
    sub_link *l = &sub->links[sub->n_links++];
    l->sub = sub;
    l->list = sl;
    link_in(&sl->head, l);
  }
  return 0;
}

/* Look back for where `history` N starts, within *budget entries. */
static void walk_back(ms_hub *h, hub_sub *sub, long *budget) {
  stream *s = &h->streams->s[sub->stream];
  uint64_t lo = oldest_seq(s);
  while (sub->walk_left > 0) {
    if (sub->walk_seq < lo || sub->walk_seq == 0) {
      sub->cursor = lo; /* fewer than N kept: all of them */
      sub->walk_left = 0;
      break;
    }
    if (*budget <= 0)
      return;
    (*budget)--;
    /* The newest record at or below walk_seq (there is one: >= lo). */
    size_t i = ring_find(s, sub->walk_seq);
    if (i == ms_ring_len(&s->ring) || ring_at(s, i)->seq > sub->walk_seq)
      i--;
    const rec *r = ring_at(s, i);
    if (matches(sub, r) && --sub->walk_left == 0) {
      sub->cursor = r->seq;
      break;
    }
    sub->walk_seq = r->seq - 1;
  }
}

/* Bring a subscriber up to date from the ring, as far as its
 * connection's output and *budget (ring entries examined) allow: history
 * after SUBSCRIBE (then the live marker), or what it fell behind while
 * backed up. Returns 1 if it stopped on the budget with work left. */
static int catch_up(ms_hub *h, hub_sub *sub, int64_t now, long *budget) {
  ms_hub_streams *st = h->streams;
  stream *s = &st->s[sub->stream];
  if (sub->walk_left > 0) {
    walk_back(h, sub, budget);
    if (sub->walk_left > 0)
      return 1;
  }
  uint64_t lo = oldest_seq(s);
  if (!sub->replaying && s->seq >= h->cfg.sub_queue &&
      s->seq - h->cfg.sub_queue + 1 > lo)
    lo = s->seq - h->cfg.sub_queue + 1;
  if (sub->cursor < lo) {
    /* Lost: everything of the stream's between cursor and lo. */
    send_marker(h, sub, lo - 1, "gap", lo - sub->cursor, now);
    sub->cursor = lo;
  }
  while (sub->cursor <= s->seq && !backed_up(h, sub) &&
         sub->hc->state == HC_READY) {
    if (*budget <= 0)
      return 1;
    (*budget)--;
    size_t i = ring_find(s, sub->cursor);
    if (i == ms_ring_len(&s->ring)) { /* a hole up to the newest seq */
      sub->cursor = s->seq + 1;
      break;
    }
    const rec *r = ring_at(s, i);
    sub->cursor = r->seq + 1;
    if (!matches(sub, r))
      continue;
    encode_body(st, sub->stream, r);
    deliver(h, sub, r, now);
  }
  if (sub->replaying && sub->cursor > s->seq && !backed_up(h, sub) &&
      sub->hc->state == HC_READY) {
    sub->replaying = 0;
    send_marker(h, sub, s->seq, "live", 0, now);
  }
  if (!sub->replaying && sub->cursor > s->seq)
    sub->live = 1;
  return 0;
}

void ms_hub_subs_drained(ms_hub *h, ms_hub_conn *hc) {
  long budget = STEP_RECORDS;
  hc->subs_more = 0;
  for (hub_sub *sub = hc->subs; sub; sub = sub->conn_next) {
    if (!sub->live && !backed_up(h, sub) &&
        catch_up(h, sub, h->last_now, &budget))
      hc->subs_more = 1;
  }
}

/* In a cluster, records are published and kept when they come back in
 * cluster order (ms_hub_cluster_record). Logs: [ts_us, level, service,
 * message, fields_bin]; presence: [ts_us, kind, service, detail_bin]. */
static void cluster_publish(ms_hub *h, int stream_id, int64_t ts_us,
                            int64_t level, const char *kind,
                            const char *service, size_t service_len,
                            const char *message, size_t message_len,
                            const msgpack_object *extra,
                            const ms_raw *extra_raw) {
  ms_mpbuf eb;
  ms_mpbuf_init(&eb, h->mem);
  ms_raw fb;
  if (fields_bytes(&eb, extra, extra_raw, &fb) != 0) {
    ms_mpbuf_destroy(&eb);
    return; /* out of memory: the record is lost, not half sent */
  }
  msgpack_packer *pk = ms_hub_packer(h);
  msgpack_pack_array(pk, stream_id == STREAM_LOGS ? 5 : 4);
  msgpack_pack_int64(pk, ts_us);
  if (stream_id == STREAM_LOGS)
    msgpack_pack_int64(pk, level);
  else
    msgpack_pack_str_with_body(pk, kind, strlen(kind));
  msgpack_pack_str_with_body(pk, service, service_len);
  if (stream_id == STREAM_LOGS)
    msgpack_pack_str_with_body(pk, message ? message : "", message_len);
  msgpack_pack_bin_with_body(pk, fb.ptr, fb.len);
  ms_mpbuf_destroy(&eb);
  if (h->out.failed)
    return; /* out of memory: the record is lost, not half sent */
  h->cl.publish(h->cl_ctx,
                stream_id == STREAM_LOGS ? MS_CLUSTER_LOGS
                                         : MS_CLUSTER_PRESENCE,
                (const uint8_t *)h->out.sb.data, h->out.sb.size);
}

/* One presence record: detail {reason?, instance?, hub?}. */
static void presence_rec(ms_hub *h, const char *kind, const char *name,
                         size_t name_len, const char *instance,
                         const char *reason, const char *hub, int64_t now) {
  stream *s = &h->streams->s[STREAM_PRESENCE];
  ms_objmap detail;
  ms_objmap_init(&detail);
  if (reason)
    ms_objmap_str(&detail, "reason", reason, strlen(reason));
  if (instance)
    ms_objmap_str(&detail, "instance", instance, strlen(instance));
  if (hub)
    ms_objmap_str(&detail, "hub", hub, strlen(hub));
  rec *r = NULL;
  if (h->clustered)
    cluster_publish(h, STREAM_PRESENCE, ms_hub_wall_us(h, now), 0, kind, name,
                    name_len, NULL, 0, &detail.obj, NULL);
  /* Kept here when on its own, or while the cluster is away (out of
   * memory it is not kept, nor half kept). */
  if (!h->clustered || h->cl_local)
    r = keep(h, s, ms_hub_wall_us(h, now), 0, kind[0] == 'u' ? 1 : 2, name,
             name_len, NULL, 0, &detail.obj, NULL);
  if (r)
    fan_out(h, STREAM_PRESENCE, r);
}

void ms_hub_presence(ms_hub *h, const char *kind, const ms_hub_conn *hc,
                     const char *reason, int64_t now) {
  presence_rec(h, kind, hc->name, hc->name_len, hc->instance, reason, NULL,
               now);
}

int ms_hub_cluster_presence_lost(ms_hub *h, const char *name, size_t len,
                                 const char *hub_id, int64_t now) {
  if (!h->clustered || ms_life_dead(&h->life))
    return MS_ERR_STATE;
  if (!name || len == 0 || len > 128 || !hub_id || !*hub_id)
    return MS_ERR_INVALID_ARG;
  ms_hub_enter(h);
  h->last_now = now;
  presence_rec(h, "down", name, len, NULL, "hub_lost", hub_id, now);
  ms_hub_leave(h);
  return 0;
}

void ms_hub_cluster_rejoined(ms_hub *h, const char *name, size_t len,
                             int64_t now) {
  if (!h->clustered || ms_life_dead(&h->life))
    return;
  ms_hub_conn *hc = ms_strmap_get(&h->registry, name, len);
  if (!hc || !hc->registered)
    return;
  ms_hub_enter(h);
  h->last_now = now;
  ms_hub_presence(h, "up", hc, "rejoined", now);
  ms_hub_leave(h);
}

void ms_hub_on_log(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                   int64_t now) {
  stream *s = &h->streams->s[STREAM_LOGS];
  int64_t ts = m->ts_us > 0 ? m->ts_us : ms_hub_wall_us(h, now);
  char srcbuf[MS_SOURCE_MAX];
  size_t src_len;
  const char *src = ms_hub_source(h, hc, srcbuf, &src_len);
  if (h->clustered) {
    cluster_publish(h, STREAM_LOGS, ts, m->level, NULL, src, src_len,
                    m->message.ptr, m->message.len, &m->extra, &m->extra_raw);
    if (!h->cl_local)
      return; /* kept when it comes back in cluster order */
  }
  rec *r = keep(h, s, ts, m->level, 0, src, src_len, m->message.ptr,
                m->message.len, &m->extra, &m->extra_raw);
  if (!r)
    return;
  kept_log(h, r);
}

/* A log record was kept: the store hook, then the subscribers. */
static void kept_log(ms_hub *h, rec *r) {
  if (r->hidden) {
    fan_out(h, STREAM_LOGS, r); /* (moves the cursors past it) */
    return;
  }
  h->stats.log_records++;
  if (h->cfg.on_record && !ms_life_dead(&h->life)) {
    ms_hub_record hr;
    hr.seq = r->seq;
    hr.ts_us = r->ts_us;
    hr.level = r->level;
    hr.service = r->data;
    hr.service_len = r->service_len;
    hr.message = r->data + r->service_len;
    hr.message_len = r->message_len;
    hr.fields = (const uint8_t *)r->data + r->service_len + r->message_len;
    hr.fields_len = r->extra_len;
    h->cfg.on_record(h, &hr, h->ud);
  }
  fan_out(h, STREAM_LOGS, r);
}

uint64_t ms_hub_cluster_last_seq(const ms_hub *h, int which) {
  if (which != MS_CLUSTER_LOGS && which != MS_CLUSTER_PRESENCE)
    return 0;
  return h->streams->s[which == MS_CLUSTER_LOGS ? STREAM_LOGS
                                                 : STREAM_PRESENCE].seq;
}

static void ring_clear(ms_hub *h, stream *s) {
  (void)h;
  ms_ring_clear(&s->ring);
}

static int record_in(ms_hub *h, int stream_id, uint64_t seq,
                     const uint8_t *buf, size_t len, int64_t now,
                     int hidden) {
  if (stream_id != MS_CLUSTER_LOGS && stream_id != MS_CLUSTER_PRESENCE)
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  int sid = stream_id == MS_CLUSTER_LOGS ? STREAM_LOGS : STREAM_PRESENCE;
  stream *s = &h->streams->s[sid];
  if (seq <= s->seq || seq > MS_MAX_ID)
    return 0; /* already kept (or nonsense) */
  if (ms_msgpack_check(buf, len) != 0)
    return MS_ERR_BAD_MESSAGE;
  msgpack_zone z;
  msgpack_zone_init(&z, 512);
  msgpack_object o;
  size_t off = 0;
  int rv = MS_ERR_BAD_MESSAGE;
  if (msgpack_unpack((const char *)buf, len, &off, &z, &o) !=
          MSGPACK_UNPACK_SUCCESS ||
      o.type != MSGPACK_OBJECT_ARRAY ||
      o.via.array.size != (sid == STREAM_LOGS ? 5u : 4u))
    goto out;
  const msgpack_object *a = o.via.array.ptr;
  const msgpack_object *svc = &a[sid == STREAM_LOGS ? 2 : 2];
  const msgpack_object *eb = &a[sid == STREAM_LOGS ? 4 : 3];
  int64_t ts, level = 0;
  int kind = 0;
  if (a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    ts = (int64_t)(a[0].via.u64 & INT64_MAX);
  else if (a[0].type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    ts = a[0].via.i64;
  else
    goto out;
  if (sid == STREAM_LOGS) {
    if (a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        a[1].via.u64 > INT64_MAX || a[3].type != MSGPACK_OBJECT_STR)
      goto out;
    level = (int64_t)a[1].via.u64;
  } else {
    if (a[1].type != MSGPACK_OBJECT_STR || a[1].via.str.size < 2)
      goto out;
    kind = a[1].via.str.ptr[0] == 'u' ? 1 : 2;
  }
  if (svc->type != MSGPACK_OBJECT_STR || eb->type != MSGPACK_OBJECT_BIN)
    goto out;
  /* The fields (detail): one well-formed map, kept as the bytes they are. */
  ms_raw extra = {(const uint8_t *)eb->via.bin.ptr, eb->via.bin.size};
  if (!extra.len || !ms_mp_is_map(extra.ptr[0]) ||
      ms_msgpack_check(extra.ptr, extra.len))
    goto out;
  ms_hub_enter(h);
  h->last_now = now;
  if (seq != s->seq + 1) {
    /* Records were lost to this hub (it was cut off from the cluster
     * longer than the cluster keeps them): history restarts here and
     * subscribers get a gap marker for what they missed. */
    for (hub_sub *sub = s->subs; sub; sub = sub->s_next)
      if (sub->live) {
        sub->live = 0;
        sub->cursor = s->seq + 1;
      }
    ring_clear(h, s);
    s->seq = seq - 1;
    for (hub_sub *sub = s->subs; sub; sub = sub->s_next)
      if (!sub->live && !backed_up(h, sub)) {
        long budget = STEP_RECORDS;
        if (catch_up(h, sub, now, &budget)) {
          sub->hc->subs_more = 1;
          ms_hub_update_live(h, sub->hc);
        }
      }
  }
  rec *r = keep(h, s, ts, level, kind, svc->via.str.ptr, svc->via.str.size,
                sid == STREAM_LOGS ? a[3].via.str.ptr : NULL,
                sid == STREAM_LOGS ? a[3].via.str.size : 0, NULL, &extra);
  if (r) {
    r->hidden = (uint8_t)(hidden != 0);
    if (sid == STREAM_LOGS)
      kept_log(h, r);
    else
      fan_out(h, STREAM_PRESENCE, r);
  }
  ms_hub_leave(h);
  rv = r ? 0 : MS_ERR_NOMEM;
out:
  msgpack_zone_destroy(&z);
  return rv;
}

int ms_hub_cluster_record(ms_hub *h, int stream_id, uint64_t seq,
                          const uint8_t *buf, size_t len, int64_t now) {
  return record_in(h, stream_id, seq, buf, len, now, 0);
}

int ms_hub_cluster_record_shown(ms_hub *h, int stream_id, uint64_t seq,
                                const uint8_t *buf, size_t len,
                                int64_t now) {
  return record_in(h, stream_id, seq, buf, len, now, 1);
}

void ms_hub_cluster_streams(ms_hub *h, int up, int64_t now) {
  MS_UNUSED(now);
  if (h->clustered && !ms_life_dead(&h->life))
    h->cl_local = !up;
}

void ms_hub_cluster_skip(ms_hub *h, int stream_id, uint64_t upto,
                         int64_t now) {
  MS_UNUSED(now);
  if (stream_id != MS_CLUSTER_LOGS && stream_id != MS_CLUSTER_PRESENCE)
    return;
  stream *s = &h->streams->s[stream_id == MS_CLUSTER_LOGS ? STREAM_LOGS
                                                           : STREAM_PRESENCE];
  if (upto <= s->seq || upto > MS_MAX_ID || ms_life_dead(&h->life))
    return;
  /* Subscribers that had everything still have everything. */
  for (hub_sub *sub = s->subs; sub; sub = sub->s_next)
    if (sub->cursor == s->seq + 1)
      sub->cursor = upto + 1;
  s->seq = upto;
}

void ms_hub_cluster_missed(ms_hub *h, int stream_id, uint64_t n,
                           int64_t now) {
  if (n == 0 || ms_life_dead(&h->life) ||
      (stream_id != MS_CLUSTER_LOGS && stream_id != MS_CLUSTER_PRESENCE))
    return;
  stream *s = &h->streams->s[stream_id == MS_CLUSTER_LOGS ? STREAM_LOGS
                                                           : STREAM_PRESENCE];
  ms_hub_enter(h);
  h->last_now = now;
  for (hub_sub *sub = s->subs; sub; sub = sub->s_next)
    if (sub->hc->state == HC_READY)
      send_marker(h, sub, s->seq, "gap", n, now);
  ms_hub_leave(h);
}

static void sub_error(ms_hub *h, ms_hub_conn *hc, uint64_t sub_id,
                      const char *what) {
  ms_hub_send_error(h, hc, sub_id, "BAD_REQUEST", what, NULL);
}

void ms_hub_on_subscribe(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                         int64_t now) {
  int sid;
  if (m->stream.len == 4 && memcmp(m->stream.ptr, "logs", 4) == 0)
    sid = STREAM_LOGS;
  else if (m->stream.len == 8 && memcmp(m->stream.ptr, "presence", 8) == 0)
    sid = STREAM_PRESENCE;
  else {
    sub_error(h, hc, m->id, "SUBSCRIBE: stream must be \"logs\" or \"presence\"");
    return;
  }
  if (!hc->sx) {
    hc->sx = ms_calloc(h->mem, 1, sizeof *hc->sx);
    if (!hc->sx) {
      ms_hub_send_error(h, hc, m->id, "INTERNAL_SERVER_ERROR",
                        "out of memory", NULL);
      return;
    }
    ms_u64map_init(&hc->sx->ids, h->mem);
  }
  if (m->id == UINT64_MAX || ms_u64map_get(&hc->sx->ids, m->id + 1)) {
    sub_error(h, hc, m->id, "SUBSCRIBE: sub_id already in use");
    return;
  }
  if (hc->sx->n >= h->cfg.max_subscriptions) {
    char msg[96];
    snprintf(msg, sizeof msg, "at most %zu subscriptions per connection",
             h->cfg.max_subscriptions);
    ms_hub_send_error(h, hc, m->id, "TOO_MANY_SUBSCRIPTIONS", msg, NULL);
    return;
  }
  /* Sizes first, from the message alone: nothing is allocated for a
   * filter that will be refused. */
  const msgpack_object *f = &m->extra;
  const msgpack_object *svcs = ms_map_get(f, "services");
  size_t bytes = sizeof(hub_sub);
  if (svcs && svcs->type != MSGPACK_OBJECT_NIL) {
    if (svcs->type != MSGPACK_OBJECT_ARRAY) {
      sub_error(h, hc, m->id, "filter.services must be an array of names");
      return;
    }
    if (svcs->via.array.size > MAX_FILTER_SERVICES) {
      sub_error(h, hc, m->id, "filter.services: at most 64 names");
      return;
    }
    for (uint32_t i = 0; i < svcs->via.array.size; i++) {
      const msgpack_object *o = &svcs->via.array.ptr[i];
      if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > MS_MAX_NAME) {
        sub_error(h, hc, m->id,
                  "filter.services must be an array of names (at most 128 "
                  "bytes each)");
        return;
      }
      bytes += o->via.str.size + 1 + sizeof(char *);
    }
  }
  ms_str contains;
  int rv = ms_map_get_str(f, "contains", &contains);
  if (rv != 0 && rv != MS_ERR_BAD_MESSAGE)
    contains.ptr = NULL, contains.len = 0;
  if (rv == MS_ERR_BAD_MESSAGE) {
    sub_error(h, hc, m->id, "filter.contains must be a string");
    return;
  }
  if (rv == 0 && contains.len > MAX_FILTER_CONTAINS) {
    sub_error(h, hc, m->id, "filter.contains: at most 1024 bytes");
    return;
  }
  if (rv == 0)
    bytes += contains.len + 1;
  if (hc->sx->bytes + bytes > h->cfg.max_filter_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg,
             "filters of one connection hold at most %zu bytes",
             h->cfg.max_filter_bytes);
    ms_hub_send_error(h, hc, m->id, "TOO_MANY_SUBSCRIPTIONS", msg, NULL);
    return;
  }
  hub_sub *sub = ms_calloc(h->mem, 1, sizeof *sub);
  if (!sub) {
    ms_hub_send_error(h, hc, m->id, "INTERNAL_SERVER_ERROR", "out of memory",
                      NULL);
    return;
  }
  sub->hc = hc;
  sub->sub_id = m->id;
  sub->stream = sid;
  sub->bytes = bytes;
  const char *bad = NULL;
  int nomem = 0;
  if (svcs && svcs->type == MSGPACK_OBJECT_ARRAY) {
    sub->services = ms_calloc(h->mem, svcs->via.array.size + 1,
                              sizeof(char *));
    nomem = !sub->services;
    for (uint32_t i = 0; sub->services && i < svcs->via.array.size; i++) {
      const msgpack_object *o = &svcs->via.array.ptr[i];
      sub->services[sub->n_services] =
          ms_strndup(h->mem, o->via.str.ptr, o->via.str.size);
      if (!sub->services[sub->n_services]) {
        nomem = 1;
        break;
      }
      sub->n_services++;
    }
  }
  int64_t min_level = 0;
  rv = ms_map_get_i64(f, "min_level", &min_level);
  if (rv == MS_ERR_BAD_MESSAGE)
    bad = "filter.min_level must be an integer";
  sub->min_level = min_level;
  if (contains.ptr && contains.len && !nomem) {
    sub->contains = ms_strndup(h->mem, contains.ptr, contains.len);
    nomem = !sub->contains;
    sub->contains_len = sub->contains ? contains.len : 0;
  }
  uint64_t history = 0, since = 0;
  int has_since = 0;
  rv = ms_map_get_u64(f, "history", &history);
  if (rv == MS_ERR_BAD_MESSAGE)
    bad = "filter.history must be a non-negative integer";
  rv = ms_map_get_u64(f, "since_seq", &since);
  if (rv == MS_ERR_BAD_MESSAGE)
    bad = "filter.since_seq must be a non-negative integer";
  has_since = rv == 0;
  stream *s = &h->streams->s[sid];
  if (!bad && !nomem && index_add(h, s, sub))
    nomem = 1;
  if (!bad && !nomem && ms_u64map_put(&hc->sx->ids, m->id + 1, sub)) {
    index_remove(h, s, sub);
    nomem = 1;
  }
  if (bad || nomem) {
    sub_free(h, sub);
    if (nomem)
      ms_hub_send_error(h, hc, m->id, "INTERNAL_SERVER_ERROR",
                        "out of memory", NULL);
    else
      sub_error(h, hc, m->id, bad);
    return;
  }
  /* Where the replay starts; catch_up() sends it under backpressure and
   * a bounded amount per call, then the live marker, then live
   * records. */
  if (has_since) {
    sub->cursor = since < s->seq ? since + 1 : s->seq + 1;
  } else if (history > 0 && ms_ring_len(&s->ring) > 0) {
    /* The last N matching: catch_up() walks back to find the start. */
    sub->cursor = s->seq + 1;
    sub->walk_left = history;
    sub->walk_seq = s->seq;
  } else {
    sub->cursor = s->seq + 1;
  }
  sub->replaying = 1;
  sub->conn_next = hc->subs;
  hc->subs = sub;
  hc->sx->n++;
  hc->sx->bytes += sub->bytes;
  sub->s_next = s->subs;
  if (s->subs)
    s->subs->s_prev = sub;
  s->subs = sub;
  long budget = STEP_RECORDS;
  if (catch_up(h, sub, now, &budget))
    hc->subs_more = 1;
}

/* Out of the stream's list, the connection's map and counters (not out
 * of the connection's own list: the callers walk it). */
static void sub_unlink(ms_hub *h, hub_sub *sub) {
  stream *s = &h->streams->s[sub->stream];
  index_remove(h, s, sub);
  if (sub->s_prev)
    sub->s_prev->s_next = sub->s_next;
  else
    s->subs = sub->s_next;
  if (sub->s_next)
    sub->s_next->s_prev = sub->s_prev;
  ms_hub_conn *hc = sub->hc;
  ms_u64map_del(&hc->sx->ids, sub->sub_id + 1);
  hc->sx->n--;
  hc->sx->bytes -= sub->bytes;
}

void ms_hub_on_unsubscribe(ms_hub *h, ms_hub_conn *hc, const ms_msg *m) {
  if (m->id == UINT64_MAX || !hc->sx || !ms_u64map_get(&hc->sx->ids, m->id + 1))
    return;
  hub_sub **pp = &hc->subs;
  while (*pp) {
    hub_sub *sub = *pp;
    if (sub->sub_id == m->id) {
      *pp = sub->conn_next;
      sub_unlink(h, sub);
      sub_free(h, sub);
      return;
    }
    pp = &sub->conn_next;
  }
}

void ms_hub_drop_subs(ms_hub *h, ms_hub_conn *hc) {
  while (hc->subs) {
    hub_sub *sub = hc->subs;
    hc->subs = sub->conn_next;
    sub_unlink(h, sub);
    sub_free(h, sub);
  }
}
