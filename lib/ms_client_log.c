/* Client logs (local sink, bounded shipping ring) and subscriptions to
 * the hub's streams (see ms_log.h). */
#include "ms_client_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE (64 * 1024)
#define MAX_FIELDS (256 * 1024)
#define RING_MAX_BYTES (8u << 20)
#define SUB_ID_BASE (UINT64_C(1) << 52) /* kept apart from request ids */

typedef struct qrec {
  int64_t ts_us;
  int64_t level;
  size_t message_len, fields_len;
  char data[]; /* message, then fields (MessagePack map) */
} qrec;

typedef struct csub {
  uint64_t sub_id;
  int presence;
  char **services;
  size_t n_services;
  int64_t min_level;
  char *contains;
  uint64_t history;
  ms_record_fn fn;
  void *ud;
  uint64_t last_seq;
  char hub_id[129]; /* hub whose numbering last_seq belongs to */
  struct csub *next;
} csub;

struct ms_client_logs {
  int level;
  ms_log_sink_fn sink;
  void *sink_ud;
  int64_t (*wall)(void *);
  void *wall_ud;
  /* ring of records waiting to be shipped */
  qrec **ring;
  size_t cap, head, n, bytes, max_records;
  uint64_t dropped_total;
  uint64_t dropped_unreported;
  csub *subs;
  uint64_t next_sub;
  int in_diag;
};

static ms_client_logs *logs_of(ms_client *c) {
  if (c->logs)
    return c->logs;
  ms_client_logs *l = ms_calloc(c->mem, 1, sizeof *l);
  if (!l)
    return NULL;
  l->level = MS_LEVEL_INFO;
  l->sink = ms_log_stderr_sink;
  l->max_records = 1000;
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
  ms_client_logs *l = logs_of(c);
  if (l)
    l->level = level;
}

int ms_log_get_level(const ms_client *c) {
  return c->logs ? c->logs->level : MS_LEVEL_INFO;
}

void ms_log_set_sink(ms_client *c, ms_log_sink_fn fn, void *ud) {
  ms_client_logs *l = logs_of(c);
  if (l) {
    l->sink = fn;
    l->sink_ud = ud;
  }
}

void ms_log_set_queue(ms_client *c, size_t max_records) {
  ms_client_logs *l = logs_of(c);
  if (l)
    l->max_records = max_records ? max_records : 1;
}

void ms_log_set_clock(ms_client *c, int64_t (*wall)(void *), void *ud) {
  ms_client_logs *l = logs_of(c);
  if (l) {
    l->wall = wall;
    l->wall_ud = ud;
  }
}

size_t ms_log_queued(const ms_client *c) { return c->logs ? c->logs->n : 0; }
uint64_t ms_log_dropped(const ms_client *c) {
  return c->logs ? c->logs->dropped_total : 0;
}

/* ---- stderr sink ---- */

