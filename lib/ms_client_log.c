/* Client logs: level, local sink and the bounded shipping ring (see
 * ms_log.h). Subscriptions live in ms_client_sub.c; the stderr sink is the
 * POSIX transport's (ms_posix.h), installed by the drivers. */
#include "ms_client_log_int.h"

#include <stdio.h>

#define MAX_MESSAGE (64 * 1024)
#define MAX_FIELDS (256 * 1024)
#define RING_MAX_BYTES (8u << 20)

static size_t qrec_size(const void *p);
static void qrec_dropped(void *p, void *ud);

ms_client_logs *ms_client_logs_of(ms_client *c) {
  if (ms_life_dead(&c->life))
    return NULL; /* deleted from a callback still running */
  if (c->logs)
    return c->logs;
  ms_client_logs *l = ms_calloc(c->mem, 1, sizeof *l);
  if (!l)
    return NULL;
  l->level = MS_LEVEL_INFO;
  l->sync_state = MS_ERR_STATE; /* no sync asked */
  l->sink = NULL; /* no output of our own: see ms_log_set_defaults */
  ms_ring_init(&l->ring, c->mem, 1000, RING_MAX_BYTES, MS_RING_DROP_OLDEST,
               qrec_size, qrec_dropped, c);
  l->next_sub = SUB_ID_BASE;
  c->logs = l;
  return l;
}

int ms_log_level_parse(const char *s) {
  if (!s)
    return -1;
  if (!strcmp(s, "debug")) return MS_LEVEL_DEBUG;
  if (!strcmp(s, "info")) return MS_LEVEL_INFO;
  if (!strcmp(s, "warn") || !strcmp(s, "warning")) return MS_LEVEL_WARN;
  if (!strcmp(s, "error")) return MS_LEVEL_ERROR;
  if (!strcmp(s, "silent")) return MS_LEVEL_SILENT;
  char *end;
  long v = strtol(s, &end, 10);
  if (*s && !*end && v > 0 && v <= MS_LEVEL_SILENT)
    return (int)v;
  return -1;
}

const char *ms_log_level_name(int level) {
  switch (level) {
  case MS_LEVEL_DEBUG: return "debug";
  case MS_LEVEL_INFO: return "info";
  case MS_LEVEL_WARN: return "warn";
  case MS_LEVEL_ERROR: return "error";
  default: return "level";
  }
}

void ms_log_set_level(ms_client *c, int level) {
  ms_client_logs *l = ms_client_logs_of(c);
  if (l)
    l->level = level;
}

int ms_log_get_level(const ms_client *c) {
  return c->logs ? c->logs->level : MS_LEVEL_INFO;
}

void ms_log_set_sink(ms_client *c, ms_log_sink_fn fn, void *ud) {
  ms_client_logs *l = ms_client_logs_of(c);
  if (l) {
    l->sink = fn;
    l->sink_ud = ud;
    l->sink_chosen = 1;
  }
}

void ms_log_set_queue(ms_client *c, size_t max_records) {
  ms_client_logs *l = ms_client_logs_of(c);
  if (l)
    ms_ring_set_max(&l->ring, max_records ? max_records : 1);
}

void ms_log_set_clock(ms_client *c, int64_t (*wall)(void *), void *ud) {
  ms_client_logs *l = ms_client_logs_of(c);
  if (l) {
    l->wall = wall;
    l->wall_ud = ud;
    l->clock_chosen = 1;
  }
}

void ms_log_set_defaults(ms_client *c, ms_log_sink_fn sink, void *sink_ud,
                         int64_t (*wall)(void *), void *clock_ud) {
  ms_client_logs *l = ms_client_logs_of(c);
  if (!l)
    return;
  if (!l->sink_chosen) {
    l->sink = sink;
    l->sink_ud = sink_ud;
  }
  if (!l->clock_chosen) {
    l->wall = wall;
    l->wall_ud = clock_ud;
  }
}

size_t ms_log_queued(const ms_client *c) {
  return c->logs ? ms_ring_len(&c->logs->ring) : 0;
}
uint64_t ms_log_dropped(const ms_client *c) {
  return c->logs ? c->logs->dropped_total : 0;
}

/* ---- shipping ---- */

static void qrec_free(ms_client *c, qrec *q) { ms_free(c->mem, q); }

static size_t qrec_size(const void *p) {
  const qrec *q = p;
  return q->message_len + q->fields_len;
}

