/* Fuzz target: JSON text -> MessagePack, then the protocol decoder (both
 * directions) on the result, and back to JSON. Then the Socket.IO reading
 * of the same text (ms_json_js_to_mp) against jansson: cJSON and jansson
 * give the same bytes where both read it, and whatever the native reading
 * accepts it accepts, with the same values once numbers are doubles. */
#include <microstream/ms_codec.h>

#include "ms_json.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_bin(void *ud, const char *p, size_t n) {
  (void)p;
  (void)n;
  (*(size_t *)ud)++;
  return 0;
}

static double num(const msgpack_object *o) {
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    return (double)o->via.u64;
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    return (double)o->via.i64;
  return o->via.f64;
}

static int is_num(const msgpack_object *o) {
  return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
         o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
         o->type == MSGPACK_OBJECT_FLOAT32 ||
         o->type == MSGPACK_OBJECT_FLOAT64;
}

/* Equal values, numbers compared as doubles. */
static int same_value(const msgpack_object *a, const msgpack_object *b) {
  if (is_num(a) || is_num(b))
    return is_num(a) && is_num(b) && num(a) == num(b);
  if (a->type != b->type)
    return 0;
  switch (a->type) {
  case MSGPACK_OBJECT_BOOLEAN:
    return a->via.boolean == b->via.boolean;
  case MSGPACK_OBJECT_STR:
    return a->via.str.size == b->via.str.size &&
           (!a->via.str.size ||
            memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0);
  case MSGPACK_OBJECT_ARRAY:
    if (a->via.array.size != b->via.array.size)
      return 0;
    for (uint32_t i = 0; i < a->via.array.size; i++)
      if (!same_value(&a->via.array.ptr[i], &b->via.array.ptr[i]))
        return 0;
    return 1;
  case MSGPACK_OBJECT_MAP:
    if (a->via.map.size != b->via.map.size)
      return 0;
    for (uint32_t i = 0; i < a->via.map.size; i++)
      if (!same_value(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
          !same_value(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
        return 0;
    return 1;
  default:
    return 1; /* nil */
  }
}

static int same_bytes(const ms_mpbuf *a, const ms_mpbuf *b) {
  return a->sb.size == b->sb.size &&
         (!a->sb.size || memcmp(a->sb.data, b->sb.data, a->sb.size) == 0);
}

static void sio_reading(const uint8_t *data, size_t size,
                        const msgpack_sbuffer *native, int native_ok) {
  ms_mpbuf a, c, j;
  ms_mpbuf_init(&a, NULL);
  ms_mpbuf_init(&c, NULL);
  ms_mpbuf_init(&j, NULL);
  const char *t = (const char *)data;
  int ra = ms_json_js_to_mp(t, size, &a, 1, MS_JSON_AUTO);
  int rc = ms_json_js_to_mp(t, size, &c, 2, MS_JSON_CJSON);
  int rj = ms_json_js_to_mp(t, size, &j, 3, MS_JSON_JANSSON);
  if ((ra && ra != MS_ERR_BAD_MESSAGE) || (rc && rc != MS_ERR_BAD_MESSAGE) ||
      (rj && rj != MS_ERR_BAD_MESSAGE))
    abort();
  if ((ra && a.sb.size) || (rc && c.sb.size) || (rj && j.sb.size))
    abort(); /* a refusal leaves nothing behind */
  if (rc == 0 && rj == 0 && !same_bytes(&c, &j))
    abort();
  if (ra == 0 && !(rc == 0 ? same_bytes(&a, &c)
                           : rj == 0 && same_bytes(&a, &j)))
    abort();
  /* (jansson takes a NUL byte right after a number, which is not JSON;
   * the Socket.IO reading refuses every raw NUL.) */
  if (native_ok && (!size || memchr(data, 0, size) == NULL)) {
    if (ra != 0)
      abort(); /* valid JSON the native reading takes */
    msgpack_zone z;
    msgpack_object on, oa;
    size_t o1 = 0, o2 = 0;
    msgpack_zone_init(&z, 1024);
    /* (msgpack-c decodes at most 32 levels: then both fail alike.) */
    int u1 = msgpack_unpack(native->data, native->size, &o1, &z, &on);
    int u2 = msgpack_unpack(a.sb.data, a.sb.size, &o2, &z, &oa);
    if (u1 != u2 || (u1 == MSGPACK_UNPACK_SUCCESS && !same_value(&on, &oa)))
      abort();
    msgpack_zone_destroy(&z);
  }
  ms_mpbuf_destroy(&a);
  ms_mpbuf_destroy(&c);
  ms_mpbuf_destroy(&j);
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
      ms_mpbuf js2;
      ms_mpbuf_init(&js2, NULL);
      msgpack_zone_init(&z, 1024);
      if (msgpack_unpack(mp.data, mp.size, &off, &z, &o) ==
              MSGPACK_UNPACK_SUCCESS &&
          (ms_msgpack_to_json_bins(&o, &js2, count_bin, &nbin) != 0 ||
           nbin != 0 || js2.sb.size != js.size ||
           (js.size && memcmp(js.data, js2.sb.data, js.size) != 0)))
        abort();
      msgpack_zone_destroy(&z);
      ms_mpbuf_destroy(&js2);
    }
  } else if (rv != MS_ERR_BAD_MESSAGE || mp.size != 0 ||
             memchr(what, 0, sizeof what) == NULL) {
    abort();
  }
  sio_reading(data, size, &mp, rv == 0);
  msgpack_sbuffer_destroy(&mp);
  msgpack_sbuffer_destroy(&js);
  return 0;
}
