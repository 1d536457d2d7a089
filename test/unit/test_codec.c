/* Protocol codec: every message type round-trips (MessagePack and through
 * the JSON encoding), and each kind of bad message is refused with the
 * right id_readable / id. */
#include "ms_test.h"

#include <microstream/ms_codec.h>

/* ---- helpers ------------------------------------------------------------ */

typedef struct fixture {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_zone zone;      /* objects built for the encoders */
  msgpack_zone dzone;     /* decoded messages */
  msgpack_sbuffer keep[8]; /* bytes that built objects point into */
  int nkeep;
} fixture;

static void fx_init(fixture *f) {
  memset(f, 0, sizeof *f);
  msgpack_sbuffer_init(&f->sb);
  msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
  msgpack_zone_init(&f->zone, 1024);
  msgpack_zone_init(&f->dzone, 1024);
}

static void fx_free(fixture *f) {
  msgpack_sbuffer_destroy(&f->sb);
  msgpack_zone_destroy(&f->zone);
  msgpack_zone_destroy(&f->dzone);
  for (int i = 0; i < f->nkeep; i++)
    msgpack_sbuffer_destroy(&f->keep[i]);
}

/* An object from MessagePack bytes; the bytes are kept alive in f. */
static msgpack_object fx_obj(fixture *f, const void *bytes, size_t len) {
  msgpack_object o;
  size_t off = 0;
  msgpack_sbuffer *k = &f->keep[f->nkeep++];
  msgpack_sbuffer_init(k);
  msgpack_sbuffer_write(k, bytes, len);
  o.type = MSGPACK_OBJECT_NIL;
  if (msgpack_unpack(k->data, k->size, &off, &f->zone, &o) !=
      MSGPACK_UNPACK_SUCCESS)
    o.type = MSGPACK_OBJECT_NIL;
  return o;
}

static int str_is(ms_str s, const char *want) {
  size_t n = strlen(want);
  return s.ptr && s.len == n && memcmp(s.ptr, want, n) == 0;
}

static int is_empty_map(const msgpack_object *o) {
  return o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 0;
}

static int strs_equal(ms_str a, ms_str b) {
  if (!a.ptr || !b.ptr)
    return a.ptr == b.ptr;
  return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static int msgs_equal(const ms_msg *a, const ms_msg *b) {
  return a->type == b->type && a->id == b->id && a->version == b->version &&
         a->seq == b->seq && a->ts_us == b->ts_us && a->level == b->level &&
         a->timeout_ms == b->timeout_ms && strs_equal(a->name, b->name) &&
         strs_equal(a->token, b->token) && strs_equal(a->hub_id, b->hub_id) &&
         strs_equal(a->event, b->event) && strs_equal(a->code, b->code) &&
         strs_equal(a->message, b->message) &&
         strs_equal(a->stream, b->stream) && strs_equal(a->kind, b->kind) &&
         msgpack_object_equal(a->data, b->data) &&
         msgpack_object_equal(a->opts, b->opts) &&
         msgpack_object_equal(a->extra, b->extra);
}

/*
 * Decode f->sb in `dir` into *m; then send the same bytes through the JSON
 * encoding (MessagePack -> JSON text -> MessagePack), decode again, and
 * require the same message. Returns 0 when all of that holds.
 */
static int decode_and_json(fixture *f, ms_dir dir, ms_msg *m) {
  ms_decode_error err;
  msgpack_sbuffer js, mp;
  ms_msg m2;
  int rv;

  if (ms_msg_decode(m, &f->dzone, (const uint8_t *)f->sb.data, f->sb.size,
                    dir, &err) != 0) {
    printf("#   decode failed: %s\n", err.what);
    return 1;
  }
  msgpack_sbuffer_init(&js);
  msgpack_sbuffer_init(&mp);
  rv = ms_msgpack_bytes_to_json((const uint8_t *)f->sb.data, f->sb.size,
                                &js);
  if (rv == 0)
    rv = ms_json_to_msgpack(js.data, js.size, &mp, NULL, 0);
  if (rv == 0)
    rv = ms_msg_decode(&m2, &f->dzone, (const uint8_t *)mp.data, mp.size,
                       dir, &err);
  if (rv == 0 && !msgs_equal(m, &m2)) {
    printf("#   JSON round trip changed the message: %.*s\n", (int)js.size,
           js.data);
    rv = 1;
  }
  msgpack_sbuffer_destroy(&js);
  msgpack_sbuffer_destroy(&mp);
  return rv != 0;
}

/* Decoding in `dir` must fail as a bad message. */
static int wrong_dir(fixture *f, ms_dir dir, ms_msg_type t) {
  ms_msg m;
  ms_decode_error err;
  int rv = ms_msg_decode(&m, &f->dzone, (const uint8_t *)f->sb.data,
                         f->sb.size, dir, &err);
  return rv == MS_ERR_BAD_MESSAGE && err.type == t && !err.id_readable;
}

/* {"heartbeat_ms": 5000, "instance": "i-1", "watch": true} */
static const uint8_t OPTS[] = {0x83, 0xac, 'h', 'e', 'a', 'r', 't', 'b',
                               'e', 'a', 't', '_', 'm', 's', 0xcd, 0x13,
                               0x88, 0xa8, 'i', 'n', 's', 't', 'a', 'n',
                               'c', 'e', 0xa3, 'i', '-', '1', 0xa5, 'w',
                               'a', 't', 'c', 'h', 0xc3};
/* {"x": [1, -2, 1.5, "s", nil, false]} */
static const uint8_t DATA[] = {0x81, 0xa1, 'x', 0x96, 0x01, 0xfe, 0xcb,
                               0x3f, 0xf8, 0,    0,    0,    0,    0,
                               0,    0xa1, 's',  0xc0, 0xc2};

/* ---- round trips -------------------------------------------------------- */

static void hello_round_trips_to_hub(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  msgpack_object opts = fx_obj(&f, OPTS, sizeof OPTS);
  CHECK(ms_enc_hello(&f.pk, ms_str_c("billing.v2:eu-1_a"), ms_str_c("tok"),
                     &opts) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_HUB, &m) == 0);
  CHECK_EQ_INT(m.type, MS_MSG_HELLO);
  CHECK_EQ_INT(m.version, 1);
  CHECK(str_is(m.name, "billing.v2:eu-1_a"));
  CHECK(str_is(m.token, "tok"));
  CHECK(msgpack_object_equal(m.opts, opts));
  uint64_t hb = 0;
  int watch = 0;
  CHECK_EQ_INT(ms_map_get_u64(&m.opts, "heartbeat_ms", &hb), 0);
  CHECK_EQ_INT(hb, 5000);
  CHECK_EQ_INT(ms_map_get_bool(&m.opts, "watch", &watch), 0);
  CHECK_EQ_INT(watch, 1);
  CHECK(wrong_dir(&f, MS_DIR_TO_CLIENT, MS_MSG_HELLO));
  fx_free(&f);
}