static void print_fields(FILE *f, const msgpack_object *fields) {
  if (!fields || fields->type != MSGPACK_OBJECT_MAP)
    return;
  msgpack_sbuffer js;
  msgpack_sbuffer_init(&js);
  for (uint32_t i = 0; i < fields->via.map.size; i++) {
    const msgpack_object_kv *kv = &fields->via.map.ptr[i];
    if (kv->key.type == MSGPACK_OBJECT_STR)
      fprintf(f, " %.*s=", (int)kv->key.via.str.size, kv->key.via.str.ptr);
    else
      fputs(" ?=", f);
    if (kv->val.type == MSGPACK_OBJECT_STR) {
      fprintf(f, "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
    } else {
      js.size = 0;
      if (ms_msgpack_to_json(&kv->val, &js) == 0)
        fwrite(js.data, 1, js.size, f);
    }
  }
  msgpack_sbuffer_destroy(&js);
}

void ms_log_stderr_sink(ms_client *c, int64_t ts_us, int level,
                        const char *message, const msgpack_object *fields,
                        void *ud) {
  (void)ud;
  static int color = -1;
  if (color < 0)
    color = isatty(2) && !getenv("NO_COLOR");
  if (ts_us == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
  }
  time_t secs = (time_t)(ts_us / 1000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char tbuf[32];
  strftime(tbuf, sizeof tbuf, "%H:%M:%S", &tm);
  const char *col = "";
  if (color) {
    col = level >= MS_LEVEL_ERROR ? "\033[31m"
          : level >= MS_LEVEL_WARN ? "\033[33m"
          : level >= MS_LEVEL_INFO ? "\033[32m"
                                   : "\033[90m";
  }
  flockfile(stderr);
  fprintf(stderr, "%s.%03d %s%-5s%s %s: %s", tbuf,
          (int)((ts_us / 1000) % 1000), col, ms_log_level_name(level),
          color ? "\033[0m" : "", ms_client_service(c), message);
  print_fields(stderr, fields);
  fputc('\n', stderr);
  funlockfile(stderr);
}

/* ---- shipping ---- */

static void qrec_free(ms_client *c, qrec *q) { ms_free(c->mem, q); }

static int ring_push(ms_client *c, ms_client_logs *l, qrec *q) {
  if (l->n == l->cap && l->cap < l->max_records) {
    size_t ncap = l->cap ? l->cap * 2 : 16;
    if (ncap > l->max_records)
      ncap = l->max_records;
    qrec **nr = ms_calloc(c->mem, ncap, sizeof *nr);
    if (!nr)
      return MS_ERR_NOMEM;
    for (size_t i = 0; i < l->n; i++)
      nr[i] = l->ring[(l->head + i) % l->cap];
    ms_free(c->mem, l->ring);
    l->ring = nr;
    l->cap = ncap;
    l->head = 0;
  }
  size_t sz = q->message_len + q->fields_len;
  /* Oldest out when full (by count or by bytes): counted, reported. */
  while (l->n > 0 && (l->n >= l->max_records || l->bytes + sz > RING_MAX_BYTES)) {
    qrec *old = l->ring[l->head];
    l->ring[l->head] = NULL;
    l->head = (l->head + 1) % l->cap;
    l->n--;
    l->bytes -= old->message_len + old->fields_len;
    qrec_free(c, old);
    l->dropped_total++;
    l->dropped_unreported++;
  }
  if (l->cap == 0) {
    l->dropped_total++;
    l->dropped_unreported++;
    return MS_ERR_LIMIT;
  }
  l->ring[(l->head + l->n) % l->cap] = q;
  l->n++;
  l->bytes += sz;
  return 0;
}

static int can_ship(const ms_client *c) {
  return c->state == MS_CLIENT_READY && c->conn && !c->conn_dead &&
         !ms_client_out_backed_up(c);
}

/* Encode LOG [7, ts, level, message, fields (+_dropped)] and send it. */
static int ship(ms_client *c, ms_client_logs *l, int64_t ts, int64_t level,
                const char *msg, size_t msg_len, const uint8_t *fields,
                size_t fields_len) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 5);
  msgpack_pack_uint8(&pk, MS_MSG_LOG);
  msgpack_pack_int64(&pk, ts);
  msgpack_pack_int64(&pk, level);
  msgpack_pack_str_with_body(&pk, msg, msg_len);
  if (l->dropped_unreported) {
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object fo;
    fo.type = MSGPACK_OBJECT_NIL;
    size_t off = 0;
    if (fields_len)
      msgpack_unpack((const char *)fields, fields_len, &off, &z, &fo);
    uint32_t n = fo.type == MSGPACK_OBJECT_MAP ? fo.via.map.size : 0;
    msgpack_pack_map(&pk, n + 1);
    for (uint32_t i = 0; i < n; i++) {
      msgpack_pack_object(&pk, fo.via.map.ptr[i].key);
      msgpack_pack_object(&pk, fo.via.map.ptr[i].val);
    }
    msgpack_pack_str_with_body(&pk, "_dropped", 8);
    msgpack_pack_uint64(&pk, l->dropped_unreported);
    msgpack_zone_destroy(&z);
  } else if (fields_len) {
    msgpack_sbuffer_write(&sb, (const char *)fields, fields_len);
  } else {
    msgpack_pack_map(&pk, 0);
  }
  int rv = ms_client_send_mp(c, (const uint8_t *)sb.data, sb.size);
  if (rv == 0)
    l->dropped_unreported = 0;
  msgpack_sbuffer_destroy(&sb);
  return rv;
}

static void drain(ms_client *c, ms_client_logs *l) {
  while (l->n > 0 && can_ship(c)) {
    qrec *q = l->ring[l->head];
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
    l->ring[l->head] = NULL;
    l->head = (l->head + 1) % l->cap;
    l->n--;
    l->bytes -= q->message_len + q->fields_len;
    qrec_free(c, q);
  }
}

