/* JSON encoding: PROTOCOL.md's mapping between MessagePack and JSON, and
 * the limits on JSON input. */
#include "ms_test.h"

#include <microstream/ms_codec.h>

#include "ms_json.h"

#include <math.h>

/* MessagePack bytes -> JSON text; compares with `want`. */
static int to_json_is(const void *mp, size_t len, const char *want) {
  msgpack_sbuffer out;
  msgpack_sbuffer_init(&out);
  int rv = ms_msgpack_bytes_to_json(mp, len, &out);
  int ok = rv == 0 && out.size == strlen(want) &&
           memcmp(out.data, want, out.size) == 0;
  if (!ok)
    printf("#   rv %d, got '%.*s', want '%s'\n", rv, (int)out.size,
           out.data ? out.data : "", want);
  msgpack_sbuffer_destroy(&out);
  return ok;
}

/* JSON text -> MessagePack bytes; compares with `want`. */
static int to_mp_is(const char *json, const void *want, size_t want_len) {
  msgpack_sbuffer out;
  char what[128];
  msgpack_sbuffer_init(&out);
  int rv = ms_json_to_msgpack(json, strlen(json), &out, what, sizeof what);
  int ok = rv == 0 && out.size == want_len &&
           memcmp(out.data, want, want_len) == 0;
  if (!ok) {
    printf("#   rv %d (%s), got", rv, rv ? what : "");
    for (size_t i = 0; i < out.size; i++)
      printf(" %02x", (unsigned char)out.data[i]);
    printf("\n");
  }
  msgpack_sbuffer_destroy(&out);
  return ok;
}

/* JSON text of len bytes must be refused, leaving `out` as it was. */
static int json_refused(const char *json, size_t len) {
  msgpack_sbuffer out;
  char what[128];
  msgpack_sbuffer_init(&out);
  msgpack_sbuffer_write(&out, "keep", 4);
  what[0] = '\0';
  int rv = ms_json_to_msgpack(json, len, &out, what, sizeof what);
  int ok = rv == MS_ERR_BAD_MESSAGE && out.size == 4 && what[0] != '\0' &&
           memchr(what, '\0', sizeof what) != NULL;
  if (!ok)
    printf("#   rv %d size %zu what '%s'\n", rv, out.size, what);
  msgpack_sbuffer_destroy(&out);
  return ok;
}

#define MP(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static void bin_and_ext_become_base64(void) {
  CHECK(to_json_is(MP(0xc4, 3, 'a', 'b', 'c'), "\"YWJj\""));
  CHECK(to_json_is(MP(0xc4, 1, 0xff), "\"/w==\""));
  CHECK(to_json_is(MP(0xc4, 0), "\"\""));
  /* ext: only its data, not its type */
  CHECK(to_json_is(MP(0xd6, 0x01, 'a', 'b', 'c', 'd'), "\"YWJjZA==\""));
  CHECK(to_json_is(MP(0xc7, 2, 0x7f, 'h', 'i'), "\"aGk=\""));
}

static void long_bin_is_one_base64_string(void) {
  /* longer than one internal chunk, and not a multiple of 3 */
  static uint8_t mp[3 + 2000];
  mp[0] = 0xc5;
  mp[1] = 2000 >> 8;
  mp[2] = 2000 & 0xff;
  memset(mp + 3, 0, 2000);
  msgpack_sbuffer out;
  msgpack_sbuffer_init(&out);
  CHECK_EQ_INT(ms_msgpack_bytes_to_json(mp, sizeof mp, &out), 0);
  /* 2000 zero bytes: 666 "AAAA" groups then "AAA=" */
  CHECK_EQ_INT(out.size, 2 + 4 * 667);
  CHECK(memcmp(out.data + out.size - 5, "AAA=\"", 5) == 0);
  for (size_t i = 1; i < out.size - 5; i++)
    CHECK(out.data[i] == 'A');
  msgpack_sbuffer_destroy(&out);
}