static void hello_nil_token_and_null_opts(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  ms_str none = {NULL, 0};
  CHECK(ms_enc_hello(&f.pk, ms_str_c("a"), none, NULL) == 0);
  /* [1, 1, "a", nil, {}] */
  static const uint8_t want[] = {0x95, 0x01, 0x01, 0xa1, 'a', 0xc0, 0x80};
  CHECK_MEM(f.sb.data, f.sb.size, want, sizeof want);
  CHECK(decode_and_json(&f, MS_DIR_TO_HUB, &m) == 0);
  CHECK(m.token.ptr == NULL);
  CHECK(is_empty_map(&m.opts));
  fx_free(&f);
}

static void welcome_round_trips_to_client(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  msgpack_object opts = fx_obj(&f, OPTS, sizeof OPTS);
  CHECK(ms_enc_welcome(&f.pk, ms_str_c("hub-7f3a"), &opts) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_CLIENT, &m) == 0);
  CHECK_EQ_INT(m.type, MS_MSG_WELCOME);
  CHECK(str_is(m.hub_id, "hub-7f3a"));
  CHECK(msgpack_object_equal(m.opts, opts));
  CHECK(wrong_dir(&f, MS_DIR_TO_HUB, MS_MSG_WELCOME));
  fx_free(&f);
}

static void request_round_trips_both_directions(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  msgpack_object data = fx_obj(&f, DATA, sizeof DATA);
  static const uint8_t ropts[] = {0x81, 0xa7, 'l', 'a', 't', 'e',
                                  '_',  'm',  's', 0xcd, 0x03, 0xe8};
  msgpack_object opts = fx_obj(&f, ropts, sizeof ropts);
  CHECK(ms_enc_request(&f.pk, MS_MAX_ID, ms_str_c("billing"),
                       ms_str_c("invoice.create"), &data, 2500,
                       &opts) == 0);
  for (int dir = 0; dir < 2; dir++) {
    CHECK(decode_and_json(&f, (ms_dir)dir, &m) == 0);
    CHECK_EQ_INT(m.type, MS_MSG_REQUEST);
    CHECK(m.id == MS_MAX_ID);
    CHECK(str_is(m.name, "billing"));
    CHECK(str_is(m.event, "invoice.create"));
    CHECK(msgpack_object_equal(m.data, data));
    CHECK_EQ_INT(m.timeout_ms, 2500);
    uint64_t late = 0;
    CHECK_EQ_INT(ms_map_get_u64(&m.opts, "late_ms", &late), 0);
    CHECK_EQ_INT(late, 1000);
  }
  fx_free(&f);
}

static void request_raw_matches_request(void) {
  fixture f, g;
  fx_init(&f);
  fx_init(&g);
  msgpack_object data = fx_obj(&f, DATA, sizeof DATA);
  CHECK(ms_enc_request(&f.pk, 42, ms_str_c("svc"), ms_str_c("ev"), &data, 0,
                       NULL) == 0);
  CHECK(ms_enc_request_raw(&g.pk, 42, ms_str_c("svc"), ms_str_c("ev"), DATA,
                           sizeof DATA, 0, NULL, 0) == 0);
  CHECK_MEM(f.sb.data, f.sb.size, g.sb.data, g.sb.size);
  /* NULL data -> nil, NULL opts -> {} */
  msgpack_sbuffer_clear(&g.sb);
  CHECK(ms_enc_request_raw(&g.pk, 1, ms_str_c("s"), ms_str_c("e"), NULL, 0,
                           7, NULL, 0) == 0);
  static const uint8_t want[] = {0x97, 0x03, 0x01, 0xa1, 's',
                                 0xa1, 'e',  0xc0, 0x07, 0x80};
  CHECK_MEM(g.sb.data, g.sb.size, want, sizeof want);
  fx_free(&f);
  fx_free(&g);
}

static void response_round_trips_and_raw_matches(void) {
  fixture f, g;
  ms_msg m;
  fx_init(&f);
  fx_init(&g);
  msgpack_object data = fx_obj(&f, DATA, sizeof DATA);
  CHECK(ms_enc_response(&f.pk, 9, &data) == 0);
  CHECK(ms_enc_response_raw(&g.pk, 9, DATA, sizeof DATA) == 0);
  CHECK_MEM(f.sb.data, f.sb.size, g.sb.data, g.sb.size);
  for (int dir = 0; dir < 2; dir++) {
    CHECK(decode_and_json(&f, (ms_dir)dir, &m) == 0);
    CHECK_EQ_INT(m.type, MS_MSG_RESPONSE);
    CHECK_EQ_INT(m.id, 9);
    CHECK(msgpack_object_equal(m.data, data));
  }
  fx_free(&f);
  fx_free(&g);
}

static void error_round_trips_with_id_zero_and_nil_data(void) {
  fixture f, g;
  ms_msg m;
  fx_init(&f);
  fx_init(&g);
  CHECK(ms_enc_error(&f.pk, 0, ms_str_c("BAD_REQUEST"),
                     ms_str_c("HELLO first"), NULL) == 0);
  static const uint8_t want_tail = 0xc0;
  CHECK(f.sb.size > 0 && (uint8_t)f.sb.data[f.sb.size - 1] == want_tail);
  for (int dir = 0; dir < 2; dir++) {
    CHECK(decode_and_json(&f, (ms_dir)dir, &m) == 0);
    CHECK_EQ_INT(m.type, MS_MSG_ERROR);
    CHECK_EQ_INT(m.id, 0);
    CHECK(str_is(m.code, "BAD_REQUEST"));
    CHECK(str_is(m.message, "HELLO first"));
    CHECK_EQ_INT(m.extra.type, MSGPACK_OBJECT_NIL);
  }
  msgpack_object ed = fx_obj(&f, DATA, sizeof DATA);
  msgpack_sbuffer_clear(&f.sb);
  CHECK(ms_enc_error(&f.pk, 77, ms_str_c("REQUEST_TIMEOUT"), ms_str_c(""),
                     &ed) == 0);
  CHECK(ms_enc_error_raw(&g.pk, 77, ms_str_c("REQUEST_TIMEOUT"),
                         ms_str_c(""), DATA, sizeof DATA) == 0);
  CHECK_MEM(f.sb.data, f.sb.size, g.sb.data, g.sb.size);
  CHECK(decode_and_json(&f, MS_DIR_TO_CLIENT, &m) == 0);
  CHECK_EQ_INT(m.id, 77);
  CHECK(str_is(m.message, ""));
  CHECK(msgpack_object_equal(m.extra, ed));
  fx_free(&f);
  fx_free(&g);
}

