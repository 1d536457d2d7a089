/* A scripted hub for client tests: a server-role ms_conn the test drives
 * by hand, with messages built by the codec's encoders, and a fake clock.
 * No hub engine and no sockets: the test decides every byte the client
 * gets and sees every message the client sends. */
#ifndef FAKEHUB_H
#define FAKEHUB_H

#include <microstream/microstream.h>

#include <stdlib.h>
#include <string.h>

#define FH_MAX_SEEN 512

typedef struct fh_seen {
  int type;
  uint64_t id;
  char text[64]; /* event (REQUEST), message (LOG), stream (SUBSCRIBE) */
  int64_t late_ms; /* REQUEST opts */
  int has_min_level, has_contains, n_services; /* SUBSCRIBE filter */
} fh_seen;

typedef struct fakehub {
  ms_conn *srv;
  ms_client *c;
  int64_t now;
  int open;
  int closed;
  fh_seen seen[FH_MAX_SEEN];
  int n_seen;
  uint8_t last_log[1024]; /* the bytes of the last LOG the client sent */
  size_t last_log_len;
  msgpack_sbuffer sb;
  msgpack_packer pk;
} fakehub;

static inline void fh_on_message(ms_conn *conn, const ms_conn_message_arg *a,
                                 void *ud) {
  fakehub *f = ud;
  (void)conn;
  msgpack_zone z;
  if (!msgpack_zone_init(&z, 1024))
    return;
  ms_msg m;
  if (ms_msg_decode(&m, &z, a->data, a->len, MS_DIR_TO_HUB, NULL) == 0 &&
      f->n_seen < FH_MAX_SEEN) {
    fh_seen *s = &f->seen[f->n_seen++];
    memset(s, 0, sizeof *s);
    if (m.type == MS_MSG_LOG) {
      f->last_log_len = a->len < sizeof f->last_log ? a->len : 0;
      if (f->last_log_len)
        memcpy(f->last_log, a->data, a->len);
    }
    s->type = (int)m.type;
    s->id = m.id;
    ms_str t = m.type == MS_MSG_REQUEST   ? m.event
               : m.type == MS_MSG_LOG     ? m.message
               : m.type == MS_MSG_SUBSCRIBE ? m.stream
               : m.type == MS_MSG_HELLO   ? m.name
                                          : (ms_str){NULL, 0};
    if (t.ptr) {
      size_t n = t.len < sizeof s->text - 1 ? t.len : sizeof s->text - 1;
      memcpy(s->text, t.ptr, n);
      s->text[n] = '\0';
    }
    if (m.type == MS_MSG_REQUEST)
      ms_map_get_i64(&m.opts, "late_ms", &s->late_ms);
    if (m.type == MS_MSG_SUBSCRIBE) {
      s->has_min_level = ms_map_get(&m.extra, "min_level") != NULL;
      s->has_contains = ms_map_get(&m.extra, "contains") != NULL;
      const msgpack_object *sv = ms_map_get(&m.extra, "services");
      s->n_services = sv && sv->type == MSGPACK_OBJECT_ARRAY
                          ? (int)sv->via.array.size
                          : 0;
    }
  }
  msgpack_zone_destroy(&z);
}

static inline void fh_on_open(ms_conn *conn, const ms_conn_open_arg *a,
                              void *ud) {
  (void)conn, (void)a;
  ((fakehub *)ud)->open = 1;
}

static inline void fh_on_close(ms_conn *conn, const ms_conn_close_arg *a,
                               void *ud) {
  (void)conn, (void)a;
  ((fakehub *)ud)->closed = 1;
}

/* Move bytes both ways until nothing moves (bounded). */
static inline void fh_pump(fakehub *f) {
  for (int round = 0; round < 1000 && f->srv && f->c; round++) {
    int moved = 0;
    size_t len = 0;
    const uint8_t *p = ms_client_peek(f->c, &len);
    if (p && len) {
      ms_conn_feed(f->srv, p, len, f->now);
      ms_client_consume(f->c, len);
      moved = 1;
    }
    p = ms_conn_peek(f->srv, &len);
    if (p && len) {
      /* Copy: the client may delete itself (and so nothing here may be
       * borrowed from it) from inside the feed. */
      uint8_t *copy = malloc(len);
      if (!copy)
        return;
      memcpy(copy, p, len);
      ms_conn_consume(f->srv, len);
      ms_client_feed(f->c, copy, len, f->now);
      free(copy);
      moved = 1;
    }
    if (!moved)
      return;
  }
}