static void integers_beyond_2_53_become_strings(void) {
  CHECK(to_json_is(MP(0xcf, 0x10, 0, 0, 0, 0, 0, 0, 0),
                   "\"1152921504606846976\"")); /* 2^60 */
  CHECK(to_json_is(MP(0xd3, 0xf0, 0, 0, 0, 0, 0, 0, 0),
                   "\"-1152921504606846976\""));
  CHECK(to_json_is(MP(0xcf, 0, 0x20, 0, 0, 0, 0, 0, 0),
                   "9007199254740992")); /* 2^53 itself is exact */
  CHECK(to_json_is(MP(0xcf, 0, 0x20, 0, 0, 0, 0, 0, 1),
                   "\"9007199254740993\""));
  CHECK(to_json_is(MP(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
                   "\"18446744073709551615\""));
  CHECK(to_json_is(MP(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0),
                   "\"-9223372036854775808\""));
  CHECK(to_json_is(MP(0x93, 0x00, 0x7f, 0xe0), "[0,127,-32]"));
}

static void nan_and_infinity_become_null(void) {
  CHECK(to_json_is(MP(0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0), "null"));
  CHECK(to_json_is(MP(0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0), "null"));
  CHECK(to_json_is(MP(0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0), "null"));
  CHECK(to_json_is(MP(0xca, 0x7f, 0xc0, 0, 0), "null"));
}

static void floats_print_shortest_and_stay_floats(void) {
  CHECK(to_json_is(MP(0xcb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a),
                   "0.1"));
  CHECK(to_json_is(MP(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0), "1.0"));
  CHECK(to_json_is(MP(0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0), "-0.0"));
  CHECK(to_json_is(MP(0xca, 0x3f, 0xc0, 0, 0), "1.5"));
  /* float32 0.1 prints as the float, not as its double expansion */
  CHECK(to_json_is(MP(0xca, 0x3d, 0xcc, 0xcc, 0xcd), "0.1"));
  CHECK(to_json_is(MP(0xcb, 0x3f, 0xd3, 0x33, 0x33, 0x33, 0x33, 0x33, 0x34),
                   "0.30000000000000004")); /* needs all 17 digits */
  CHECK(to_json_is(MP(0xcb, 0x44, 0x80, 0xf0, 0xcf, 0x06, 0x4d, 0xd5, 0x92),
                   "1e+22"));
  /* and read back as float64 */
  CHECK(to_mp_is("1.0", MP(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0)));
  CHECK(to_mp_is("-0.0", MP(0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0)));
}

static void non_string_keys_become_their_json_text(void) {
  /* {1: "a", [1, "x"]: true, nil: 1, "k": 2} */
  CHECK(to_json_is(MP(0x84, 0x01, 0xa1, 'a', 0x92, 0x01, 0xa1, 'x', 0xc3,
                      0xc0, 0x01, 0xa1, 'k', 0x02),
                   "{\"1\":\"a\",\"[1,\\\"x\\\"]\":true,\"null\":1,"
                   "\"k\":2}"));
  /* keys whose JSON form is already a string are not quoted twice: bin
   * and ext keys are their base64, large integers their digits */
  CHECK(to_json_is(MP(0x81, 0xc4, 1, 'a', 0x01), "{\"YQ==\":1}"));
  CHECK(to_json_is(MP(0x81, 0xd4, 7, 'a', 0x01), "{\"YQ==\":1}"));
  CHECK(to_json_is(MP(0x81, 0xcf, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x01),
                   "{\"1152921504606846976\":1}"));
  /* keys inside keys: the third level of array/map key is "?" */
  CHECK(to_json_is(MP(0x81, 0x81, 0x81, 0x81, 0x01, 0x02, 0x03, 0x04, 0x05),
                   "{\"{\\\"{\\\\\\\"?\\\\\\\":3}\\\":4}\":5}"));
  CHECK(to_json_is(MP(0x81, 0x81, 0x92, 0x01, 0x02, 0x03, 0x04),
                   "{\"{\\\"[1,2]\\\":3}\":4}"));
  CHECK(to_json_is(MP(0x82, 0xff, 0x01, 0xc2, 0x02),
                   "{\"-1\":1,\"false\":2}"));
}

static void nested_values_map_to_compact_json(void) {
  /* [1, {"a": [nil, true, false, -1]}, "s", {}] */
  CHECK(to_json_is(MP(0x94, 0x01, 0x81, 0xa1, 'a', 0x94, 0xc0, 0xc3, 0xc2,
                      0xff, 0xa1, 's', 0x80),
                   "[1,{\"a\":[null,true,false,-1]},\"s\",{}]"));
}

static void strings_are_escaped_and_kept_valid_utf8(void) {
  CHECK(to_json_is(MP(0xa6, '\n', 0x01, '"', '\\', '/', 0x7f),
                   "\"\\n\\u0001\\\"\\\\/\x7f\""));
  CHECK(to_json_is(MP(0xa4, '\b', '\f', '\r', '\t'), "\"\\b\\f\\r\\t\""));
  CHECK(to_json_is(MP(0xa3, 'a', 0x00, 'b'), "\"a\\u0000b\""));
  /* valid multi-byte sequences pass through */
  CHECK(to_json_is(MP(0xa6, 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80),
                   "\"\xc3\xa9\xf0\x9f\x98\x80\""));
  /* each invalid byte -> U+FFFD: stray byte, truncated sequence, overlong,
   * surrogate */
  CHECK(to_json_is(MP(0xa3, 'a', 0xff, 'b'), "\"a\xef\xbf\xbd" "b\""));
  CHECK(to_json_is(MP(0xa2, 0xe2, 0x82), "\"\xef\xbf\xbd\xef\xbf\xbd\""));
  CHECK(to_json_is(MP(0xa2, 0xc0, 0xaf), "\"\xef\xbf\xbd\xef\xbf\xbd\""));
  CHECK(to_json_is(MP(0xa3, 0xed, 0xa0, 0x80),
                   "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""));
  /* the result is JSON that parses back */
  msgpack_sbuffer out, mp;
  msgpack_sbuffer_init(&out);
  msgpack_sbuffer_init(&mp);
  static const uint8_t bad[] = {0x81, 0xa2, 0xfe, 'k', 0xa2, 'v', 0x80};
  CHECK_EQ_INT(ms_msgpack_bytes_to_json(bad, sizeof bad, &out), 0);
  CHECK_EQ_INT(ms_json_to_msgpack(out.data, out.size, &mp, NULL, 0), 0);
  static const uint8_t want[] = {0x81, 0xa4, 0xef, 0xbf, 0xbd, 'k',
                                 0xa4, 'v',  0xef, 0xbf, 0xbd};
  CHECK_MEM(mp.data, mp.size, want, sizeof want);
  msgpack_sbuffer_destroy(&out);
  msgpack_sbuffer_destroy(&mp);
}

static void json_values_map_to_msgpack(void) {
  CHECK(to_mp_is("[1,-2,1.5,\"x\",true,false,null,{\"k\":[]}]",
                 MP(0x98, 0x01, 0xfe, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0,
                    0xa1, 'x', 0xc3, 0xc2, 0xc0, 0x81, 0xa1, 'k', 0x90)));
  CHECK(to_mp_is(" [ 300 , -300 ] ", MP(0x92, 0xcd, 0x01, 0x2c, 0xd1, 0xfe,
                                         0xd4)));
  CHECK(to_mp_is("9223372036854775807",
                 MP(0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)));
  CHECK(to_mp_is("-9223372036854775808",
                 MP(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0)));
  CHECK(to_mp_is("\"s\"", MP(0xa1, 's')));
  /* a duplicate key: the last one wins, as in JSON.parse */
  CHECK(to_mp_is("{\"a\":1,\"a\":2}", MP(0x81, 0xa1, 'a', 0x02)));
}

static void json_strings_with_nul_and_escapes(void) {
  CHECK(to_mp_is("\"a\\u0000b\"", MP(0xa3, 'a', 0x00, 'b')));
  CHECK(to_mp_is("\"\\u00e9\"", MP(0xa2, 0xc3, 0xa9)));
  CHECK(to_mp_is("\"\\ud83d\\ude00\"", MP(0xa4, 0xf0, 0x9f, 0x98, 0x80)));
  CHECK(to_mp_is("\"\\n\\t\\\"\\\\\\/\"", MP(0xa5, '\n', '\t', '"', '\\',
                                             '/')));
  /* A NUL inside a map key is written as valid JSON, but jansson cannot
   * read one back: such a key is refused on input. */
  CHECK(to_json_is(MP(0x81, 0xa2, 'k', 0x00, 0x01), "{\"k\\u0000\":1}"));
  CHECK(json_refused("{\"k\\u0000\":1}", 13));
}

static void invalid_json_is_refused(void) {
  CHECK(json_refused("[1,", 3));
  CHECK(json_refused("", 0));
  CHECK(json_refused("[1] [2]", 7));   /* two texts */
  CHECK(json_refused("[1]x", 4));
  CHECK(json_refused("{'a':1}", 7));
  CHECK(json_refused("[NaN]", 5));
  CHECK(json_refused("[1e999]", 7));
  CHECK(json_refused("[18446744073709551616]", 22));
  CHECK(json_refused("\"\\ud800\"", 8)); /* lone surrogate */
  CHECK(json_refused("\"\x01\"", 3));    /* raw control character */
  CHECK(json_refused("[1]\0", 4));      /* NUL after the text */
}

static void refused_text_leaves_an_empty_buffer_unallocated(void) {
  /* Callers may skip msgpack_sbuffer_destroy after a refusal. */
  static const char *const bad[] = {"[1,", "{\"a\":", "\"\\x\"", "[[[[[[[[[[[{"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    msgpack_sbuffer e;
    msgpack_sbuffer_init(&e);
    CHECK_EQ_INT(ms_json_to_msgpack(bad[i], strlen(bad[i]), &e, NULL, 0),
                 MS_ERR_BAD_MESSAGE);
    CHECK(e.data == NULL);
    CHECK_EQ_INT(e.size, 0);
  }
}

static void long_strings_with_special_bytes_at_every_offset(void) {
  /* The string scans read eight bytes at a time: a quote, backslash,
   * control or non-ASCII byte at any offset is still seen, both ways. */
  for (size_t at = 0; at < 24; at++) {
    static const char *const specials[] = {"\\\"", "\\\\", "\\n", "\\u00e9",
                                           "\xc3\xa9", "\\u0001"};
    static const char *const decoded[] = {"\"", "\\", "\n", "\xc3\xa9",
                                          "\xc3\xa9", "\x01"};
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
      char json[128], want[64];
      int n = snprintf(json, sizeof json, "\"%.*s%s%.*s\"", (int)at,
                       "abcdefghijklmnopqrstuvwxyz", specials[k], 9,
                       "012345678");
      int wn = snprintf(want, sizeof want, "%.*s%s012345678", (int)at,
                        "abcdefghijklmnopqrstuvwxyz", decoded[k]);
      msgpack_sbuffer mp, js;
      msgpack_sbuffer_init(&mp);
      msgpack_sbuffer_init(&js);
      CHECK_EQ_INT(ms_json_to_msgpack(json, (size_t)n, &mp, NULL, 0), 0);
      msgpack_zone z;
      msgpack_zone_init(&z, 256);
      msgpack_object o;
      size_t off = 0;
      CHECK_EQ_INT(msgpack_unpack(mp.data, mp.size, &off, &z, &o),
                   MSGPACK_UNPACK_SUCCESS);
      CHECK_EQ_INT(o.type, MSGPACK_OBJECT_STR);
      CHECK_MEM(o.via.str.ptr, o.via.str.size, want, (size_t)wn);
      /* And back: the same text as the escapes the writer uses. */
      CHECK_EQ_INT(ms_msgpack_to_json(&o, &js), 0);
      msgpack_sbuffer mp2;
      msgpack_sbuffer_init(&mp2);
      CHECK_EQ_INT(ms_json_to_msgpack(js.data, js.size, &mp2, NULL, 0), 0);
      CHECK_MEM(mp2.data, mp2.size, mp.data, mp.size);
      msgpack_sbuffer_destroy(&mp2);
      msgpack_zone_destroy(&z);
      msgpack_sbuffer_destroy(&mp);
      msgpack_sbuffer_destroy(&js);
    }
    /* A raw control byte or a bad UTF-8 byte at that offset: refused. */
    char bad[64];
    int n = snprintf(bad, sizeof bad, "\"%.*sX0123456789\"", (int)at,
                     "abcdefghijklmnopqrstuvwxyz");
    msgpack_sbuffer mp;
    msgpack_sbuffer_init(&mp);
    bad[1 + at] = '\t';
    CHECK_EQ_INT(ms_json_to_msgpack(bad, (size_t)n, &mp, NULL, 0),
                 MS_ERR_BAD_MESSAGE);
    bad[1 + at] = (char)0xff;
    CHECK_EQ_INT(ms_json_to_msgpack(bad, (size_t)n, &mp, NULL, 0),
                 MS_ERR_BAD_MESSAGE);
    msgpack_sbuffer_destroy(&mp);
  }
}

static void invalid_utf8_json_is_refused(void) {
  CHECK(json_refused("\"\xff\"", 3));
  CHECK(json_refused("\"\xc3\"", 3));
  CHECK(json_refused("\"\xed\xa0\x80\"", 5));
  CHECK(json_refused("{\"\xc0\xaf\":1}", 8));
}

static void json_deeper_than_64_is_refused(void) {
  char buf[2 * 1000 + 1];
  for (int depth = 64; depth <= 65; depth++) {
    memset(buf, '[', (size_t)depth);
    memset(buf + depth, ']', (size_t)depth);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    int rv = ms_json_to_msgpack(buf, 2 * (size_t)depth, &out, NULL, 0);
    msgpack_sbuffer_destroy(&out);
    CHECK_EQ_INT(rv, depth == 64 ? 0 : MS_ERR_BAD_MESSAGE);
  }
  memset(buf, '[', 1000);
  memset(buf + 1000, ']', 1000);
  CHECK(json_refused(buf, 2000));
  /* objects count too */
  char obj[65 * 6 + 8];
  size_t n = 0;
  for (int i = 0; i < 65; i++) {
    memcpy(obj + n, "{\"a\":", 5);
    n += 5;
  }
  obj[n++] = '1';
  memset(obj + n, '}', 65);
  n += 65;
  CHECK(json_refused(obj, n));
}

static void msgpack_input_must_be_one_object(void) {
  msgpack_sbuffer out;
  msgpack_sbuffer_init(&out);
  static const uint8_t two[] = {0x01, 0x02};
  static const uint8_t trunc[] = {0x92, 0x01};
  static const uint8_t huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  CHECK_EQ_INT(ms_msgpack_bytes_to_json(two, sizeof two, &out),
               MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_msgpack_bytes_to_json(trunc, sizeof trunc, &out),
               MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_msgpack_bytes_to_json(huge, sizeof huge, &out),
               MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(out.size, 0);
  msgpack_sbuffer_destroy(&out);
}

static void object_api_appends_to_existing_output(void) {
  msgpack_object o;
  msgpack_sbuffer out;
  memset(&o, 0, sizeof o);
  o.type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
  o.via.i64 = 5; /* hand-built: a NEGATIVE tag on a non-negative value */
  msgpack_sbuffer_init(&out);
  msgpack_sbuffer_write(&out, "x=", 2);
  CHECK_EQ_INT(ms_msgpack_to_json(&o, &out), 0);
  CHECK_MEM(out.data, out.size, "x=5", 3);
  o.type = MSGPACK_OBJECT_STR; /* empty string with a NULL pointer */
  o.via.str.ptr = NULL;
  o.via.str.size = 0;
  CHECK_EQ_INT(ms_msgpack_to_json(&o, &out), 0);
  CHECK_MEM(out.data, out.size, "x=5\"\"", 5);
  msgpack_sbuffer_destroy(&out);
}


/* ---- Socket.IO's JSON (ms_json_js_to_mp): read as JavaScript reads it */

/* A Socket.IO text read by `engine`, written back as JSON (which shows
 * integers without and floats with a '.'); compares with `want`. */
static int js_is_e(const char *json, size_t len, ms_json_engine engine,
                   const char *want) {
  ms_mpbuf mp;
  msgpack_sbuffer out;
  ms_mpbuf_init(&mp, NULL);
  msgpack_sbuffer_init(&out);
  int rv = ms_json_js_to_mp(json, len, &mp, 42, engine);
  if (rv == 0)
    rv = ms_msgpack_bytes_to_json((const uint8_t *)mp.sb.data, mp.sb.size,
                                  &out);
  int ok = rv == 0 && out.size == strlen(want) &&
           memcmp(out.data, want, out.size) == 0;
  if (!ok)
    printf("#   engine %d: rv %d, got '%.*s', want '%s'\n", (int)engine, rv,
           (int)out.size, out.data ? out.data : "", want);
  ms_mpbuf_destroy(&mp);
  msgpack_sbuffer_destroy(&out);
  return ok;
}

/* The same result from the library's reading and from jansson's. */
static int js_is(const char *json, const char *want) {
  return js_is_e(json, strlen(json), MS_JSON_AUTO, want) &&
         js_is_e(json, strlen(json), MS_JSON_JANSSON, want);
}

/* Read leniently by cJSON (jansson refuses it): the library's reading. */
static int js_lenient(const char *json, size_t len, const char *want) {
  return js_is_e(json, len, MS_JSON_AUTO, want) &&
         js_is_e(json, len, MS_JSON_CJSON, want);
}

/* Refused (by the library's reading), leaving what was in `out`. */
static int js_refused(const char *json, size_t len) {
  ms_mpbuf mp;
  ms_mpbuf_init(&mp, NULL);
  ms_mpbuf_write(&mp, "keep", 4);
  int rv = ms_json_js_to_mp(json, len, &mp, 42, MS_JSON_AUTO);
  int ok = rv == MS_ERR_BAD_MESSAGE && mp.sb.size == 4 && !mp.failed &&
           memcmp(mp.sb.data, "keep", 4) == 0;
  if (!ok)
    printf("#   '%.*s': rv %d size %zu\n", (int)len, json, rv, mp.sb.size);
  ms_mpbuf_destroy(&mp);
  return ok;
}

static void sio_json_numbers_are_javascript_doubles(void) {
  /* integral within +-2^53: an integer, whatever its spelling */
  CHECK(js_is("[1.0,-0,1e2,-0.0e0,300,-300,2.5e1]",
              "[1,0,100,0,300,-300,25]"));
  CHECK(js_is("[9007199254740992,-9007199254740992]",
              "[9007199254740992,-9007199254740992]"));
  /* beyond 2^53 a double, rounded as JSON.parse rounds */
  CHECK(js_is("[9007199254740993,9007199254740994,18446744073709551616]",
              "[9007199254740992,9007199254740994.0,1.8446744073709552e+19]"));
  CHECK(js_is("[2.5,-0.1,1e300,5e-324]", "[2.5,-0.1,1e+300,4.94065645841247e-324]"));
  /* underflow is 0; overflow is Infinity (written back as null) */
  CHECK(js_is_e("[1e-400,1e400,-1e400]", 21, MS_JSON_AUTO, "[0,null,null]"));
  /* longer than cJSON reads: jansson, the same rule */
  CHECK(js_is("[1000000000000000000000000000000000000000000000000000000000000000000000]",
              "[1e+69]"));
  CHECK(js_is("0.00000000000000000000000000000000000000000000000000000000000000000000000125",
              "1.25e-72"));
  CHECK(js_is("123456789012345678901234567890123456789012345678901234567890123456789",
              "1.234567890123457e+68"));
}

static void sio_json_values_and_strings(void) {
  CHECK(js_is("[\"x\",true,false,null,{\"k\":[]},{}]",
              "[\"x\",true,false,null,{\"k\":[]},{}]"));
  CHECK(js_is(" \t\n\r[ 1 , { \"a\" : \"b\" } ] \r\n\t ",
              "[1,{\"a\":\"b\"}]"));
  CHECK(js_is("\"\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\/\\b\\f\"",
              "\"\xc3\xa9\xf0\x9f\x98\x80\\n\\t\\\"\\\\/\\b\\f\""));
  CHECK(js_is("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
              "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
  /* a NUL in a string (cJSON cannot hold one: jansson reads it) */
  CHECK(js_is("[\"a\\u0000b\"]", "[\"a\\u0000b\"]"));
  CHECK(js_refused("{\"k\\u0000\":1}", 13));
  /* the request packet's shape */
  CHECK(js_is("[\"request\",{\"targetService\":\"echo\",\"payload\":{\"id\":"
              "\"V1StGXR8_Z5jdHi6B-myT\",\"event\":\"echo\",\"data\":"
              "{\"n\":7,\"s\":\"hi\"}}}]",
              "[\"request\",{\"targetService\":\"echo\",\"payload\":{\"id\":"
              "\"V1StGXR8_Z5jdHi6B-myT\",\"event\":\"echo\",\"data\":"
              "{\"n\":7,\"s\":\"hi\"}}}]"));
  /* appended after what is there */
  ms_mpbuf mp;
  ms_mpbuf_init(&mp, NULL);
  ms_mpbuf_write(&mp, "ab", 2);
  CHECK_EQ_INT(ms_json_js_to_mp("7", 1, &mp, 1, MS_JSON_AUTO), 0);
  CHECK_MEM(mp.sb.data, mp.sb.size, "ab\x07", 3);
  ms_mpbuf_destroy(&mp);
}

static void sio_json_duplicate_keys_last_wins_in_first_place(void) {
  CHECK(js_is("{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":3,\"b\":2}"));
  CHECK(js_is("{\"a\":1,\"a\":{\"x\":1,\"x\":[2]},\"c\":0}",
              "{\"a\":{\"x\":[2]},\"c\":0}"));
  /* more keys than are compared pairwise: through the hash map */
  CHECK(js_is("{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,"
              "\"k6\":6,\"k7\":7,\"k8\":8,\"k1\":10,\"k9\":9,\"k0\":20,"
              "\"\":1,\"\":2}",
              "{\"k0\":20,\"k1\":10,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,"
              "\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"\":2}"));
}

/* A 1 MiB object of one key repeated, and one of distinct keys: pairwise
 * comparison would take billions of steps; the map takes one per key. */
static void sio_json_many_keys_take_linear_time(void) {
  size_t cap = 1 << 20, n = 0;
  char *buf = malloc(cap + 64);
  CHECK(buf != NULL);
  for (int pass = 0; pass < 2; pass++) {
    unsigned k = 0;
    n = 0;
    buf[n++] = '{';
    while (n < cap) {
      n += (size_t)snprintf(buf + n, 64, "%s\"%s%u\":%u", k ? "," : "",
                            pass ? "key" : "", pass ? k : 0, k);
      k++;
    }
    buf[n++] = '}';
    ms_mpbuf mp;
    ms_mpbuf_init(&mp, NULL);
    int rv = ms_json_js_to_mp(buf, n, &mp, 7, MS_JSON_AUTO);
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_init(&z, 1024);
    int ok = rv == 0 && msgpack_unpack(mp.sb.data, mp.sb.size, &off, &z,
                                       &o) == MSGPACK_UNPACK_SUCCESS &&
             o.type == MSGPACK_OBJECT_MAP &&
             o.via.map.size == (pass ? k : 1) &&
             o.via.map.ptr[0].val.via.u64 == (pass ? 0 : k - 1);
    msgpack_zone_destroy(&z);
    ms_mpbuf_destroy(&mp);
    if (!ok)
      free(buf);
    CHECK(ok);
  }
  free(buf);
}

/* What is not JSON is refused, except where cJSON is lenient (texts that
 * JSON.stringify never makes): those are read as documented. */
static void sio_json_refuses_what_is_not_json(void) {
  static const char *const bad[] = {
      ".5", "+1", "-", "1e", "1e+", "0x10",
      "1.5.3", "1e5e5", "[1-2]", "NaN", "[Infinity]", "-Infinity", "[1,]",
      "{\"a\":1,}", "{a:1}", "{'a':1}", "[1] [2]", "[1]x", "\"\\x\"",
      "\"\\u12\"", "\"\\u12g4\"", "[\"\\u12\\\"]", "\"\\ud800\"",
      "\"\\udc00\"", "nul", "tru", "[", "\"abc", "\"a\\", "   "};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK(js_refused(bad[i], strlen(bad[i])));
  CHECK(js_refused("", 0));
  CHECK(js_refused("[1]\0", 4));
  CHECK(js_refused("[\"a\0b\"]", 7)); /* a raw NUL would cut the string */
  /* cJSON's leniencies */
  CHECK(js_lenient("01", 2, "1"));
  CHECK(js_lenient("-01", 3, "-1"));
  CHECK(js_lenient("1.", 2, "1"));
  CHECK(js_lenient("1.e5", 4, "100000"));
  CHECK(js_lenient("[1,\x01 2]", 7, "[1,2]"));
  CHECK(js_lenient("\"a\nb\"", 5, "\"a\\nb\""));
  CHECK(js_lenient("\xef\xbb\xbf[1]", 6, "[1]")); /* a byte order mark */
  /* an escaped backslash before "u0000" or "u12g4" is no escape */
  CHECK(js_is("\"\\\\u0000\"", "\"\\\\u0000\""));
  CHECK(js_is("\"\\\\u12g4\"", "\"\\\\u12g4\""));
  /* invalid UTF-8, in values and in keys */
  CHECK(js_refused("\"\xff\"", 3));
  CHECK(js_refused("\"\xc3\"", 3));
  CHECK(js_refused("\"\xed\xa0\x80\"", 5));
  CHECK(js_refused("{\"\xc0\xaf\":1}", 8));
  CHECK(js_refused("[\"\xf4\x90\x80\x80\"]", 8));
  CHECK(js_refused("[1,\xc3\xa9]", 6));
  /* DEL is an ordinary character */
  CHECK(js_is("\"\x7f\"", "\"\x7f\""));
}

/* Nesting: the same bound as the native JSON path, for every engine. */
static void sio_json_depth_as_native(void) {
  char buf[2 * 80 + 8];
  for (int depth = 60; depth <= 70; depth++) {
    for (int inner = 0; inner < 2; inner++) {
      size_t n = 0;
      memset(buf, '[', (size_t)depth);
      n = (size_t)depth;
      if (inner)
        buf[n++] = '1';
      memset(buf + n, ']', (size_t)depth);
      n += (size_t)depth;
      msgpack_sbuffer nat;
      msgpack_sbuffer_init(&nat);
      int want = ms_json_to_msgpack(buf, n, &nat, NULL, 0);
      for (int e = 0; e < 3; e++) {
        ms_mpbuf mp;
        ms_mpbuf_init(&mp, NULL);
        int rv = ms_json_js_to_mp(buf, n, &mp, 1, (ms_json_engine)e);
        int same = rv == want &&
                   (rv || (mp.sb.size == nat.size &&
                           memcmp(mp.sb.data, nat.data, nat.size) == 0));
        ms_mpbuf_destroy(&mp);
        if (!same)
          msgpack_sbuffer_destroy(&nat);
        CHECK(same);
      }
      msgpack_sbuffer_destroy(&nat);
    }
  }
  char deep[4000];
  memset(deep, '{', sizeof deep);
  CHECK(js_refused(deep, sizeof deep));
}

static const ms_test_case tests[] = {
    TEST(bin_and_ext_become_base64),
    TEST(long_bin_is_one_base64_string),
    TEST(integers_beyond_2_53_become_strings),
    TEST(nan_and_infinity_become_null),
    TEST(floats_print_shortest_and_stay_floats),
    TEST(non_string_keys_become_their_json_text),
    TEST(nested_values_map_to_compact_json),
    TEST(strings_are_escaped_and_kept_valid_utf8),
    TEST(json_values_map_to_msgpack),
    TEST(json_strings_with_nul_and_escapes),
    TEST(invalid_json_is_refused),
    TEST(invalid_utf8_json_is_refused),
    TEST(long_strings_with_special_bytes_at_every_offset),
    TEST(refused_text_leaves_an_empty_buffer_unallocated),
    TEST(json_deeper_than_64_is_refused),
    TEST(msgpack_input_must_be_one_object),
    TEST(object_api_appends_to_existing_output),
    TEST(sio_json_numbers_are_javascript_doubles),
    TEST(sio_json_values_and_strings),
    TEST(sio_json_duplicate_keys_last_wins_in_first_place),
    TEST(sio_json_many_keys_take_linear_time),
    TEST(sio_json_refuses_what_is_not_json),
    TEST(sio_json_depth_as_native),
};

MS_TEST_MAIN(tests)