static void cancel_ping_pong_round_trip_both_directions(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  CHECK(ms_enc_cancel(&f.pk, 123456) == 0);
  for (int dir = 0; dir < 2; dir++) {
    CHECK(decode_and_json(&f, (ms_dir)dir, &m) == 0);
    CHECK_EQ_INT(m.type, MS_MSG_CANCEL);
    CHECK_EQ_INT(m.id, 123456);
  }
  msgpack_sbuffer_clear(&f.sb);
  CHECK(ms_enc_ping(&f.pk, 7) == 0);
  static const uint8_t ping[] = {0x92, 0x0c, 0x07};
  CHECK_MEM(f.sb.data, f.sb.size, ping, sizeof ping);
  for (int dir = 0; dir < 2; dir++) {
    CHECK(decode_and_json(&f, (ms_dir)dir, &m) == 0);
    CHECK_EQ_INT(m.type, MS_MSG_PING);
    CHECK_EQ_INT(m.id, 7);
  }
  msgpack_sbuffer_clear(&f.sb);
  CHECK(ms_enc_pong(&f.pk, 0) == 0);
  for (int dir = 0; dir < 2; dir++) {
    CHECK(decode_and_json(&f, (ms_dir)dir, &m) == 0);
    CHECK_EQ_INT(m.type, MS_MSG_PONG);
    CHECK_EQ_INT(m.id, 0);
  }
  fx_free(&f);
}

static void log_round_trips_to_hub(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  msgpack_object fields = fx_obj(&f, DATA, sizeof DATA);
  CHECK(ms_enc_log(&f.pk, INT64_C(1700000000123456), 30,
                   ms_str_c("disk \xc3\xa9 almost full"), &fields) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_HUB, &m) == 0);
  CHECK_EQ_INT(m.type, MS_MSG_LOG);
  CHECK(m.ts_us == INT64_C(1700000000123456));
  CHECK_EQ_INT(m.level, 30);
  CHECK(str_is(m.message, "disk \xc3\xa9 almost full"));
  CHECK(msgpack_object_equal(m.extra, fields));
  CHECK(wrong_dir(&f, MS_DIR_TO_CLIENT, MS_MSG_LOG));
  fx_free(&f);
}

static void record_round_trips_to_client_including_marker(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  msgpack_object fields = fx_obj(&f, DATA, sizeof DATA);
  CHECK(ms_enc_record(&f.pk, 3, 1001, 1700000000000000, 20,
                      ms_str_c("billing"), ms_str_c("paid"), &fields) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_CLIENT, &m) == 0);
  CHECK_EQ_INT(m.type, MS_MSG_RECORD);
  CHECK_EQ_INT(m.id, 3);
  CHECK_EQ_INT(m.seq, 1001);
  CHECK(m.ts_us == 1700000000000000);
  CHECK_EQ_INT(m.level, 20);
  CHECK(str_is(m.name, "billing"));
  CHECK(str_is(m.message, "paid"));
  CHECK(msgpack_object_equal(m.extra, fields));
  CHECK(wrong_dir(&f, MS_DIR_TO_HUB, MS_MSG_RECORD));
  /* the live marker: level 0, empty service */
  msgpack_sbuffer_clear(&f.sb);
  CHECK(ms_enc_record(&f.pk, 3, 0, 5, 0, ms_str_c(""), ms_str_c("live"),
                      NULL) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_CLIENT, &m) == 0);
  CHECK_EQ_INT(m.level, 0);
  CHECK(str_is(m.name, ""));
  CHECK(str_is(m.message, "live"));
  CHECK(is_empty_map(&m.extra));
  fx_free(&f);
}

static void subscribe_unsubscribe_round_trip_to_hub(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  /* {"services": ["a", "b"], "min_level": 20} */
  static const uint8_t filt[] = {0x82, 0xa8, 's', 'e', 'r', 'v', 'i',
                                 'c',  'e',  's', 0x92, 0xa1, 'a', 0xa1,
                                 'b',  0xa9, 'm', 'i', 'n', '_', 'l',
                                 'e',  'v',  'e', 'l', 0x14};
  msgpack_object filter = fx_obj(&f, filt, sizeof filt);
  CHECK(ms_enc_subscribe(&f.pk, 11, ms_str_c("logs"), &filter) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_HUB, &m) == 0);
  CHECK_EQ_INT(m.type, MS_MSG_SUBSCRIBE);
  CHECK_EQ_INT(m.id, 11);
  CHECK(str_is(m.stream, "logs"));
  CHECK(msgpack_object_equal(m.extra, filter));
  CHECK(wrong_dir(&f, MS_DIR_TO_CLIENT, MS_MSG_SUBSCRIBE));
  msgpack_sbuffer_clear(&f.sb);
  CHECK(ms_enc_unsubscribe(&f.pk, 11) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_HUB, &m) == 0);
  CHECK_EQ_INT(m.type, MS_MSG_UNSUBSCRIBE);
  CHECK_EQ_INT(m.id, 11);
  CHECK(wrong_dir(&f, MS_DIR_TO_CLIENT, MS_MSG_UNSUBSCRIBE));
  fx_free(&f);
}

static void presence_round_trips_to_client(void) {
  fixture f;
  ms_msg m;
  fx_init(&f);
  static const uint8_t det[] = {0x81, 0xa6, 'r', 'e', 'a', 's', 'o', 'n',
                                0xa9, 'h',  'e', 'a', 'r', 't', 'b', 'e',
                                'a',  't'};
  msgpack_object detail = fx_obj(&f, det, sizeof det);
  CHECK(ms_enc_presence(&f.pk, 12, 4, 99, ms_str_c("down"),
                        ms_str_c("billing"), &detail) == 0);
  CHECK(decode_and_json(&f, MS_DIR_TO_CLIENT, &m) == 0);
  CHECK_EQ_INT(m.type, MS_MSG_PRESENCE);
  CHECK_EQ_INT(m.id, 12);
  CHECK_EQ_INT(m.seq, 4);
  CHECK_EQ_INT(m.ts_us, 99);
  CHECK(str_is(m.kind, "down"));
  CHECK(str_is(m.name, "billing"));
  ms_str reason;
  CHECK_EQ_INT(ms_map_get_str(&m.extra, "reason", &reason), 0);
  CHECK(str_is(reason, "heartbeat"));
  CHECK(wrong_dir(&f, MS_DIR_TO_HUB, MS_MSG_PRESENCE));
  fx_free(&f);
}

/* ---- malformed messages -------------------------------------------------- */

/* Decoding `b` must fail with MS_ERR_BAD_MESSAGE and this id_readable/id. */
static int bad_case(const uint8_t *b, size_t len, ms_dir dir, int readable,
                    uint64_t id) {
  msgpack_zone z;
  ms_msg m;
  ms_decode_error err;
  msgpack_zone_init(&z, 256);
  int rv = ms_msg_decode(&m, &z, b, len, dir, &err);
  msgpack_zone_destroy(&z);
  if (rv != MS_ERR_BAD_MESSAGE) {
    printf("#   expected a bad message, got %d\n", rv);
    return 0;
  }
  if (err.what[0] == '\0') {
    printf("#   no reason given\n");
    return 0;
  }
  if (!!err.id_readable != !!readable || (readable && err.id != id)) {
    printf("#   id_readable %d id %llu (%s)\n", err.id_readable,
           (unsigned long long)err.id, err.what);
    return 0;
  }
  return 1;
}

