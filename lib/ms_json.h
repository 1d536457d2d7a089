/* The JSON edge inside the library (ms_json.c): conversions that write
 * into an ms_mpbuf, on the allocator of the object they work for, and the
 * Socket.IO reading of JSON. The public ms_json_to_msgpack and
 * ms_msgpack_to_json (ms_codec.h) are the same conversions into a
 * msgpack_sbuffer. */
#ifndef MS_JSON_H
#define MS_JSON_H

#include "ms_wire.h"

/* Each appends to out and returns 0, or leaves out as it found it
 * (usable again) and returns MS_ERR_BAD_MESSAGE or MS_ERR_NOMEM. */

/* ms_json_to_msgpack's rules (microstream.json.v1). */
int ms_json_to_mp(const char *json, size_t len, ms_mpbuf *out, char *what,
                  size_t what_size);
/* ms_msgpack_to_json / ms_msgpack_bytes_to_json. */
int ms_msgpack_to_json_mp(const msgpack_object *obj, ms_mpbuf *out);
int ms_msgpack_bytes_to_json_mp(const uint8_t *buf, size_t len,
                                ms_mpbuf *out);
/* ms_msgpack_to_json, but each bin value is written as a Socket.IO
 * placeholder {"_placeholder":true,"num":N} (N counting from 0) and handed
 * to cb in order (cb returns nonzero to fail: MS_ERR_NOMEM). */
int ms_msgpack_to_json_bins(const msgpack_object *obj, ms_mpbuf *out,
                            int (*cb)(void *ud, const char *p, size_t n),
                            void *ud);

/* Who reads a Socket.IO text: MS_JSON_AUTO in the library; the other two
 * let tests and the fuzz target compare them. */
typedef enum ms_json_engine {
  MS_JSON_AUTO = 0,    /* cJSON, jansson where cJSON cannot */
  MS_JSON_CJSON = 1,   /* cJSON only (refuses what it cannot read) */
  MS_JSON_JANSSON = 2  /* jansson only */
} ms_json_engine;

/* One JSON text read as JavaScript's JSON.parse reads it (numbers are
 * doubles; see ms_json.c for the rules), into MessagePack. `seed` keys the
 * hash map that finds duplicate keys in large objects (a random value per
 * object, so that nobody can choose keys that collide). Invalid UTF-8,
 * invalid JSON and nesting deeper than 64 levels are MS_ERR_BAD_MESSAGE. */
int ms_json_js_to_mp(const char *json, size_t len, ms_mpbuf *out,
                     uint64_t seed, ms_json_engine engine);

#endif
