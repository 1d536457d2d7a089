/* Every message type's one encoder, decoded with plain msgpack-c (not the
 * library's decoder) and compared field by field: the array size, each
 * field's type and value, payloads given as bytes or as objects, and
 * values at the edges of the integer and string forms (the routed
 * messages are framed by hand on the hub's hot path). */
#include "ms_test.h"

#include "ms_wire.h"

#include <microstream/microstream.h>

typedef struct enc {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_zone z;
  msgpack_object o;
} enc;

static msgpack_packer *enc_begin(enc *e) {
  msgpack_sbuffer_init(&e->sb);
  msgpack_packer_init(&e->pk, &e->sb, msgpack_sbuffer_write);
  msgpack_zone_init(&e->z, 1024);
  return &e->pk;
}

/* Decode what was packed: exactly one object using every byte. */
static const msgpack_object *enc_decode(enc *e, uint32_t want_fields) {
  size_t off = 0;
  if (msgpack_unpack(e->sb.data, e->sb.size, &off, &e->z, &e->o) !=
          MSGPACK_UNPACK_SUCCESS ||
      off != e->sb.size || e->o.type != MSGPACK_OBJECT_ARRAY ||
      e->o.via.array.size != want_fields)
    return NULL;
  return e->o.via.array.ptr;
}

static void enc_end(enc *e) {
  msgpack_zone_destroy(&e->z);
  msgpack_sbuffer_destroy(&e->sb);
}

static int is_uint(const msgpack_object *o, uint64_t v) {
  return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == v;
}
static int is_int(const msgpack_object *o, int64_t v) {
  if (v >= 0)
    return is_uint(o, (uint64_t)v);
  return o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 == v;
}
static int is_str(const msgpack_object *o, const char *s, size_t n) {
  return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
         (n == 0 || memcmp(o->via.str.ptr, s, n) == 0);
}
static int is_cstr(const msgpack_object *o, const char *s) {
  return is_str(o, s, strlen(s));
}
static int is_nil(const msgpack_object *o) {
  return o->type == MSGPACK_OBJECT_NIL;
}
static int is_empty_map(const msgpack_object *o) {
  return o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 0;
}
/* {"k": v} */
static int is_map1(const msgpack_object *o, const char *k, uint64_t v) {
  return o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 1 &&
         is_cstr(&o->via.map.ptr[0].key, k) &&
         is_uint(&o->via.map.ptr[0].val, v);
}

/* {"k": 7} as bytes and as an object. */
static const uint8_t map_k7[] = {0x81, 0xa1, 'k', 0x07};
static msgpack_object_kv kv_k7;
static msgpack_object obj_k7(void) {
  kv_k7.key.type = MSGPACK_OBJECT_STR;
  kv_k7.key.via.str.ptr = "k";
  kv_k7.key.via.str.size = 1;
  kv_k7.val.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
  kv_k7.val.via.u64 = 7;
  msgpack_object o;
  o.type = MSGPACK_OBJECT_MAP;
  o.via.map.size = 1;
  o.via.map.ptr = &kv_k7;
  return o;
}
static const uint8_t str_hi[] = {0xa2, 'h', 'i'};

static void hello_and_welcome_decode_field_by_field(void) {
  enc e;
  msgpack_object opts = obj_k7();
  ms_enc_hello(enc_begin(&e), ms_str_c("svc"), ms_str_c("tok"), &opts);
  const msgpack_object *f = enc_decode(&e, 5);
  CHECK(f);
  CHECK(is_uint(&f[0], MS_MSG_HELLO));
  CHECK(is_uint(&f[1], MS_PROTOCOL_VERSION));
  CHECK(is_cstr(&f[2], "svc"));
  CHECK(is_cstr(&f[3], "tok"));
  CHECK(is_map1(&f[4], "k", 7));
  enc_end(&e);
  ms_enc_hello(enc_begin(&e), ms_str_c("svc"), (ms_str){NULL, 0}, NULL);
  f = enc_decode(&e, 5);
  CHECK(f);
  CHECK(is_nil(&f[3]));
  CHECK(is_empty_map(&f[4]));
  enc_end(&e);
  ms_enc_welcome(enc_begin(&e), ms_str_c("hub-1"), &opts);
  f = enc_decode(&e, 3);
  CHECK(f);
  CHECK(is_uint(&f[0], MS_MSG_WELCOME));
  CHECK(is_cstr(&f[1], "hub-1"));
  CHECK(is_map1(&f[2], "k", 7));
  enc_end(&e);
}