#define BAD(dir, readable, id, ...)                                         \
  do {                                                                      \
    static const uint8_t b_[] = {__VA_ARGS__};                              \
    CHECK(bad_case(b_, sizeof b_, dir, readable, id));                      \
  } while (0)

#define H MS_DIR_TO_HUB
#define C MS_DIR_TO_CLIENT

static void top_level_that_is_not_a_message_is_refused(void) {
  msgpack_zone z;
  ms_msg m;
  ms_decode_error err;
  BAD(H, 0, 0, 0x01);                  /* not an array */
  BAD(H, 0, 0, 0x81, 0x01, 0x02);      /* a map */
  BAD(H, 0, 0, 0x90);                  /* empty array */
  BAD(H, 0, 0, 0x91, 0x63);            /* unknown type 99 */
  BAD(H, 0, 0, 0x91, 0x00);            /* type 0 */
  BAD(H, 0, 0, 0x91, 0xff);            /* type -1 */
  BAD(H, 0, 0, 0x92, 0xa1, '3', 0x01); /* type as string */
  BAD(H, 0, 0, 0x92, 0xcb, 0x40, 0x28, 0, 0, 0, 0, 0, 0, 0x01); /* 12.0 */
  BAD(H, 0, 0, 0xc1);                  /* reserved byte */
  msgpack_zone_init(&z, 256);
  CHECK_EQ_INT(ms_msg_decode(&m, &z, (const uint8_t *)"", 0, H, &err),
               MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(err.type, 0);
  /* unknown type: the type is not reported as readable */
  static const uint8_t t99[] = {0x91, 0x63};
  CHECK_EQ_INT(ms_msg_decode(&m, &z, t99, sizeof t99, C, &err),
               MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(err.type, 0);
  /* err may be NULL */
  CHECK_EQ_INT(ms_msg_decode(&m, &z, t99, sizeof t99, C, NULL),
               MS_ERR_BAD_MESSAGE);
  msgpack_zone_destroy(&z);
}

static void wrong_direction_is_refused(void) {
  /* WELCOME sent to the hub, HELLO sent to a client */
  BAD(H, 0, 0, 0x93, 0x02, 0xa1, 'h', 0x80);
  BAD(C, 0, 0, 0x95, 0x01, 0x01, 0xa1, 's', 0xc0, 0x80);
  BAD(C, 0, 0, 0x94, 0x09, 0x01, 0xa4, 'l', 'o', 'g', 's', 0x80);
  BAD(H, 0, 0, 0x97, 0x0b, 0x01, 0x01, 0x01, 0xa2, 'u', 'p', 0xa1, 's',
      0x80);
}

static void missing_required_elements_are_bad_fields(void) {
  BAD(H, 0, 0, 0x91, 0x01);                   /* HELLO without version */
  BAD(H, 0, 0, 0x93, 0x01, 0x01, 0xa1, 's');  /* HELLO without token */
  BAD(C, 0, 0, 0x91, 0x02);                   /* WELCOME without hub_id */
  BAD(H, 1, 5, 0x94, 0x03, 0x05, 0xa1, 's', 0xa1, 'e'); /* no data */
  BAD(H, 1, 5, 0x95, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0); /* no timeout */
  BAD(H, 0, 0, 0x92, 0x04, 0x01);             /* RESPONSE without data */
  BAD(H, 0, 0, 0x93, 0x05, 0x01, 0xa1, 'C');  /* ERROR without message */
  BAD(H, 0, 0, 0x91, 0x06);                   /* CANCEL without id */
  BAD(H, 0, 0, 0x93, 0x07, 0x00, 0x0a);       /* LOG without message */
  BAD(C, 0, 0, 0x97, 0x08, 0x01, 0x01, 0x01, 0x0a, 0xa1, 's'); /* RECORD */
  BAD(H, 1, 1, 0x92, 0x09, 0x01);             /* SUBSCRIBE w/o stream */
  BAD(H, 0, 0, 0x91, 0x0c);                   /* PING without n */
  BAD(C, 0, 0, 0x96, 0x0b, 0x01, 0x01, 0x01, 0xa2, 'u', 'p'); /* PRESENCE */
}

static void request_field_types_are_checked(void) {
  /* id as a string, 0, 2^53, negative: the id is not readable */
  BAD(H, 0, 0, 0x97, 0x03, 0xa1, '5', 0xa1, 's', 0xa1, 'e', 0xc0, 0x00,
      0x80);
  BAD(H, 0, 0, 0x97, 0x03, 0x00, 0xa1, 's', 0xa1, 'e', 0xc0, 0x00, 0x80);
  BAD(H, 0, 0, 0x97, 0x03, 0xcf, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0xa1, 's',
      0xa1, 'e', 0xc0, 0x00, 0x80);
  BAD(H, 0, 0, 0x97, 0x03, 0xff, 0xa1, 's', 0xa1, 'e', 0xc0, 0x00, 0x80);
  /* readable id, bad target: empty, bad characters, not a string */
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa0, 0xa1, 'e', 0xc0, 0x00, 0x80);
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa3, 'a', ' ', 'b', 0xa1, 'e', 0xc0, 0x00,
      0x80);
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa3, 'a', '/', 'b', 0xa1, 'e', 0xc0, 0x00,
      0x80);
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0x01, 0xa1, 'e', 0xc0, 0x00, 0x80);
  /* readable id, bad event: not a string, empty */
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa1, 's', 0x07, 0xc0, 0x00, 0x80);
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa1, 's', 0xa0, 0xc0, 0x00, 0x80);
  /* timeout negative, a float, a string */
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0xff, 0x80);
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0xcb, 0x40,
      0x8f, 0x40, 0, 0, 0, 0, 0, 0x80);
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0xa1, '1',
      0x80);
  /* opts not a map */
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0x00, 0x90);
  BAD(H, 1, 5, 0x97, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0x00, 0x01);
  /* the largest id is readable */
  BAD(H, 1, MS_MAX_ID, 0x94, 0x03, 0xcf, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xa0, 0xa1, 'e');
  /* hub -> client: the id is not reported (only the hub answers) */
  BAD(C, 0, 0, 0x97, 0x03, 0x05, 0xa1, 's', 0x07, 0xc0, 0x00, 0x80);
}