/* The oldest record left a full queue (by count or by bytes): counted,
 * reported with the next record shipped. */
static void qrec_dropped(void *p, void *ud) {
  ms_client *c = ud;
  c->logs->dropped_total++;
  c->logs->dropped_unreported++;
  qrec_free(c, p);
}

/* Queue q; a record the queue cannot take (no memory for its slot) is
 * dropped and counted like the others. */
static void ring_push(ms_client *c, ms_client_logs *l, qrec *q) {
  if (ms_ring_push(&l->ring, q) != 0) {
    l->dropped_total++;
    l->dropped_unreported++;
    qrec_free(c, q);
  }
}

static int can_ship(const ms_client *c) {
  return c->state == MS_CLIENT_READY && c->conn && !c->conn_dead &&
         !ms_client_out_backed_up(c);
}

/* fields (one well-formed map, or none) with one more key, _dropped,
 * into fb: the map header is written again for one more entry and the
 * entries are copied as they are. 0, or nonzero when out of memory. */
static int fields_with_dropped(ms_mpbuf *fb, const uint8_t *fields,
                               size_t fields_len, uint64_t dropped) {
  size_t n = 0, head = 0;
  if (fields_len) {
    uint8_t b = fields[0];
    if ((b & 0xf0) == 0x80) {
      n = b & 0x0f;
      head = 1;
    } else if (b == 0xde && fields_len >= 3) {
      n = (size_t)fields[1] << 8 | fields[2];
      head = 3;
    } else if (b == 0xdf && fields_len >= 5) {
      n = (size_t)fields[1] << 24 | (size_t)fields[2] << 16 |
          (size_t)fields[3] << 8 | fields[4];
      head = 5;
    } else {
      return -1; /* not a map: not sent half */
    }
  }
  msgpack_packer pk;
  msgpack_packer_init(&pk, fb, ms_mpbuf_write);
  msgpack_pack_map(&pk, n + 1);
  if (fields_len > head) /* (no arithmetic on a NULL fields) */
    ms_mpbuf_write(fb, (const char *)fields + head, fields_len - head);
  msgpack_pack_str_with_body(&pk, "_dropped", 8);
  msgpack_pack_uint64(&pk, dropped);
  return fb->failed;
}

/* Encode LOG [7, ts, level, message, fields (+_dropped)] and send it. */
static int ship(ms_client *c, ms_client_logs *l, int64_t ts, int64_t level,
                const char *msg, size_t msg_len, const uint8_t *fields,
                size_t fields_len) {
  /* After drops, the fields carry their count: one more key. */
  ms_mpbuf fb;
  ms_mpbuf_init(&fb, c->mem);
  if (l->dropped_unreported) {
    if (fields_with_dropped(&fb, fields, fields_len, l->dropped_unreported))
      fb.failed = 1;
    fields = (const uint8_t *)fb.sb.data;
    fields_len = fb.sb.size;
  }
  ms_mpbuf sb;
  ms_mpbuf_init(&sb, c->mem);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, ms_mpbuf_write);
  int rv = MS_ERR_NOMEM;
  if (!fb.failed && ms_enc_log_raw(&pk, ts, level, (ms_str){msg, msg_len},
                                   fields, fields_len) == 0 &&
      !sb.failed)
    rv = ms_client_send_mp(c, (const uint8_t *)sb.sb.data, sb.sb.size);
  if (rv == 0) {
    l->dropped_unreported = 0;
    l->unconfirmed++;
  }
  ms_mpbuf_destroy(&sb);
  ms_mpbuf_destroy(&fb);
  return rv;
}

static void drain(ms_client *c, ms_client_logs *l) {
  while (ms_ring_len(&l->ring) > 0 && can_ship(c)) {
    qrec *q = ms_ring_at(&l->ring, 0);
    int rv = ship(c, l, q->ts_us, q->level, q->data, q->message_len,
                  (const uint8_t *)q->data + q->message_len, q->fields_len);
    if (rv == MS_ERR_STATE)
      break; /* not connected after all: try again later */
    if (rv != 0) {
      /* This record can never go (too large on the wire): drop it,
       * counted, rather than hold every later one behind it. */
      l->dropped_total++;
      l->dropped_unreported++;
    }
    ms_ring_pop(&l->ring);
    qrec_free(c, q);
  }
}

/* The local sink's view of fields given as bytes (checked: one map). Out
 * of memory the local line goes without its fields. */