static void request_decodes_field_by_field_in_every_form(void) {
  /* ids and timeouts at the edge of each integer form, names at the edge
   * of each string form */
  static const uint64_t ids[] = {0,     127,        128,   255,
                                 256,   65535,      65536, UINT32_MAX,
                                 (uint64_t)UINT32_MAX + 1, UINT64_MAX};
  static char name[70000];
  memset(name, 'n', sizeof name);
  static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
  msgpack_object data_obj;
  data_obj.type = MSGPACK_OBJECT_STR;
  data_obj.via.str.ptr = "hi";
  data_obj.via.str.size = 2;
  msgpack_object opts = obj_k7();
  for (size_t i = 0; i < MS_ARRAY_LEN(ids); i++) {
    for (size_t k = 0; k < MS_ARRAY_LEN(lens); k++) {
      for (int form = 0; form < 3; form++) {
        enc e;
        msgpack_packer *pk = enc_begin(&e);
        ms_str nm = {name, lens[k]};
        if (form == 0)
          ms_enc_request_raw(pk, ids[i], nm, ms_str_c("ev"), str_hi,
                             sizeof str_hi, ids[i], map_k7, sizeof map_k7);
        else if (form == 1)
          ms_enc_request(pk, ids[i], nm, ms_str_c("ev"), &data_obj, ids[i],
                         &opts);
        else
          ms_enc_request_any(pk, ids[i], nm, ms_str_c("ev"), NULL, 0, NULL,
                             ids[i], NULL, 0, NULL);
        const msgpack_object *f = enc_decode(&e, 7);
        CHECK(f);
        CHECK(is_uint(&f[0], MS_MSG_REQUEST));
        CHECK(is_uint(&f[1], ids[i]));
        CHECK(is_str(&f[2], name, lens[k]));
        CHECK(is_cstr(&f[3], "ev"));
        if (form < 2) {
          CHECK(is_cstr(&f[4], "hi"));
          CHECK(is_map1(&f[6], "k", 7));
        } else {
          CHECK(is_nil(&f[4]));
          CHECK(is_empty_map(&f[6]));
        }
        CHECK(is_uint(&f[5], ids[i]));
        enc_end(&e);
      }
    }
  }
}

static void response_and_error_decode_field_by_field(void) {
  msgpack_object data_obj = obj_k7();
  for (int form = 0; form < 3; form++) {
    enc e;
    msgpack_packer *pk = enc_begin(&e);
    if (form == 0)
      ms_enc_response_raw(pk, 300, map_k7, sizeof map_k7);
    else if (form == 1)
      ms_enc_response(pk, 300, &data_obj);
    else
      ms_enc_response(pk, 300, NULL);
    const msgpack_object *f = enc_decode(&e, 3);
    CHECK(f);
    CHECK(is_uint(&f[0], MS_MSG_RESPONSE));
    CHECK(is_uint(&f[1], 300));
    CHECK(form == 2 ? is_nil(&f[2]) : is_map1(&f[2], "k", 7));
    enc_end(&e);

    pk = enc_begin(&e);
    if (form == 0)
      ms_enc_error_raw(pk, 70000, ms_str_c("REQUEST_TIMEOUT"),
                       ms_str_c("too slow"), map_k7, sizeof map_k7);
    else if (form == 1)
      ms_enc_error(pk, 70000, ms_str_c("REQUEST_TIMEOUT"),
                   ms_str_c("too slow"), &data_obj);
    else
      ms_enc_error(pk, 70000, ms_str_c("REQUEST_TIMEOUT"),
                   ms_str_c("too slow"), NULL);
    f = enc_decode(&e, 5);
    CHECK(f);
    CHECK(is_uint(&f[0], MS_MSG_ERROR));
    CHECK(is_uint(&f[1], 70000));
    CHECK(is_cstr(&f[2], "REQUEST_TIMEOUT"));
    CHECK(is_cstr(&f[3], "too slow"));
    CHECK(form == 2 ? is_nil(&f[4]) : is_map1(&f[4], "k", 7));
    enc_end(&e);
  }
}

static void small_messages_decode_field_by_field(void) {
  struct {
    int (*fn)(msgpack_packer *, uint64_t);
    int type;
  } two[] = {{ms_enc_cancel, MS_MSG_CANCEL},
             {ms_enc_unsubscribe, MS_MSG_UNSUBSCRIBE},
             {ms_enc_ping, MS_MSG_PING},
             {ms_enc_pong, MS_MSG_PONG}};
  for (size_t i = 0; i < MS_ARRAY_LEN(two); i++) {
    enc e;
    two[i].fn(enc_begin(&e), 65536);
    const msgpack_object *f = enc_decode(&e, 2);
    CHECK(f);
    CHECK(is_uint(&f[0], (uint64_t)two[i].type));
    CHECK(is_uint(&f[1], 65536));
    enc_end(&e);
  }
}