static void request_target_length_is_bounded(void) {
  uint8_t b[300];
  size_t n = 0;
  msgpack_zone z;
  ms_msg m;
  ms_decode_error err;
  msgpack_zone_init(&z, 256);
  for (size_t tl = 128; tl <= 129; tl++) {
    n = 0;
    b[n++] = 0x97;
    b[n++] = 0x03;
    b[n++] = 0x05;
    b[n++] = 0xd9;
    b[n++] = (uint8_t)tl;
    memset(b + n, 'a', tl);
    n += tl;
    b[n++] = 0xa1;
    b[n++] = 'e';
    b[n++] = 0xc0;
    b[n++] = 0x00;
    b[n++] = 0x80;
    int rv = ms_msg_decode(&m, &z, b, n, H, &err);
    if (tl == 128) {
      CHECK_EQ_INT(rv, 0);
      CHECK_EQ_INT(m.name.len, 128);
    } else {
      CHECK_EQ_INT(rv, MS_ERR_BAD_MESSAGE);
      CHECK(err.id_readable && err.id == 5);
      CHECK_EQ_INT(err.type, MS_MSG_REQUEST);
    }
  }
  /* event: 256 bytes fine, 257 not */
  for (size_t el = 256; el <= 257; el++) {
    n = 0;
    b[n++] = 0x97;
    b[n++] = 0x03;
    b[n++] = 0x05;
    b[n++] = 0xa1;
    b[n++] = 's';
    b[n++] = 0xda;
    b[n++] = (uint8_t)(el >> 8);
    b[n++] = (uint8_t)el;
    CHECK(n + el + 3 <= sizeof b);
    memset(b + n, 'e', el);
    n += el;
    b[n++] = 0xc0;
    b[n++] = 0x00;
    b[n++] = 0x80;
    int rv = ms_msg_decode(&m, &z, b, n, H, &err);
    CHECK_EQ_INT(rv, el == 256 ? 0 : MS_ERR_BAD_MESSAGE);
  }
  msgpack_zone_destroy(&z);
}

static void request_bad_event_reports_what(void) {
  static const uint8_t b[] = {0x97, 0x03, 0x2a, 0xa1, 's', 0x07,
                              0xc0, 0x00, 0x80};
  msgpack_zone z;
  ms_msg m;
  ms_decode_error err;
  msgpack_zone_init(&z, 256);
  CHECK_EQ_INT(ms_msg_decode(&m, &z, b, sizeof b, H, &err),
               MS_ERR_BAD_MESSAGE);
  CHECK(err.id_readable);
  CHECK_EQ_INT(err.id, 42);
  CHECK_EQ_INT(err.type, MS_MSG_REQUEST);
  CHECK(strstr(err.what, "REQUEST") != NULL);
  CHECK(strstr(err.what, "event") != NULL);
  msgpack_zone_destroy(&z);
}

static void other_field_types_are_checked(void) {
  /* HELLO: version 0, service with a space, token an int, opts a list */
  BAD(H, 0, 0, 0x95, 0x01, 0x00, 0xa1, 's', 0xc0, 0x80);
  BAD(H, 0, 0, 0x95, 0x01, 0x01, 0xa2, 'a', ' ', 0xc0, 0x80);
  BAD(H, 0, 0, 0x95, 0x01, 0x01, 0xa0, 0xc0, 0x80);
  BAD(H, 0, 0, 0x95, 0x01, 0x01, 0xa1, 's', 0x01, 0x80);
  BAD(H, 0, 0, 0x95, 0x01, 0x01, 0xa1, 's', 0xc0, 0x90);
  /* WELCOME hub_id not a string */
  BAD(C, 0, 0, 0x93, 0x02, 0x01, 0x80);
  /* RESPONSE id 0, CANCEL id 2^53 */
  BAD(H, 0, 0, 0x93, 0x04, 0x00, 0xc0);
  BAD(H, 0, 0, 0x92, 0x06, 0xcf, 0x00, 0x20, 0, 0, 0, 0, 0, 0);
  /* ERROR: code empty, message nil, id negative */
  BAD(H, 0, 0, 0x95, 0x05, 0x01, 0xa0, 0xa0, 0xc0);
  BAD(C, 0, 0, 0x95, 0x05, 0x01, 0xa1, 'C', 0xc0, 0xc0);
  BAD(C, 0, 0, 0x95, 0x05, 0xff, 0xa1, 'C', 0xa0, 0xc0);
  /* LOG: level 0, level negative, ts negative, fields not a map */
  BAD(H, 0, 0, 0x95, 0x07, 0x00, 0x00, 0xa1, 'm', 0x80);
  BAD(H, 0, 0, 0x95, 0x07, 0x00, 0xf6, 0xa1, 'm', 0x80);
  BAD(H, 0, 0, 0x95, 0x07, 0xff, 0x0a, 0xa1, 'm', 0x80);
  BAD(H, 0, 0, 0x95, 0x07, 0x00, 0x0a, 0xa1, 'm', 0xa1, 'x');
  /* RECORD: level negative, ts nil */
  BAD(C, 0, 0, 0x98, 0x08, 0x01, 0x01, 0x01, 0xff, 0xa1, 's', 0xa1, 'm',
      0x80);
  BAD(C, 0, 0, 0x98, 0x08, 0x01, 0x01, 0xc0, 0x0a, 0xa1, 's', 0xa1, 'm',
      0x80);
  /* PING n as a string, PONG n beyond 2^53-1 */
  BAD(H, 0, 0, 0x92, 0x0c, 0xa1, '1');
  BAD(C, 0, 0, 0x92, 0x0d, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff);
  /* UNSUBSCRIBE sub_id 0 */
  BAD(H, 0, 0, 0x92, 0x0a, 0x00);
  /* PRESENCE kind empty */
  BAD(C, 0, 0, 0x97, 0x0b, 0x01, 0x01, 0x01, 0xa0, 0xa1, 's', 0x80);
}

static void subscribe_with_readable_sub_id_reports_it(void) {
  /* stream not a string, empty stream, filter not a map */
  BAD(H, 1, 9, 0x94, 0x09, 0x09, 0x01, 0x80);
  BAD(H, 1, 9, 0x94, 0x09, 0x09, 0xa0, 0x80);
  BAD(H, 1, 9, 0x94, 0x09, 0x09, 0xa4, 'l', 'o', 'g', 's', 0x92, 0x01, 0x02);
  BAD(H, 1, 9, 0x92, 0x09, 0x09);
  /* sub_id unreadable */
  BAD(H, 0, 0, 0x94, 0x09, 0x00, 0xa4, 'l', 'o', 'g', 's', 0x80);
  BAD(H, 0, 0, 0x94, 0x09, 0xa1, '9', 0xa4, 'l', 'o', 'g', 's', 0x80);
}

