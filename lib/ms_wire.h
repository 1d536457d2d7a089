/* Sending and receiving protocol messages over an ms_conn in either
 * encoding. Both engines (client and hub) go through these two calls, so
 * the JSON edge lives in one place. */
#ifndef MS_WIRE_H
#define MS_WIRE_H

#include <microstream/ms_codec.h>
#include <microstream/ms_conn.h>

#include "ms_internal.h"

/* Send one MessagePack-encoded message, as a binary message or, for
 * MS_ENC_JSON, converted to a text message (scratch is reused). A message
 * larger than `limit` bytes on the wire (0: no limit beyond the
 * connection's own) is refused with MS_ERR_TOO_BIG: JSON grows, so the
 * check has to come after the conversion. */
struct ms_mpbuf;
int ms_wire_send(ms_conn *c, ms_encoding enc, const uint8_t *mp, size_t len,
                 struct ms_mpbuf *scratch, size_t limit);

/* Decode one received WebSocket message: checks the frame kind against
 * the encoding, converts JSON to MessagePack into scratch, decodes into
 * msg (borrowing from the message or scratch, and from zone). Returns 0
 * or MS_ERR_BAD_MESSAGE with err filled; MS_ERR_NOMEM. */
int ms_wire_decode(ms_encoding enc, const ms_conn_message_arg *arg,
                   struct ms_mpbuf *scratch, msgpack_zone *zone, ms_dir dir,
                   ms_msg *msg, ms_decode_error *err);

/*
 * A packing buffer for building messages, on the object's allocator (not
 * msgpack-c's sbuffer, which would take libc memory): the first failed
 * write (out of memory) makes every later write fail too, so a message is
 * known to be broken instead of going out truncated. Pack with
 * msgpack_packer_init(&pk, &b, ms_mpbuf_write); check b.failed before
 * using b.sb.data / b.sb.size. Never hand b.sb to msgpack_sbuffer_*.
 */
typedef struct ms_mpbuf {
  msgpack_sbuffer sb; /* data, size, alloc: memory from mem */
  int failed;
  const ms_allocator *mem;
} ms_mpbuf;

static inline void ms_mpbuf_init(ms_mpbuf *b, const ms_allocator *mem) {
  b->sb.data = NULL;
  b->sb.size = 0;
  b->sb.alloc = 0;
  b->failed = 0;
  b->mem = ms_mem_or_default(mem);
}
/* Empty it for the next message (keeps the memory). */
static inline void ms_mpbuf_reset(ms_mpbuf *b) {
  b->sb.size = 0;
  b->failed = 0;
}
static inline void ms_mpbuf_destroy(ms_mpbuf *b) {
  ms_free(b->mem, b->sb.data);
  b->sb.data = NULL;
  b->sb.size = 0;
  b->sb.alloc = 0;
}
int ms_mpbuf_write(void *data, const char *buf, size_t len);

/* The one encoder of each routed message type (ms_codec.c): the data as
 * bytes that came in (data, data_len) when given, else as an object
 * (data_obj), else nil; opts likewise, else an empty map. The public
 * ms_enc_request / ms_enc_request_raw etc. are these. 0, MS_ERR_NOMEM or
 * MS_ERR_INVALID_ARG. */
int ms_enc_request_any(msgpack_packer *pk, uint64_t id, ms_str name,
                       ms_str event, const uint8_t *data, size_t data_len,
                       const msgpack_object *data_obj, uint64_t timeout_ms,
                       const uint8_t *opts, size_t opts_len,
                       const msgpack_object *opts_obj);
int ms_enc_response_any(msgpack_packer *pk, uint64_t id, const uint8_t *data,
                        size_t data_len, const msgpack_object *data_obj);
int ms_enc_error_any(msgpack_packer *pk, uint64_t id, ms_str code,
                     ms_str message, const uint8_t *data, size_t data_len,
                     const msgpack_object *data_obj);

/* RECORD and PRESENCE (ms_codec.c): [type, sub_id] and the rest, as two
 * parts (a hub encodes the rest once per record); ms_enc_record and
 * ms_enc_presence are the two in a row. The map last (fields, detail) as
 * bytes when given, else as an object, else empty. */
int ms_enc_stream_head(msgpack_packer *pk, ms_msg_type type, uint64_t sub_id);
int ms_enc_record_rest(msgpack_packer *pk, uint64_t seq, int64_t ts_us,
                       int64_t level, ms_str service, ms_str message,
                       const uint8_t *fields, size_t fields_len,
                       const msgpack_object *fields_obj);
int ms_enc_presence_rest(msgpack_packer *pk, uint64_t seq, int64_t ts_us,
                         ms_str kind, ms_str service, const uint8_t *detail,
                         size_t detail_len,
                         const msgpack_object *detail_obj);

/* A small map of {string: value} built as a msgpack_object on the stack,
 * for an encoder that takes an object (opts, error data): no packing
 * and decoding again through a zone. Keys and strings are borrowed. */
#define MS_OBJMAP_MAX 8
typedef struct ms_objmap {
  msgpack_object obj;
  msgpack_object_kv kv[MS_OBJMAP_MAX];
} ms_objmap;

static inline void ms_objmap_init(ms_objmap *m) {
  m->obj.type = MSGPACK_OBJECT_MAP;
  m->obj.via.map.size = 0;
  m->obj.via.map.ptr = m->kv;
}
static inline msgpack_object *ms_objmap_add(ms_objmap *m, const char *key) {
  msgpack_object_kv *kv = &m->kv[m->obj.via.map.size++];
  kv->key.type = MSGPACK_OBJECT_STR;
  kv->key.via.str.ptr = key;
  kv->key.via.str.size = (uint32_t)strlen(key);
  return &kv->val;
}
static inline void ms_objmap_int(ms_objmap *m, const char *key, int64_t v) {
  msgpack_object *o = ms_objmap_add(m, key);
  if (v >= 0) {
    o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    o->via.u64 = (uint64_t)v;
  } else {
    o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
    o->via.i64 = v;
  }
}
static inline void ms_objmap_str(ms_objmap *m, const char *key,
                                 const char *s, size_t len) {
  msgpack_object *o = ms_objmap_add(m, key);
  o->type = MSGPACK_OBJECT_STR;
  o->via.str.ptr = s;
  o->via.str.size = (uint32_t)len;
}
static inline void ms_objmap_true(ms_objmap *m, const char *key) {
  msgpack_object *o = ms_objmap_add(m, key);
  o->type = MSGPACK_OBJECT_BOOLEAN;
  o->via.boolean = true;
}

/* Whether a MessagePack object starting with byte b is a map (fixmap,
 * map16 or map32). */
static inline int ms_mp_is_map(uint8_t b) {
  return (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
}

/* Service-name rule of PROTOCOL.md: 1..128 bytes of [A-Za-z0-9._:-]. */
int ms_valid_service_name(const char *s, size_t len);

#endif