static void log_and_subscribe_decode_field_by_field(void) {
  msgpack_object fields = obj_k7();
  for (int form = 0; form < 2; form++) {
    enc e;
    msgpack_packer *pk = enc_begin(&e);
    if (form == 0)
      ms_enc_log_raw(pk, -5, 40, ms_str_c("msg"), map_k7, sizeof map_k7);
    else
      ms_enc_log(pk, -5, 40, ms_str_c("msg"), &fields);
    const msgpack_object *f = enc_decode(&e, 5);
    CHECK(f);
    CHECK(is_uint(&f[0], MS_MSG_LOG));
    CHECK(is_int(&f[1], -5));
    CHECK(is_int(&f[2], 40));
    CHECK(is_cstr(&f[3], "msg"));
    CHECK(is_map1(&f[4], "k", 7));
    enc_end(&e);

    pk = enc_begin(&e);
    if (form == 0)
      ms_enc_subscribe_raw(pk, 9, ms_str_c("logs"), map_k7, sizeof map_k7);
    else
      ms_enc_subscribe(pk, 9, ms_str_c("logs"), &fields);
    f = enc_decode(&e, 4);
    CHECK(f);
    CHECK(is_uint(&f[0], MS_MSG_SUBSCRIBE));
    CHECK(is_uint(&f[1], 9));
    CHECK(is_cstr(&f[2], "logs"));
    CHECK(is_map1(&f[3], "k", 7));
    enc_end(&e);
  }
}

/* RECORD and PRESENCE: the whole encoder and the hub's two parts (head
 * per subscriber, rest once per record) give the same message. */
static void record_and_presence_decode_field_by_field(void) {
  msgpack_object fields = obj_k7();
  for (int form = 0; form < 2; form++) {
    enc e;
    msgpack_packer *pk = enc_begin(&e);
    if (form == 0) {
      ms_enc_record(pk, 3, 1000, 1700000000000000, 20, ms_str_c("svc"),
                    ms_str_c("hello"), &fields);
    } else {
      ms_enc_stream_head(pk, MS_MSG_RECORD, 3);
      ms_enc_record_rest(pk, 1000, 1700000000000000, 20, ms_str_c("svc"),
                         ms_str_c("hello"), map_k7, sizeof map_k7, NULL);
    }
    const msgpack_object *f = enc_decode(&e, 8);
    CHECK(f);
    CHECK(is_uint(&f[0], MS_MSG_RECORD));
    CHECK(is_uint(&f[1], 3));
    CHECK(is_uint(&f[2], 1000));
    CHECK(is_int(&f[3], 1700000000000000));
    CHECK(is_int(&f[4], 20));
    CHECK(is_cstr(&f[5], "svc"));
    CHECK(is_cstr(&f[6], "hello"));
    CHECK(is_map1(&f[7], "k", 7));
    enc_end(&e);

    pk = enc_begin(&e);
    if (form == 0) {
      ms_enc_presence(pk, 4, 2, -1, ms_str_c("up"), ms_str_c("svc"), NULL);
    } else {
      ms_enc_stream_head(pk, MS_MSG_PRESENCE, 4);
      ms_enc_presence_rest(pk, 2, -1, ms_str_c("up"), ms_str_c("svc"), NULL,
                           0, NULL);
    }
    f = enc_decode(&e, 7);
    CHECK(f);
    CHECK(is_uint(&f[0], MS_MSG_PRESENCE));
    CHECK(is_uint(&f[1], 4));
    CHECK(is_uint(&f[2], 2));
    CHECK(is_int(&f[3], -1));
    CHECK(is_cstr(&f[4], "up"));
    CHECK(is_cstr(&f[5], "svc"));
    CHECK(is_empty_map(&f[6]));
    enc_end(&e);
  }
}

/* The hand-framed heads are byte for byte what msgpack-c's packer makes. */
static void routed_heads_match_msgpack_c_bytes(void) {
  static const uint64_t ids[] = {5, 200, 40000, 3000000000u,
                                 (uint64_t)1 << 40};
  for (size_t i = 0; i < MS_ARRAY_LEN(ids); i++) {
    enc a, b;
    msgpack_packer *pa = enc_begin(&a), *pb = enc_begin(&b);
    ms_enc_response_raw(pa, ids[i], str_hi, sizeof str_hi);
    msgpack_pack_array(pb, 3);
    msgpack_pack_uint64(pb, MS_MSG_RESPONSE);
    msgpack_pack_uint64(pb, ids[i]);
    msgpack_pack_str_with_body(pb, "hi", 2);
    CHECK_EQ_INT(a.sb.size, b.sb.size);
    CHECK(memcmp(a.sb.data, b.sb.data, a.sb.size) == 0);
    enc_end(&a);
    enc_end(&b);
  }
}

static const ms_test_case tests[] = {
    TEST(hello_and_welcome_decode_field_by_field),
    TEST(request_decodes_field_by_field_in_every_form),
    TEST(response_and_error_decode_field_by_field),
    TEST(small_messages_decode_field_by_field),
    TEST(log_and_subscribe_decode_field_by_field),
    TEST(record_and_presence_decode_field_by_field),
    TEST(routed_heads_match_msgpack_c_bytes),
};

MS_TEST_MAIN(tests)
