/* Fuzz target: JSON text -> MessagePack, then the protocol decoder (both
 * directions) on the result, and back to JSON. */
#include <microstream/ms_codec.h>

#include "ms_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_bin(void *ud, const char *p, size_t n) {
  (void)p;
  (void)n;
  (*(size_t *)ud)++;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  msgpack_sbuffer mp, js;
  char what[96];
  msgpack_sbuffer_init(&mp);
  msgpack_sbuffer_init(&js);
  int rv = ms_json_to_msgpack((const char *)data, size, &mp, what,
                              sizeof what);
  if (rv == 0) {
    for (int dir = 0; dir < 2; dir++) {
      msgpack_zone z;
      ms_msg m;
      msgpack_zone_init(&z, 1024);
      (void)ms_msg_decode(&m, &z, (const uint8_t *)mp.data, mp.size,
                          (ms_dir)dir, NULL);
      msgpack_zone_destroy(&z);
    }
    /* JSON deeper than 32 is valid JSON but not a valid message; within
     * that bound the bytes must pass the check and convert back. */
    if (ms_msgpack_check((const uint8_t *)mp.data, mp.size) == 0) {
      if (ms_msgpack_bytes_to_json((const uint8_t *)mp.data, mp.size, &js) !=
          0)
        abort();
      /* The Socket.IO form: JSON came in, so there is no bin to hand over
       * and the text is the same. */
      msgpack_zone z;
      msgpack_object o;
      size_t off = 0, nbin = 0;
      msgpack_sbuffer js2;
      msgpack_sbuffer_init(&js2);
      msgpack_zone_init(&z, 1024);
      if (msgpack_unpack(mp.data, mp.size, &off, &z, &o) ==
              MSGPACK_UNPACK_SUCCESS &&
          (ms_msgpack_to_json_bins(&o, &js2, count_bin, &nbin) != 0 ||
           nbin != 0 || js2.size != js.size ||
           (js.size && memcmp(js.data, js2.data, js.size) != 0)))
        abort();
      msgpack_zone_destroy(&z);
      msgpack_sbuffer_destroy(&js2);
    }
  } else if (rv != MS_ERR_BAD_MESSAGE || mp.size != 0 ||
             memchr(what, 0, sizeof what) == NULL) {
    abort();
  }
  msgpack_sbuffer_destroy(&mp);
  msgpack_sbuffer_destroy(&js);
  return 0;
}