static void sink_raw(ms_client *c, ms_client_logs *l, int64_t ts, int level,
                     const char *m, const uint8_t *fields,
                     size_t fields_len) {
  msgpack_object fo;
  fo.type = MSGPACK_OBJECT_MAP;
  fo.via.map.size = 0;
  fo.via.map.ptr = NULL;
  if (!fields_len) {
    l->sink(c, ts, level, m, &fo, l->sink_ud);
    return;
  }
  msgpack_zone z;
  int zok = msgpack_zone_init(&z, 512);
  size_t off = 0;
  if (zok && msgpack_unpack((const char *)fields, fields_len, &off, &z,
                            &fo) != MSGPACK_UNPACK_SUCCESS) {
    fo.type = MSGPACK_OBJECT_MAP;
    fo.via.map.size = 0;
    fo.via.map.ptr = NULL;
  }
  l->sink(c, ts, level, m, &fo, l->sink_ud);
  if (zok)
    msgpack_zone_destroy(&z);
}

/* One checked record: to the local sink (fields_obj when the caller has
 * the fields as an object too, else read from the bytes), then shipped or
 * queued. */
static int log_record(ms_client *c, ms_client_logs *l, int level,
                      const char *message, size_t msg_len,
                      const uint8_t *fields, size_t fields_len,
                      const msgpack_object *fields_obj) {
  int64_t ts = l->wall ? l->wall(l->wall_ud) : 0;
  if (l->sink) {
    char *m = ms_strndup(c->mem, message, msg_len);
    if (m && fields_obj)
      l->sink(c, ts, level, m, fields_obj, l->sink_ud);
    else if (m)
      sink_raw(c, l, ts, level, m, fields, fields_len);
    ms_free(c->mem, m);
  }
  if (ms_ring_len(&l->ring) == 0 && can_ship(c)) {
    int rv = ship(c, l, ts, level, message, msg_len, fields, fields_len);
    if (rv == 0)
      return 0;
    if (rv != MS_ERR_STATE) {
      l->dropped_total++;
      l->dropped_unreported++;
      return 0;
    }
  }
  qrec *q = ms_malloc(c->mem, sizeof *q + msg_len + fields_len);
  if (!q) {
    l->dropped_total++;
    l->dropped_unreported++;
    return 0;
  }
  q->ts_us = ts;
  q->level = level;
  q->message_len = msg_len;
  q->fields_len = fields_len;
  memcpy(q->data, message, msg_len);
  if (fields_len)
    memcpy(q->data + msg_len, fields, fields_len);
  ring_push(c, l, q);
  drain(c, l);
  return 0;
}

int ms_log_raw(ms_client *c, int level, const char *message, size_t msg_len,
               const uint8_t *fields, size_t fields_len) {
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  ms_client_logs *l = ms_client_logs_of(c);
  if (!l)
    return MS_ERR_NOMEM;
  if (level < l->level || level <= 0)
    return MS_ERR_LIMIT;
  if (fields_len) {
    /* fields must be exactly one map */
    if (!ms_mp_is_map(fields[0]) || ms_msgpack_check(fields, fields_len) != 0)
      return MS_ERR_INVALID_ARG;
  }
  if (msg_len > MAX_MESSAGE)
    msg_len = MAX_MESSAGE;
  if (fields_len > MAX_FIELDS)
    return MS_ERR_TOO_BIG;
  return log_record(c, l, level, message, msg_len, fields, fields_len, NULL);
}

/* The fields of ms_log_fields as the object the sink gets, with the
 * values msgpack_unpack() would give for their packed form: kv has room
 * for n entries. */
static void fields_obj(msgpack_object *o, msgpack_object_kv *kv,
                       const ms_log_field *f, size_t n) {
  o->type = MSGPACK_OBJECT_MAP;
  o->via.map.size = (uint32_t)n;
  o->via.map.ptr = kv;
  for (size_t i = 0; i < n; i++) {
    const char *k = f[i].key ? f[i].key : "";
    kv[i].key.type = MSGPACK_OBJECT_STR;
    kv[i].key.via.str.ptr = k;
    kv[i].key.via.str.size = (uint32_t)strlen(k);
    msgpack_object *v = &kv[i].val;
    switch (f[i].type) {
    case MS_FIELD_STR:
      if (f[i].s) {
        v->type = MSGPACK_OBJECT_STR;
        v->via.str.ptr = f[i].s;
        v->via.str.size = (uint32_t)strlen(f[i].s);
      } else {
        v->type = MSGPACK_OBJECT_NIL;
      }
      break;
    case MS_FIELD_INT:
      if (f[i].i >= 0) {
        v->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        v->via.u64 = (uint64_t)f[i].i;
      } else {
        v->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        v->via.i64 = f[i].i;
      }
      break;
    case MS_FIELD_DOUBLE:
      v->type = MSGPACK_OBJECT_FLOAT64;
      v->via.f64 = f[i].d;
      break;
    case MS_FIELD_BOOL:
      v->type = MSGPACK_OBJECT_BOOLEAN;
      v->via.boolean = f[i].i != 0;
      break;
    }
  }
}