static void bytes_that_are_not_one_object_are_refused(void) {
  /* trailing garbage after a valid PING */
  BAD(H, 0, 0, 0x92, 0x0c, 0x07, 0x00);
  BAD(H, 0, 0, 0x92, 0x0c, 0x07, 0x92, 0x0c, 0x07);
  /* truncated */
  BAD(H, 0, 0, 0x92, 0x0c);
  BAD(H, 0, 0, 0x97, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0x00);
  BAD(H, 0, 0, 0x92, 0x0c, 0xcd, 0x01);
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xa5, 'a', 'b');
  /* array header claiming 2^32-1 elements, alone and inside a message */
  BAD(H, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff);
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00);
  /* map header claiming more pairs than bytes */
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xdf, 0x80, 0x00, 0x00, 0x00, 0x01, 0x01);
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0x81, 0x01);
  /* huge str, bin, ext lengths */
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a');
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xf0, 'a');
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01, 'a');
  /* ext8 with the length but no type byte */
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xc7, 0x00);
  /* reserved 0xc1 inside */
  BAD(H, 0, 0, 0x93, 0x04, 0x01, 0xc1);
}

/* [4, 1, data] with data `levels` arrays deep (total depth levels + 1). */
static int nested_response(size_t levels, uint8_t **out, size_t *len) {
  uint8_t *b = malloc(levels + 4);
  if (!b)
    return -1;
  size_t n = 0;
  b[n++] = 0x93;
  b[n++] = 0x04;
  b[n++] = 0x01;
  for (size_t i = 0; i + 1 < levels; i++)
    b[n++] = 0x91;
  b[n++] = 0x90;
  *out = b;
  *len = n;
  return 0;
}

