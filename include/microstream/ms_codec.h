/*
 * microstream: the protocol codec (PROTOCOL.md "Messages").
 *
 * MessagePack is the canonical form. The JSON encoding (microstream.json.v1)
 * is a transcoding at the edge: ms_json_to_msgpack() turns one JSON text
 * into the MessagePack bytes of the same array, ms_msgpack_to_json() the
 * other way, following PROTOCOL.md's JSON mapping.
 */
#ifndef MICROSTREAM_MS_CODEC_H
#define MICROSTREAM_MS_CODEC_H

#include <microstream/ms_common.h>
#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ms_msg_type {
  MS_MSG_HELLO = 1,
  MS_MSG_WELCOME = 2,
  MS_MSG_REQUEST = 3,
  MS_MSG_RESPONSE = 4,
  MS_MSG_ERROR = 5,
  MS_MSG_CANCEL = 6,
  MS_MSG_LOG = 7,
  MS_MSG_RECORD = 8,
  MS_MSG_SUBSCRIBE = 9,
  MS_MSG_UNSUBSCRIBE = 10,
  MS_MSG_PRESENCE = 11,
  MS_MSG_PING = 12,
  MS_MSG_PONG = 13
} ms_msg_type;

/* Largest id / integer that JSON carries exactly: 2^53 - 1. */
#define MS_MAX_ID UINT64_C(9007199254740991)

/* A borrowed string; ptr NULL means nil / absent. Not NUL-terminated. */
typedef struct ms_str {
  const char *ptr;
  size_t len;
} ms_str;

/* Borrowed encoded bytes; ptr NULL when not known. */
typedef struct ms_raw {
  const uint8_t *ptr;
  size_t len;
} ms_raw;

/*
 * One decoded message. Which fields are set depends on `type`; fields a
 * type does not have are zero / nil. Strings and objects borrow from the
 * input buffer and from the zone passed to ms_msg_decode().
 *
 *   HELLO       version, name=service, token (ptr NULL if nil), opts
 *   WELCOME     hub_id, opts
 *   REQUEST     id, name=target (client->hub) or source (hub->client),
 *               event, data, timeout_ms, opts
 *   RESPONSE    id, data
 *   ERROR       id, code, message, extra=error_data
 *   CANCEL      id
 *   LOG         ts_us (0 if nil), level, message, extra=fields
 *   RECORD      id=sub_id, seq, ts_us, level, name=service, message,
 *               extra=fields
 *   SUBSCRIBE   id=sub_id, stream, extra=filter
 *   UNSUBSCRIBE id=sub_id
 *   PRESENCE    id=sub_id, seq, ts_us, kind, name=service, extra=detail
 *   PING/PONG   id=n
 *
 * Optional trailing elements (opts, filter, fields, error_data) that are
 * absent or nil decode as an empty map (type MSGPACK_OBJECT_MAP, size 0),
 * except error_data, which decodes as nil.
 */
typedef struct ms_msg {
  ms_msg_type type;
  uint64_t id;
  uint64_t version;
  uint64_t seq;
  int64_t ts_us;
  int64_t level;
  uint64_t timeout_ms;
  ms_str name;
  ms_str token;
  ms_str hub_id;
  ms_str event;
  ms_str code;
  ms_str message;
  ms_str stream;
  ms_str kind;
  msgpack_object data;
  msgpack_object opts;
  msgpack_object extra;
  /* The MessagePack bytes of `data` (REQUEST, RESPONSE) and of error_data
   * (ERROR, when present) or fields (LOG, when a map), borrowed from the
   * input: a hub passes them on without re-encoding. */
  ms_raw data_raw;
  ms_raw extra_raw;
} ms_msg;

/* Who sent the bytes being decoded: the decoder rejects types meant for
 * the other direction. */
typedef enum ms_dir {
  MS_DIR_TO_HUB = 0,   /* decoding at the hub: client -> hub */
  MS_DIR_TO_CLIENT = 1 /* decoding at a client: hub -> client */
} ms_dir;

/* Why a message failed to decode. */
typedef struct ms_decode_error {
  /* Non-zero when the message is a REQUEST (to the hub) or SUBSCRIBE
   * whose id / sub_id was readable: PROTOCOL.md then answers ERROR with
   * that id and keeps the connection. 0: answer id 0 and close 4002. */
  int id_readable;
  uint64_t id;
  ms_msg_type type; /* 0 if the type itself was not readable */
  char what[96];    /* a short reason, NUL-terminated */
} ms_decode_error;

/*
 * Decode one MessagePack message of exactly `len` bytes. `zone` is used
 * for the decoded objects (clear it between messages). Returns 0, or
 * MS_ERR_BAD_MESSAGE with *err filled (err may be NULL), or MS_ERR_NOMEM.
 * Bounded: nesting deeper than 32 levels, or a container count that cannot
 * fit in the remaining bytes, is rejected before any allocation.
 */
MS_EXTERN int ms_msg_decode(ms_msg *msg, msgpack_zone *zone,
                            const uint8_t *buf, size_t len, ms_dir dir,
                            ms_decode_error *err);

/* Check that buf holds exactly one well-formed MessagePack object within
 * the depth and count bounds above. Returns 0 or MS_ERR_BAD_MESSAGE. */
MS_EXTERN int ms_msgpack_check(const uint8_t *buf, size_t len);

/*
 * Encoders: each appends one complete message to `pk` (any msgpack-c
 * packer, usually over a msgpack_sbuffer). Objects may be NULL to mean nil
 * (or an empty map for opts/fields/filter/detail). `data_raw` variants take
 * already-encoded MessagePack bytes and copy them verbatim (no re-encoding:
 * this is how a hub routes payloads).
 */