/* A new stream to the client (which wants to connect now): the upgrade
 * completes, the HELLO arrives. Returns 0 when the stream is open. */
static inline int fh_accept(fakehub *f) {
  ms_conn_config cc;
  ms_conn_config_init(&cc, MS_CONN_SERVER);
  ms_conn_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.on_message = fh_on_message;
  cb.on_open = fh_on_open;
  cb.on_close = fh_on_close;
  f->open = f->closed = 0;
  if (ms_conn_new(&f->srv, &cc, &cb, f, NULL) != 0)
    return -1;
  ms_conn_start(f->srv, f->now);
  ms_client_connecting(f->c, f->now);
  int rv = ms_client_connected(f->c, f->now);
  if (rv != 0)
    return rv;
  fh_pump(f);
  return f->open ? 0 : -1;
}

static inline void fh_init(fakehub *f, ms_client *c, int64_t now) {
  memset(f, 0, sizeof *f);
  f->c = c;
  f->now = now;
  msgpack_sbuffer_init(&f->sb);
  msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
}

/* The hub's side of the stream ends (the client sees end of stream). */
static inline void fh_drop(fakehub *f) {
  if (f->c)
    ms_client_disconnected(f->c, f->now);
  ms_conn_del(f->srv);
  f->srv = NULL;
}

static inline void fh_free(fakehub *f) {
  ms_conn_del(f->srv);
  f->srv = NULL;
  msgpack_sbuffer_destroy(&f->sb);
}

static inline msgpack_packer *fh_pk(fakehub *f) {
  f->sb.size = 0;
  return &f->pk;
}

/* Send what fh_pk() was given to the client, and deliver it. */
static inline void fh_send(fakehub *f) {
  ms_conn_send(f->srv, 1, (const uint8_t *)f->sb.data, f->sb.size);
  fh_pump(f);
}

static inline void fh_welcome(fakehub *f) {
  ms_enc_welcome(fh_pk(f), (ms_str){"hub-test", 8}, NULL);
  fh_send(f);
}

static inline void fh_respond_str(fakehub *f, uint64_t id, const char *s) {
  msgpack_packer *pk = fh_pk(f);
  uint8_t data[64];
  msgpack_sbuffer d;
  msgpack_sbuffer_init(&d);
  msgpack_packer dp;
  msgpack_packer_init(&dp, &d, msgpack_sbuffer_write);
  msgpack_pack_str_with_body(&dp, s, strlen(s));
  size_t n = d.size < sizeof data ? d.size : sizeof data;
  if (n)
    memcpy(data, d.data, n);
  msgpack_sbuffer_destroy(&d);
  ms_enc_response_raw(pk, id, data, n);
  fh_send(f);
}

static inline void fh_error(fakehub *f, uint64_t id, const char *code) {
  ms_enc_error(fh_pk(f), id, (ms_str){code, strlen(code)},
               (ms_str){"from the test hub", 17}, NULL);
  fh_send(f);
}

/* Advance the fake clock and tick the client, then deliver its output. */
static inline void fh_advance(fakehub *f, int64_t ms) {
  f->now += ms;
  if (f->c)
    ms_client_tick(f->c, f->now);
  fh_pump(f);
}

/* The last message of `type` the client sent, or NULL. */
static inline const fh_seen *fh_last(const fakehub *f, int type) {
  for (int i = f->n_seen - 1; i >= 0; i--)
    if (f->seen[i].type == type)
      return &f->seen[i];
  return NULL;
}

static inline int fh_count(const fakehub *f, int type) {
  int n = 0;
  for (int i = 0; i < f->n_seen; i++)
    n += f->seen[i].type == type;
  return n;
}

#endif