static int log_fields_v(ms_client *c, int level, const ms_log_field *f,
                        size_t n, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));
static int log_fields_v(ms_client *c, int level, const ms_log_field *f,
                        size_t n, const char *fmt, va_list ap) {
  if (ms_life_dead(&c->life))
    return MS_ERR_STATE;
  ms_client_logs *l = ms_client_logs_of(c);
  if (!l)
    return MS_ERR_NOMEM;
  if (level < l->level || level <= 0)
    return MS_ERR_LIMIT;
  char small[512];
  va_list ap2;
  va_copy(ap2, ap);
  int len = vsnprintf(small, sizeof small, fmt, ap2);
  va_end(ap2);
  if (len < 0)
    return MS_ERR_INVALID_ARG;
  char *msg = small;
  if ((size_t)len >= sizeof small) {
    size_t want = (size_t)len > MAX_MESSAGE ? MAX_MESSAGE : (size_t)len;
    msg = ms_malloc(c->mem, want + 1);
    if (!msg)
      return MS_ERR_NOMEM;
    vsnprintf(msg, want + 1, fmt, ap);
    len = (int)want;
  }
  for (size_t i = 0; i < n; i++)
    if (f[i].type != MS_FIELD_STR && f[i].type != MS_FIELD_INT &&
        f[i].type != MS_FIELD_DOUBLE && f[i].type != MS_FIELD_BOOL) {
      if (msg != small)
        ms_free(c->mem, msg);
      return MS_ERR_INVALID_ARG; /* no value to pack */
    }
  ms_mpbuf sb;
  ms_mpbuf_init(&sb, c->mem);
  if (n) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, ms_mpbuf_write);
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < n; i++) {
      const char *k = f[i].key ? f[i].key : "";
      msgpack_pack_str_with_body(&pk, k, strlen(k));
      switch (f[i].type) {
      case MS_FIELD_STR:
        if (f[i].s)
          msgpack_pack_str_with_body(&pk, f[i].s, strlen(f[i].s));
        else
          msgpack_pack_nil(&pk);
        break;
      case MS_FIELD_INT: msgpack_pack_int64(&pk, f[i].i); break;
      case MS_FIELD_DOUBLE: msgpack_pack_double(&pk, f[i].d); break;
      case MS_FIELD_BOOL:
        if (f[i].i) msgpack_pack_true(&pk); else msgpack_pack_false(&pk);
        break;
      }
    }
  }
  int rv = sb.failed ? MS_ERR_NOMEM
           : sb.sb.size > MAX_FIELDS ? MS_ERR_TOO_BIG : 0;
  /* The sink gets the fields as an object built from f, not read back
   * from the bytes; out of memory for a long list, as an empty map. */
  msgpack_object fo, *fop = NULL;
  msgpack_object_kv kv_small[16], *kv = kv_small;
  if (!rv && l->sink) {
    if (n > sizeof kv_small / sizeof kv_small[0])
      kv = n <= SIZE_MAX / sizeof *kv ? ms_malloc(c->mem, n * sizeof *kv)
                                      : NULL;
    fields_obj(&fo, kv ? kv : kv_small, f, kv ? n : 0);
    fop = &fo;
  }
  if (!rv)
    rv = log_record(c, l, level, msg, (size_t)len,
                    (const uint8_t *)sb.sb.data, sb.sb.size, fop);
  if (kv && kv != kv_small)
    ms_free(c->mem, kv);
  ms_mpbuf_destroy(&sb);
  if (msg != small)
    ms_free(c->mem, msg);
  return rv;
}

int ms_logv(ms_client *c, int level, const char *fmt, va_list ap) {
  return log_fields_v(c, level, NULL, 0, fmt, ap);
}