MS_EXTERN int ms_enc_hello(msgpack_packer *pk, ms_str service, ms_str token,
                           const msgpack_object *opts);
MS_EXTERN int ms_enc_welcome(msgpack_packer *pk, ms_str hub_id,
                             const msgpack_object *opts);
MS_EXTERN int ms_enc_request(msgpack_packer *pk, uint64_t id, ms_str name,
                             ms_str event, const msgpack_object *data,
                             uint64_t timeout_ms, const msgpack_object *opts);
MS_EXTERN int ms_enc_request_raw(msgpack_packer *pk, uint64_t id,
                                 ms_str name, ms_str event,
                                 const uint8_t *data, size_t data_len,
                                 uint64_t timeout_ms, const uint8_t *opts,
                                 size_t opts_len);
MS_EXTERN int ms_enc_response(msgpack_packer *pk, uint64_t id,
                              const msgpack_object *data);
MS_EXTERN int ms_enc_response_raw(msgpack_packer *pk, uint64_t id,
                                  const uint8_t *data, size_t data_len);
MS_EXTERN int ms_enc_error(msgpack_packer *pk, uint64_t id, ms_str code,
                           ms_str message, const msgpack_object *error_data);
MS_EXTERN int ms_enc_error_raw(msgpack_packer *pk, uint64_t id, ms_str code,
                               ms_str message, const uint8_t *error_data,
                               size_t error_data_len);
MS_EXTERN int ms_enc_cancel(msgpack_packer *pk, uint64_t id);
MS_EXTERN int ms_enc_log(msgpack_packer *pk, int64_t ts_us, int64_t level,
                         ms_str message, const msgpack_object *fields);
/* LOG with its fields already encoded (a MessagePack map; NULL or 0
 * bytes: an empty map), copied verbatim. */
MS_EXTERN int ms_enc_log_raw(msgpack_packer *pk, int64_t ts_us,
                             int64_t level, ms_str message,
                             const uint8_t *fields, size_t fields_len);
MS_EXTERN int ms_enc_record(msgpack_packer *pk, uint64_t sub_id,
                            uint64_t seq, int64_t ts_us, int64_t level,
                            ms_str service, ms_str message,
                            const msgpack_object *fields);
MS_EXTERN int ms_enc_subscribe(msgpack_packer *pk, uint64_t sub_id,
                               ms_str stream, const msgpack_object *filter);
/* SUBSCRIBE with its filter already encoded (a map; NULL/0: empty). */
MS_EXTERN int ms_enc_subscribe_raw(msgpack_packer *pk, uint64_t sub_id,
                                   ms_str stream, const uint8_t *filter,
                                   size_t filter_len);
MS_EXTERN int ms_enc_unsubscribe(msgpack_packer *pk, uint64_t sub_id);
MS_EXTERN int ms_enc_presence(msgpack_packer *pk, uint64_t sub_id,
                              uint64_t seq, int64_t ts_us, ms_str kind,
                              ms_str service, const msgpack_object *detail);
MS_EXTERN int ms_enc_ping(msgpack_packer *pk, uint64_t n);
MS_EXTERN int ms_enc_pong(msgpack_packer *pk, uint64_t n);

/* Helpers for reading maps (opts, filter, fields). */
/* Value of key `key` in a map object, or NULL (also NULL if m is not a
 * map). */
MS_EXTERN const msgpack_object *ms_map_get(const msgpack_object *m,
                                           const char *key);
/* Convenience readers: return 0 and set *out when the key is present with
 * the right type, MS_ERR_NOT_FOUND when absent or nil, MS_ERR_BAD_MESSAGE
 * when present with another type. */
MS_EXTERN int ms_map_get_u64(const msgpack_object *m, const char *key,
                             uint64_t *out);
MS_EXTERN int ms_map_get_i64(const msgpack_object *m, const char *key,
                             int64_t *out);
MS_EXTERN int ms_map_get_bool(const msgpack_object *m, const char *key,
                              int *out);
MS_EXTERN int ms_map_get_str(const msgpack_object *m, const char *key,
                             ms_str *out);

/* Convenience for literals. */
static inline ms_str ms_str_c(const char *s) {
  ms_str r;
  r.ptr = s;
  r.len = 0;
  if (s)
    while (s[r.len])
      r.len++;
  return r;
}

/*
 * JSON encoding (PROTOCOL.md "Transport and encodings").
 *
 * ms_json_to_msgpack: parse one JSON text (must be valid UTF-8, at most
 * 64 levels deep) and append its MessagePack form to `out`. Returns 0,
 * MS_ERR_BAD_MESSAGE (with a reason in `what` if non-NULL, NUL-terminated,
 * at most what_size bytes), MS_ERR_NOMEM.
 *
 * ms_msgpack_to_json: convert one MessagePack object to compact JSON text,
 * appended to `out` (no NUL added). bin/ext -> base64 string; non-string
 * map keys -> their JSON text; integers beyond +-2^53 -> decimal string;
 * NaN/Inf -> null. Returns 0 or MS_ERR_NOMEM.
 */
MS_EXTERN int ms_json_to_msgpack(const char *json, size_t len,
                                 msgpack_sbuffer *out, char *what,
                                 size_t what_size);
MS_EXTERN int ms_msgpack_to_json(const msgpack_object *obj,
                                 msgpack_sbuffer *out);
/* Same, from encoded MessagePack bytes (exactly one object). */
MS_EXTERN int ms_msgpack_bytes_to_json(const uint8_t *buf, size_t len,
                                       msgpack_sbuffer *out);

#ifdef __cplusplus
}
#endif

#endif
