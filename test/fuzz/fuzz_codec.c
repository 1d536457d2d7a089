/* Fuzz target: the protocol decoder in both directions, the structural
 * pre-check, and MessagePack -> JSON -> MessagePack for anything that
 * decodes. */
#include <microstream/ms_codec.h>

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void transcode(const uint8_t *data, size_t size, ms_dir dir,
                      const ms_msg *m) {
  msgpack_sbuffer js, mp;
  msgpack_zone z;
  ms_msg m2;
  msgpack_sbuffer_init(&js);
  msgpack_sbuffer_init(&mp);
  /* A message that decoded converts to JSON, and that JSON reads back
   * (depth <= 32 < 64, every str valid UTF-8, no integer out of jansson's
   * range); the one exception is a NUL in a map key, which jansson
   * refuses. */
  if (ms_msgpack_bytes_to_json(data, size, &js) != 0)
    abort();
  if (ms_json_to_msgpack(js.data, js.size, &mp, NULL, 0) != 0) {
    if (!memmem(js.data, js.size, "\\u0000", 6))
      abort();
    goto out;
  }
  /* The result is well formed; decoding it may fail (a large integer
   * became a string), but if it decodes, the type is the same. */
  if (ms_msgpack_check((const uint8_t *)mp.data, mp.size) != 0)
    abort();
  msgpack_zone_init(&z, 1024);
  if (ms_msg_decode(&m2, &z, (const uint8_t *)mp.data, mp.size, dir, NULL) ==
          0 &&
      m2.type != m->type)
    abort();
  msgpack_zone_destroy(&z);
out:
  msgpack_sbuffer_destroy(&js);
  msgpack_sbuffer_destroy(&mp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int checked = ms_msgpack_check(data, size);
  for (int dir = 0; dir < 2; dir++) {
    msgpack_zone z;
    ms_msg m;
    ms_decode_error err;
    msgpack_zone_init(&z, 1024);
    int rv = ms_msg_decode(&m, &z, data, size, (ms_dir)dir, &err);
    if (rv == 0) {
      if (checked != 0)
        abort();
      transcode(data, size, (ms_dir)dir, &m);
    } else if (rv != MS_ERR_BAD_MESSAGE || memchr(err.what, 0, sizeof
               err.what) == NULL || (err.id_readable && err.id == 0)) {
      abort();
    }
    msgpack_zone_destroy(&z);
  }
  /* Anything the check accepts converts to JSON. */
  if (checked == 0) {
    msgpack_sbuffer js;
    msgpack_sbuffer_init(&js);
    if (ms_msgpack_bytes_to_json(data, size, &js) != 0)
      abort();
    msgpack_sbuffer_destroy(&js);
  }
  return 0;
}