static void nesting_is_bounded_at_32(void) {
  msgpack_zone z;
  ms_msg m;
  ms_decode_error err;
  uint8_t *b;
  size_t n;
  msgpack_zone_init(&z, 1024);
  /* 31 levels of data inside the message array: 32 in all, accepted */
  CHECK(nested_response(31, &b, &n) == 0);
  CHECK_EQ_INT(ms_msgpack_check(b, n), 0);
  int rv = ms_msg_decode(&m, &z, b, n, H, &err);
  free(b);
  CHECK_EQ_INT(rv, 0);
  CHECK_EQ_INT(m.data.type, MSGPACK_OBJECT_ARRAY);
  /* 33 in all */
  CHECK(nested_response(32, &b, &n) == 0);
  CHECK_EQ_INT(ms_msgpack_check(b, n), MS_ERR_BAD_MESSAGE);
  rv = ms_msg_decode(&m, &z, b, n, H, &err);
  free(b);
  CHECK_EQ_INT(rv, MS_ERR_BAD_MESSAGE);
  /* 1000 levels */
  CHECK(nested_response(1000, &b, &n) == 0);
  rv = ms_msg_decode(&m, &z, b, n, H, &err);
  free(b);
  CHECK_EQ_INT(rv, MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(err.id_readable, 0);
  msgpack_zone_destroy(&z);
}

static void check_accepts_every_format(void) {
  /* One array holding each MessagePack format once. */
  static const uint8_t b[] = {
      0xdc, 0x00, 0x1f,                         /* array16 of 31 */
      0x05, 0xe0, 0xc0, 0xc2, 0xc3,             /* fixints, nil, bools */
      0xcc, 0xff, 0xcd, 0, 1, 0xce, 0, 0, 0, 1, /* uint8..32 */
      0xcf, 0, 0, 0, 0, 0, 0, 0, 1,             /* uint64 */
      0xd0, 0x80, 0xd1, 0, 1, 0xd2, 0, 0, 0, 1, /* int8..32 */
      0xd3, 0, 0, 0, 0, 0, 0, 0, 1,             /* int64 */
      0xca, 0, 0, 0, 0,                         /* float32 */
      0xcb, 0, 0, 0, 0, 0, 0, 0, 0,             /* float64 */
      0xa1, 'a', 0xd9, 1, 'b', 0xda, 0, 1, 'c', /* str */
      0xdb, 0, 0, 0, 1, 'd',                    /* str32 */
      0xc4, 1, 'x', 0xc5, 0, 1, 'y',            /* bin8, bin16 */
      0xc6, 0, 0, 0, 1, 'z',                    /* bin32 */
      0xd4, 1, 'a', 0xd5, 1, 'a', 'b',          /* fixext1, 2 */
      0xd6, 1, 0, 0, 0, 0,                      /* fixext4 */
      0xd7, 1, 0, 0, 0, 0, 0, 0, 0, 0,          /* fixext8 */
      0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* fixext16 */
      0xc7, 1, 2, 'q', 0xc8, 0, 0, 3,           /* ext8, ext16 (empty) */
      0xc9, 0, 0, 0, 1, 4, 'r',                 /* ext32 */
      0xde, 0, 1, 0x01, 0x80,                   /* map16 {1: {}} */
  };
  CHECK_EQ_INT(ms_msgpack_check(b, sizeof b), 0);
  /* msgpack-c agrees on where the object ends */
  msgpack_zone z;
  msgpack_object o;
  size_t off = 0;
  msgpack_zone_init(&z, 1024);
  int rv = msgpack_unpack((const char *)b, sizeof b, &off, &z, &o);
  msgpack_zone_destroy(&z);
  CHECK_EQ_INT(rv, MSGPACK_UNPACK_SUCCESS);
  CHECK_EQ_INT(off, sizeof b);
  /* every proper prefix is truncated */
  for (size_t n = 0; n < sizeof b; n++)
    CHECK_EQ_INT(ms_msgpack_check(b, n), MS_ERR_BAD_MESSAGE);
}

/* ---- leniency ------------------------------------------------------------ */

static int good_case(const uint8_t *b, size_t len, ms_dir dir, ms_msg *m,
                     msgpack_zone *z) {
  ms_decode_error err;
  int rv = ms_msg_decode(m, z, b, len, dir, &err);
  if (rv != 0)
    printf("#   refused: %s\n", err.what);
  return rv == 0;
}

#define GOOD(dir, m, z, ...)                                               \
  do {                                                                     \
    static const uint8_t g_[] = {__VA_ARGS__};                             \
    CHECK(good_case(g_, sizeof g_, dir, m, z));                            \
  } while (0)

static void trailing_elements_and_optional_ones_are_accepted(void) {
  msgpack_zone z;
  ms_msg m;
  msgpack_zone_init(&z, 1024);
  /* trailing unknown elements */
  GOOD(H, &m, &z, 0x94, 0x0c, 0x05, 0xa1, 'x', 0x80);
  CHECK_EQ_INT(m.id, 5);
  GOOD(H, &m, &z, 0x98, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0x00, 0x80,
       0x92, 0x01, 0x02);
  /* opts absent / nil */
  GOOD(H, &m, &z, 0x94, 0x01, 0x01, 0xa1, 's', 0xc0);
  CHECK(is_empty_map(&m.opts));
  GOOD(H, &m, &z, 0x95, 0x01, 0x01, 0xa1, 's', 0xc0, 0xc0);
  CHECK(is_empty_map(&m.opts));
  GOOD(C, &m, &z, 0x92, 0x02, 0xa0);
  CHECK(is_empty_map(&m.opts));
  GOOD(H, &m, &z, 0x96, 0x03, 0x05, 0xa1, 's', 0xa1, 'e', 0xc0, 0x00);
  CHECK(is_empty_map(&m.opts));
  CHECK_EQ_INT(m.data.type, MSGPACK_OBJECT_NIL);
  /* error_data absent -> nil */
  GOOD(C, &m, &z, 0x94, 0x05, 0x03, 0xa1, 'C', 0xa1, 'm');
  CHECK_EQ_INT(m.extra.type, MSGPACK_OBJECT_NIL);
  /* LOG: ts nil -> 0, fields absent */
  GOOD(H, &m, &z, 0x94, 0x07, 0xc0, 0x0a, 0xa1, 'm');
  CHECK_EQ_INT(m.ts_us, 0);
  CHECK_EQ_INT(m.level, 10);
  CHECK(is_empty_map(&m.extra));
  /* SUBSCRIBE filter absent and nil; RECORD fields absent;
   * PRESENCE detail nil */
  GOOD(H, &m, &z, 0x93, 0x09, 0x04, 0xa8, 'p', 'r', 'e', 's', 'e', 'n', 'c',
       'e');
  CHECK(is_empty_map(&m.extra));
  GOOD(H, &m, &z, 0x94, 0x09, 0x04, 0xa4, 'l', 'o', 'g', 's', 0xc0);
  CHECK(is_empty_map(&m.extra));
  GOOD(C, &m, &z, 0x97, 0x08, 0x01, 0x01, 0x01, 0x0a, 0xa1, 's', 0xa1, 'm');
  CHECK(is_empty_map(&m.extra));
  GOOD(C, &m, &z, 0x97, 0x0b, 0x01, 0x01, 0x01, 0xa2, 'u', 'p', 0xa0, 0xc0);
  CHECK(is_empty_map(&m.extra));
  /* integers in any width, including signed formats holding values >= 0 */
  GOOD(H, &m, &z, 0x92, 0x0c, 0xd0, 0x05);
  CHECK_EQ_INT(m.id, 5);
  GOOD(H, &m, &z, 0x92, 0x06, 0xd3, 0, 0, 0, 0, 0, 0, 0x01, 0x00);
  CHECK_EQ_INT(m.id, 256);
  GOOD(H, &m, &z, 0x94, 0x07, 0xd2, 0, 0, 0, 0, 0xd1, 0, 40, 0xa0);
  CHECK_EQ_INT(m.level, 40);
  CHECK_EQ_INT(m.ts_us, 0);
  /* token: an empty str8 is a string, not nil */
  GOOD(H, &m, &z, 0x94, 0x01, 0x01, 0xa1, 's', 0xd9, 0x00);
  CHECK(m.token.ptr != NULL && m.token.len == 0);
  msgpack_zone_destroy(&z);
}

/* ---- map readers --------------------------------------------------------- */

static void map_readers_check_types(void) {
  fixture f;
  fx_init(&f);
  /* {"a": 1, "b": -2, "c": true, "d": "x", "e": nil, "a": 9, 1: 2} */
  static const uint8_t mp[] = {0x87, 0xa1, 'a', 0x01, 0xa1, 'b', 0xfe,
                               0xa1, 'c',  0xc3, 0xa1, 'd', 0xa1, 'x',
                               0xa1, 'e',  0xc0, 0xa1, 'a', 0x09, 0x01,
                               0x02};
  msgpack_object m = fx_obj(&f, mp, sizeof mp);
  uint64_t u = 0;
  int64_t i = 0;
  int bo = 0;
  ms_str s;
  CHECK_EQ_INT(ms_map_get_u64(&m, "a", &u), 0);
  CHECK_EQ_INT(u, 1); /* the first of duplicate keys */
  CHECK_EQ_INT(ms_map_get_u64(&m, "b", &u), MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_map_get_i64(&m, "b", &i), 0);
  CHECK_EQ_INT(i, -2);
  CHECK_EQ_INT(ms_map_get_i64(&m, "a", &i), 0);
  CHECK_EQ_INT(i, 1);
  CHECK_EQ_INT(ms_map_get_bool(&m, "c", &bo), 0);
  CHECK_EQ_INT(bo, 1);
  CHECK_EQ_INT(ms_map_get_bool(&m, "a", &bo), MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_map_get_str(&m, "d", &s), 0);
  CHECK(str_is(s, "x"));
  CHECK_EQ_INT(ms_map_get_str(&m, "a", &s), MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_map_get_u64(&m, "e", &u), MS_ERR_NOT_FOUND);
  CHECK_EQ_INT(ms_map_get_u64(&m, "zz", &u), MS_ERR_NOT_FOUND);
  CHECK(ms_map_get(&m, "e") != NULL);
  CHECK(ms_map_get(&m, "") == NULL);
  CHECK(ms_map_get(NULL, "a") == NULL);
  msgpack_object notmap = fx_obj(&f, "\x91\xa1\x61", 3);
  CHECK(ms_map_get(&notmap, "a") == NULL);
  CHECK_EQ_INT(ms_map_get_u64(&notmap, "a", &u), MS_ERR_NOT_FOUND);

  /* a hand-built map whose integers carry the "wrong" sign tag */
  msgpack_object_kv kv[2];
  memset(kv, 0, sizeof kv);
  kv[0].key.type = MSGPACK_OBJECT_STR;
  kv[0].key.via.str.ptr = "n";
  kv[0].key.via.str.size = 1;
  kv[0].val.type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
  kv[0].val.via.i64 = 5;
  kv[1].key = kv[0].key;
  kv[1].key.via.str.ptr = "big";
  kv[1].key.via.str.size = 3;
  kv[1].val.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
  kv[1].val.via.u64 = UINT64_MAX;
  msgpack_object hm;
  hm.type = MSGPACK_OBJECT_MAP;
  hm.via.map.size = 2;
  hm.via.map.ptr = kv;
  CHECK_EQ_INT(ms_map_get_u64(&hm, "n", &u), 0);
  CHECK_EQ_INT(u, 5);
  CHECK_EQ_INT(ms_map_get_u64(&hm, "big", &u), 0);
  CHECK(u == UINT64_MAX);
  CHECK_EQ_INT(ms_map_get_i64(&hm, "big", &i), MS_ERR_BAD_MESSAGE);
  fx_free(&f);
}

static void encoders_write_every_element(void) {
  fixture f;
  fx_init(&f);
  /* [5, 3, "C", "m", nil] */
  CHECK(ms_enc_error(&f.pk, 3, ms_str_c("C"), ms_str_c("m"), NULL) == 0);
  static const uint8_t e1[] = {0x95, 0x05, 0x03, 0xa1, 'C', 0xa1, 'm', 0xc0};
  CHECK_MEM(f.sb.data, f.sb.size, e1, sizeof e1);
  msgpack_sbuffer_clear(&f.sb);
  /* [9, 1, "logs", {}] */
  CHECK(ms_enc_subscribe(&f.pk, 1, ms_str_c("logs"), NULL) == 0);
  static const uint8_t e2[] = {0x94, 0x09, 0x01, 0xa4, 'l',
                               'o',  'g',  's',  0x80};
  CHECK_MEM(f.sb.data, f.sb.size, e2, sizeof e2);
  msgpack_sbuffer_clear(&f.sb);
  /* [7, 0, 10, "", {}] */
  CHECK(ms_enc_log(&f.pk, 0, 10, ms_str_c(""), NULL) == 0);
  static const uint8_t e3[] = {0x95, 0x07, 0x00, 0x0a, 0xa0, 0x80};
  CHECK_MEM(f.sb.data, f.sb.size, e3, sizeof e3);
  msgpack_sbuffer_clear(&f.sb);
  /* response_raw with no data: nil */
  CHECK(ms_enc_response_raw(&f.pk, 2, NULL, 0) == 0);
  static const uint8_t e4[] = {0x93, 0x04, 0x02, 0xc0};
  CHECK_MEM(f.sb.data, f.sb.size, e4, sizeof e4);
  fx_free(&f);
}

/* The decoder hands out the exact bytes of data / error_data / a LOG's
 * fields, which a hub passes on without re-encoding. */
static void data_raw_spans_are_the_encoded_payload(void) {
  msgpack_sbuffer sb, payload;
  msgpack_sbuffer_init(&sb);
  msgpack_sbuffer_init(&payload);
  msgpack_packer pk, pp;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_packer_init(&pp, &payload, msgpack_sbuffer_write);
  msgpack_pack_map(&pp, 2);
  msgpack_pack_str_with_body(&pp, "k", 1);
  msgpack_pack_array(&pp, 2);
  msgpack_pack_int(&pp, -5);
  msgpack_pack_bin_with_body(&pp, "\x00\x01", 2);
  msgpack_pack_str_with_body(&pp, "z", 1);
  msgpack_pack_double(&pp, 1.5);
  msgpack_zone z;
  msgpack_zone_init(&z, 1024);
  ms_msg m;
  /* REQUEST: data is element 4, with opts after it. */
  ms_enc_request_raw(&pk, 7, ms_str_c("svc"), ms_str_c("ev"),
                     (const uint8_t *)payload.data, payload.size, 100, NULL, 0);
  CHECK_EQ_INT(ms_msg_decode(&m, &z, (const uint8_t *)sb.data, sb.size,
                             MS_DIR_TO_HUB, NULL), 0);
  CHECK(m.data_raw.ptr != NULL);
  CHECK_MEM(m.data_raw.ptr, m.data_raw.len, payload.data, payload.size);
  /* RESPONSE: data is the last element. */
  sb.size = 0;
  ms_enc_response_raw(&pk, 7, (const uint8_t *)payload.data, payload.size);
  CHECK_EQ_INT(ms_msg_decode(&m, &z, (const uint8_t *)sb.data, sb.size,
                             MS_DIR_TO_CLIENT, NULL), 0);
  CHECK_MEM(m.data_raw.ptr, m.data_raw.len, payload.data, payload.size);
  /* ERROR with error_data; and without it (absent: no span). */
  sb.size = 0;
  ms_enc_error_raw(&pk, 7, ms_str_c("X"), ms_str_c("m"),
                   (const uint8_t *)payload.data, payload.size);
  CHECK_EQ_INT(ms_msg_decode(&m, &z, (const uint8_t *)sb.data, sb.size,
                             MS_DIR_TO_HUB, NULL), 0);
  CHECK_MEM(m.extra_raw.ptr, m.extra_raw.len, payload.data, payload.size);
  sb.size = 0;
  msgpack_pack_array(&pk, 4);
  msgpack_pack_int(&pk, 5);
  msgpack_pack_int(&pk, 7);
  msgpack_pack_str_with_body(&pk, "X", 1);
  msgpack_pack_str_with_body(&pk, "m", 1);
  CHECK_EQ_INT(ms_msg_decode(&m, &z, (const uint8_t *)sb.data, sb.size,
                             MS_DIR_TO_HUB, NULL), 0);
  CHECK(m.extra_raw.ptr == NULL);
  /* LOG with fields (a map, last); with nil fields and none: no span. */
  sb.size = 0;
  ms_enc_log_raw(&pk, 0, 20, ms_str_c("m"), (const uint8_t *)payload.data,
                 payload.size);
  CHECK_EQ_INT(ms_msg_decode(&m, &z, (const uint8_t *)sb.data, sb.size,
                             MS_DIR_TO_HUB, NULL), 0);
  CHECK_MEM(m.extra_raw.ptr, m.extra_raw.len, payload.data, payload.size);
  CHECK(m.data_raw.ptr == NULL);
  for (int nil = 1; nil >= 0; nil--) {
    sb.size = 0;
    msgpack_pack_array(&pk, nil ? 5 : 4);
    msgpack_pack_int(&pk, MS_MSG_LOG);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 20);
    msgpack_pack_str_with_body(&pk, "m", 1);
    if (nil)
      msgpack_pack_nil(&pk);
    CHECK_EQ_INT(ms_msg_decode(&m, &z, (const uint8_t *)sb.data, sb.size,
                               MS_DIR_TO_HUB, NULL), 0);
    CHECK(m.extra_raw.ptr == NULL);
  }
  msgpack_zone_destroy(&z);
  msgpack_sbuffer_destroy(&sb);
  msgpack_sbuffer_destroy(&payload);
}