int ms_log_raw(ms_client *c, int level, const char *message, size_t msg_len,
               const uint8_t *fields, size_t fields_len) {
  ms_client_logs *l = logs_of(c);
  if (!l)
    return MS_ERR_NOMEM;
  if (level < l->level || level <= 0)
    return MS_ERR_LIMIT;
  if (fields_len) {
    /* fields must be exactly one map (fixmap, map16 or map32) */
    int is_map = (fields[0] & 0xf0) == 0x80 || fields[0] == 0xde ||
                 fields[0] == 0xdf;
    if (!is_map || ms_msgpack_check(fields, fields_len) != 0)
      return MS_ERR_INVALID_ARG;
  }
  if (msg_len > MAX_MESSAGE)
    msg_len = MAX_MESSAGE;
  if (fields_len > MAX_FIELDS)
    return MS_ERR_TOO_BIG;
  int64_t ts = l->wall ? l->wall(l->wall_ud) : 0;
  if (l->sink) {
    char *m = ms_strndup(c->mem, message, msg_len);
    msgpack_zone z;
    msgpack_zone_init(&z, 512);
    msgpack_object fo;
    fo.type = MSGPACK_OBJECT_MAP;
    fo.via.map.size = 0;
    fo.via.map.ptr = NULL;
    size_t off = 0;
    if (fields_len)
      msgpack_unpack((const char *)fields, fields_len, &off, &z, &fo);
    if (m)
      l->sink(c, ts, level, m, &fo, l->sink_ud);
    msgpack_zone_destroy(&z);
    ms_free(c->mem, m);
  }
  if (l->n == 0 && can_ship(c)) {
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
  if (ring_push(c, l, q) != 0)
    qrec_free(c, q);
  drain(c, l);
  return 0;
}

static int log_fields_v(ms_client *c, int level, const ms_log_field *f,
                        size_t n, const char *fmt, va_list ap) {
  ms_client_logs *l = logs_of(c);
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
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  if (n) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
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
  int rv = ms_log_raw(c, level, msg, (size_t)len, (const uint8_t *)sb.data,
                      sb.size);
  msgpack_sbuffer_destroy(&sb);
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
  ms_client_logs *l = logs_of(c);
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

/* ---- subscriptions ---- */

static void send_subscribe(ms_client *c, csub *s) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  int resume = s->last_seq > 0 && strcmp(s->hub_id, c->hub_id) == 0;
  size_t n = (s->n_services > 0) + (s->min_level > 0) + (s->contains != NULL) +
             (resume || s->history > 0);
  msgpack_pack_array(&pk, 4);
  msgpack_pack_uint8(&pk, MS_MSG_SUBSCRIBE);
  msgpack_pack_uint64(&pk, s->sub_id);
  const char *stream = s->presence ? "presence" : "logs";
  msgpack_pack_str_with_body(&pk, stream, strlen(stream));
  msgpack_pack_map(&pk, n);
  if (s->n_services) {
    msgpack_pack_str_with_body(&pk, "services", 8);
    msgpack_pack_array(&pk, s->n_services);
    for (size_t i = 0; i < s->n_services; i++)
      msgpack_pack_str_with_body(&pk, s->services[i], strlen(s->services[i]));
  }
  if (s->min_level > 0) {
    msgpack_pack_str_with_body(&pk, "min_level", 9);
    msgpack_pack_int64(&pk, s->min_level);
  }
  if (s->contains) {
    msgpack_pack_str_with_body(&pk, "contains", 8);
    msgpack_pack_str_with_body(&pk, s->contains, strlen(s->contains));
  }
  if (resume) {
    msgpack_pack_str_with_body(&pk, "since_seq", 9);
    msgpack_pack_uint64(&pk, s->last_seq);
  } else if (s->history > 0) {
    msgpack_pack_str_with_body(&pk, "history", 7);
    msgpack_pack_uint64(&pk, s->history);
  }
  if (!resume) {
    s->last_seq = 0;
    snprintf(s->hub_id, sizeof s->hub_id, "%s", c->hub_id);
  }
  ms_client_send_mp(c, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void csub_free(ms_client *c, csub *s) {
  for (size_t i = 0; i < s->n_services; i++)
    ms_free(c->mem, s->services[i]);
  ms_free(c->mem, s->services);
  ms_free(c->mem, s->contains);
  ms_free(c->mem, s);
}

int ms_client_subscribe(ms_client *c, const char *stream,
                        const ms_subscribe_opts *o, ms_record_fn fn, void *ud,
                        uint64_t *sub_id) {
  if (!c || !stream || !fn)
    return MS_ERR_INVALID_ARG;
  int presence;
  if (!strcmp(stream, "logs"))
    presence = 0;
  else if (!strcmp(stream, "presence"))
    presence = 1;
  else
    return MS_ERR_INVALID_ARG;
  ms_client_logs *l = logs_of(c);
  csub *s = l ? ms_calloc(c->mem, 1, sizeof *s) : NULL;
  if (!s)
    return MS_ERR_NOMEM;
  s->presence = presence;
  s->fn = fn;
  s->ud = ud;
  if (o) {
    s->min_level = o->min_level;
    s->history = o->history;
    if (o->contains && *o->contains) {
      s->contains = ms_strndup(c->mem, o->contains, strlen(o->contains));
      if (!s->contains) {
        csub_free(c, s);
        return MS_ERR_NOMEM;
      }
    }
    if (o->n_services) {
      s->services = ms_calloc(c->mem, o->n_services, sizeof(char *));
      if (!s->services) {
        csub_free(c, s);
        return MS_ERR_NOMEM;
      }
      for (size_t i = 0; i < o->n_services; i++) {
        s->services[i] = ms_strndup(c->mem, o->services[i],
                                    strlen(o->services[i]));
        if (!s->services[i]) {
          csub_free(c, s);
          return MS_ERR_NOMEM;
        }
        s->n_services++;
      }
    }
  }
  s->sub_id = l->next_sub++;
  s->next = l->subs;
  l->subs = s;
  if (c->state == MS_CLIENT_READY)
    send_subscribe(c, s);
  if (sub_id)
    *sub_id = s->sub_id;
  return 0;
}

int ms_client_unsubscribe(ms_client *c, uint64_t sub_id) {
  ms_client_logs *l = c->logs;
  if (!l)
    return MS_ERR_NOT_FOUND;
  for (csub **pp = &l->subs; *pp; pp = &(*pp)->next) {
    csub *s = *pp;
    if (s->sub_id != sub_id)
      continue;
    *pp = s->next;
    if (c->state == MS_CLIENT_READY) {
      msgpack_sbuffer sb;
      msgpack_sbuffer_init(&sb);
      msgpack_packer pk;
      msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
      ms_enc_unsubscribe(&pk, sub_id);
      ms_client_send_mp(c, (const uint8_t *)sb.data, sb.size);
      msgpack_sbuffer_destroy(&sb);
    }
    csub_free(c, s);
    return 0;
  }
  return MS_ERR_NOT_FOUND;
}

int ms_client_logs_on_msg(ms_client *c, const ms_msg *m) {
  ms_client_logs *l = c->logs;
  if (!l || m->id < SUB_ID_BASE)
    return 0;
  csub *s = l->subs;
  while (s && s->sub_id != m->id)
    s = s->next;
  if (!s)
    return m->type == MS_MSG_RECORD || m->type == MS_MSG_PRESENCE;
  if (m->type == MS_MSG_ERROR) {
    char what[200];
    snprintf(what, sizeof what, "%.*s: %.*s", (int)m->code.len, m->code.ptr,
             (int)m->message.len, m->message.ptr ? m->message.ptr : "");
    uint64_t id = s->sub_id;
    ms_client_unsubscribe(c, id);
    ms_client_diag(c, MS_LEVEL_ERROR, "subscription refused by the hub: %s",
                   what);
    return 1;
  }
  ms_record r;
  memset(&r, 0, sizeof r);
  r.sub_id = m->id;
  r.seq = m->seq;
  r.ts_us = m->ts_us;
  r.level = m->level;
  r.service = m->name;
  r.message = m->message;
  r.fields = &m->extra;
  r.hub_id = c->hub_id;
  if (m->type == MS_MSG_PRESENCE) {
    r.kind = m->kind.len == 2 && !memcmp(m->kind.ptr, "up", 2) ? MS_RECORD_UP
                                                                : MS_RECORD_DOWN;
    if (m->seq > s->last_seq)
      s->last_seq = m->seq;
  } else if (m->level == 0) {
    int live = m->message.len == 4 && !memcmp(m->message.ptr, "live", 4);
    r.kind = live ? MS_RECORD_LIVE : MS_RECORD_GAP;
    if (!live)
      ms_map_get_u64(&m->extra, "missed", &r.missed);
    if (m->seq > s->last_seq)
      s->last_seq = m->seq;
  } else {
    r.kind = MS_RECORD_LOG;
    if (m->seq <= s->last_seq && strcmp(s->hub_id, c->hub_id) == 0)
      return 1; /* already delivered before a reconnect */
    s->last_seq = m->seq;
  }
  snprintf(s->hub_id, sizeof s->hub_id, "%s", c->hub_id);
  s->fn(c, &r, s->ud);
  return 1;
}

void ms_client_logs_ready(ms_client *c, int64_t now) {
  (void)now;
  ms_client_logs *l = c->logs;
  if (!l)
    return;
  for (csub *s = l->subs; s; s = s->next)
    send_subscribe(c, s);
  drain(c, l);
}

void ms_client_logs_drain(ms_client *c) {
  if (c->logs && c->logs->n)
    drain(c, c->logs);
}

void ms_client_logs_lost(ms_client *c) { (void)c; }

void ms_client_logs_free(ms_client *c) {
  ms_client_logs *l = c->logs;
  if (!l)
    return;
  for (size_t i = 0; i < l->n; i++)
    qrec_free(c, l->ring[(l->head + i) % l->cap]);
  ms_free(c->mem, l->ring);
  while (l->subs) {
    csub *s = l->subs;
    l->subs = s->next;
    csub_free(c, s);
  }
  ms_free(c->mem, l);
  c->logs = NULL;
}
