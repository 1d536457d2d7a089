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

/* Same object, compared as packed bytes (NaN is not equal to itself). */
static int same_obj(msgpack_object a, msgpack_object b) {
  msgpack_sbuffer x, y;
  msgpack_packer px, py;
  msgpack_sbuffer_init(&x);
  msgpack_sbuffer_init(&y);
  msgpack_packer_init(&px, &x, msgpack_sbuffer_write);
  msgpack_packer_init(&py, &y, msgpack_sbuffer_write);
  msgpack_pack_object(&px, a);
  msgpack_pack_object(&py, b);
  int same = x.size == y.size && (x.size == 0 || memcmp(x.data, y.data, x.size) == 0);
  msgpack_sbuffer_destroy(&x);
  msgpack_sbuffer_destroy(&y);
  return same;
}

/* The decoder builds the top-level elements itself: they must be what
 * msgpack-c makes of the whole message. */
static void same_as_unpacked(const uint8_t *data, size_t size,
                             const ms_msg *m) {
  msgpack_zone z;
  msgpack_object root;
  size_t off = 0;
  msgpack_zone_init(&z, 1024);
  if (msgpack_unpack((const char *)data, size, &off, &z, &root) !=
          MSGPACK_UNPACK_SUCCESS ||
      root.type != MSGPACK_OBJECT_ARRAY || root.via.array.size == 0)
    abort();
  const msgpack_object *e = root.via.array.ptr;
  uint32_t n = root.via.array.size;
  if (e[0].via.u64 != (uint64_t)m->type)
    abort();
  int di = m->type == MS_MSG_REQUEST ? 4 : m->type == MS_MSG_RESPONSE ? 2 : 0;
  if (di && !same_obj(m->data, e[di]))
    abort();
  if (m->type == MS_MSG_REQUEST && n > 6 && e[6].type != MSGPACK_OBJECT_NIL &&
      !same_obj(m->opts, e[6]))
    abort();
  if (m->type == MS_MSG_REQUEST &&
      (m->event.len != e[3].via.str.size ||
       memcmp(m->event.ptr, e[3].via.str.ptr, m->event.len) != 0 ||
       m->timeout_ms != e[5].via.u64))
    abort();
  if (m->type == MS_MSG_ERROR && n > 4 && !same_obj(m->extra, e[4]))
    abort();
  /* The raw bytes of data are exactly that element. */
  if (di && m->data_raw.ptr) {
    msgpack_zone z2;
    msgpack_object o;
    size_t o2 = 0;
    msgpack_zone_init(&z2, 256);
    if (msgpack_unpack((const char *)m->data_raw.ptr, m->data_raw.len, &o2,
                       &z2, &o) != MSGPACK_UNPACK_SUCCESS ||
        !same_obj(o, e[di]))
      abort();
    msgpack_zone_destroy(&z2);
  }
  msgpack_zone_destroy(&z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int checked = ms_msgpack_check(data, size);
  for (int dir = 0; dir < 2; dir++) {
    msgpack_zone z;
    ms_msg m;
    ms_decode_error err;
    msgpack_zone_init(&z, 1024);
    int rv = ms_msg_decode(&m, &z, data, size, (ms_dir)dir, &err);
    /* Malformed MessagePack, and only that, gets this reason. */
    int malformed = rv != 0 && strstr(err.what, "well-formed") != NULL;
    if (malformed != (checked != 0))
      abort();
    if (rv == 0) {
      if (checked != 0)
        abort();
      same_as_unpacked(data, size, &m);
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