int ms_log(ms_client *c, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rv = log_fields_v(c, level, NULL, 0, fmt, ap);
  va_end(ap);
  return rv;
}

int ms_log_fields(ms_client *c, int level, const ms_log_field *f, size_t n,
                  const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rv = log_fields_v(c, level, f, n, fmt, ap);
  va_end(ap);
  return rv;
}

void ms_client_diag(ms_client *c, int level, const char *fmt, ...) {
  ms_client_logs *l = ms_client_logs_of(c);
  if (!l || l->in_diag || level < l->level)
    return;
  l->in_diag = 1;
  va_list ap;
  va_start(ap, fmt);
  if (level < MS_LEVEL_WARN) {
    /* Routine diagnostics stay local: the hub's stream is for the
     * service's own records and for trouble. */
    if (l->sink) {
      char msg[512];
      vsnprintf(msg, sizeof msg, fmt, ap);
      msgpack_object fo;
      fo.type = MSGPACK_OBJECT_MAP;
      fo.via.map.size = 0;
      fo.via.map.ptr = NULL;
      l->sink(c, l->wall ? l->wall(l->wall_ud) : 0, level, msg, &fo,
              l->sink_ud);
    }
  } else {
    ms_log_field f = MS_FSTR("source", "microstream");
    log_fields_v(c, level, &f, 1, fmt, ap);
  }
  va_end(ap);
  l->in_diag = 0;
}

void ms_client_logs_ready(ms_client *c, int64_t now) {
  (void)now;
  ms_client_logs *l = c->logs;
  if (!l)
    return;
  ms_client_subs_ready(c, l);
  drain(c, l);
}

void ms_client_logs_drain(ms_client *c) {
  if (c->logs && ms_ring_len(&c->logs->ring))
    drain(c, c->logs);
}

/* The connection ended: what it carried unconfirmed may not have reached
 * the hub (counted), and a sync waiting on it fails. */
void ms_client_logs_lost(ms_client *c) {
  ms_client_logs *l = c->logs;
  if (!l)
    return;
  if (l->unconfirmed) {
    l->unconfirmed_lost += l->unconfirmed;
    if (l->sync_state == 0 || l->sync_state == 1)
      l->sync_state = MS_ERR_CLOSED;
  } else if (l->sync_state == 0) {
    l->sync_state = MS_ERR_CLOSED;
  }
  l->unconfirmed = 0;
  l->sync_no = 0;
}

int ms_log_sync(ms_client *c) {
  if (!c || ms_life_dead(&c->life))
    return MS_ERR_STATE;
  ms_client_logs *l = c->logs;
  if (!l)
    return 0; /* never logged: nothing to confirm */
  if (l->unconfirmed == 0) {
    l->sync_state = 1; /* nothing to confirm */
    l->sync_no = 0;
    return 0;
  }
  if (!can_ship(c))
    return MS_ERR_STATE;
  uint64_t n = ++l->next_sync;
  int rv = ms_client_send_ping(c, n);
  if (rv != 0)
    return rv;
  l->sync_no = n;
  l->sync_covers = l->unconfirmed;
  l->sync_state = 0;
  return 0;
}

int ms_log_sync_state(const ms_client *c) {
  if (!c)
    return MS_ERR_STATE;
  return c->logs ? c->logs->sync_state : 1; /* never logged: confirmed */
}

uint64_t ms_log_unconfirmed_lost(const ms_client *c) {
  return c && c->logs ? c->logs->unconfirmed_lost : 0;
}

uint64_t ms_log_unconfirmed(const ms_client *c) {
  return c && c->logs ? c->logs->unconfirmed : 0;
}

void ms_client_logs_pong(ms_client *c, uint64_t n) {
  ms_client_logs *l = c->logs;
  if (!l || !l->sync_no || n != l->sync_no)
    return;
  l->unconfirmed -= MS_MIN(l->unconfirmed, l->sync_covers);
  l->sync_no = 0;
  l->sync_state = 1;
}

void ms_client_logs_free(ms_client *c) {
  ms_client_logs *l = c->logs;
  if (!l)
    return;
  /* (What is still queued is not counted as dropped: the client goes.) */
  l->ring.drop = NULL;
  while (ms_ring_len(&l->ring))
    qrec_free(c, ms_ring_pop(&l->ring));
  ms_ring_free(&l->ring);
  ms_client_subs_free(c, l);
  ms_free(c->mem, l);
  c->logs = NULL;
}