static const ms_test_case tests[] = {
    TEST(data_raw_spans_are_the_encoded_payload),
    TEST(hello_round_trips_to_hub),
    TEST(hello_nil_token_and_null_opts),
    TEST(welcome_round_trips_to_client),
    TEST(request_round_trips_both_directions),
    TEST(request_raw_matches_request),
    TEST(response_round_trips_and_raw_matches),
    TEST(error_round_trips_with_id_zero_and_nil_data),
    TEST(cancel_ping_pong_round_trip_both_directions),
    TEST(log_round_trips_to_hub),
    TEST(record_round_trips_to_client_including_marker),
    TEST(subscribe_unsubscribe_round_trip_to_hub),
    TEST(presence_round_trips_to_client),
    TEST(top_level_that_is_not_a_message_is_refused),
    TEST(wrong_direction_is_refused),
    TEST(missing_required_elements_are_bad_fields),
    TEST(request_field_types_are_checked),
    TEST(request_target_length_is_bounded),
    TEST(request_bad_event_reports_what),
    TEST(other_field_types_are_checked),
    TEST(subscribe_with_readable_sub_id_reports_it),
    TEST(bytes_that_are_not_one_object_are_refused),
    TEST(nesting_is_bounded_at_32),
    TEST(check_accepts_every_format),
    TEST(trailing_elements_and_optional_ones_are_accepted),
    TEST(map_readers_check_types),
    TEST(encoders_write_every_element),
};

MS_TEST_MAIN(tests)
