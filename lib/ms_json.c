/*
 * microstream: the JSON encoding (microstream.json.v1), PROTOCOL.md
 * "Transport and encodings".
 *
 * JSON -> MessagePack goes through jansson: it validates UTF-8 and escapes,
 * and refuses lone surrogates, so every str we emit is valid UTF-8.
 * Choices:
 * - Duplicate object keys are accepted and the last one wins, as in a
 *   browser's JSON.parse, so the hub reads a text the way a page would.
 * - Integers become MessagePack ints (unsigned form for >= 0), reals become
 *   float64, even when integral ("1.0" stays a float).
 * - Nesting deeper than 64 levels is refused.
 * - jansson cannot hold a NUL in an object key, so "\u0000" in a key is
 *   refused (in string values it is fine).
 *
 * MessagePack -> JSON is written directly into the output buffer (one
 * pass, no intermediate tree):
 * - bin and ext become standard base64 with padding (ext: its data only);
 * - a map key that is not a string becomes its JSON text, as a string
 *   (bin, ext and integer keys: their base64 / digits, not quoted twice);
 *   an array or map key found inside the text of two enclosing keys is
 *   written as "?" (each level re-escapes the text, so the output would
 *   grow exponentially with that nesting);
 * - integers beyond +-2^53 become decimal strings; NaN and +-Inf null;
 * - floats print with the fewest digits that read back to the same value,
 *   and always with a '.' or exponent so that they read back as floats;
 * - each byte of a str that is not part of a valid UTF-8 sequence becomes
 *   U+FFFD, so the output is always valid JSON and valid UTF-8.
 *
 * Socket.IO's JSON (ms_json_js_to_mp) is read the way its JavaScript peers
 * read it, and through cJSON, which builds a small tree several times
 * faster than jansson; see that section below for its rules.
 *
 * Writers: the public functions append to a msgpack_sbuffer (libc memory);
 * the library's own callers append to an ms_mpbuf, on the allocator of the
 * object they belong to.
 */
#include "ms_json.h"
#include "ms_map.h"
#include "ms_utf8.h"

#include <microstream/ms_codec.h>

#include <cjson/cJSON.h>
#include <jansson.h>
#include <math.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>

#define MS_JSON_MAX_DEPTH 64
#define MS_JSON_MAX_EXACT INT64_C(9007199254740992) /* 2^53 */
/* Array / map keys inside the text of other keys, at most this deep. */
#define MS_JSON_MAX_KEY_DEPTH 2

/* ---- JSON -> MessagePack ----------------------------------------------- */

static void set_what(char *what, size_t what_size, const char *s) {
  if (what && what_size)
    snprintf(what, what_size, "%s", s);
}

static int pack_js_number(msgpack_packer *pk, double d);

/* js: numbers by JavaScript's rule (ms_json_js_to_mp), else jansson's
 * integer / real distinction. */
static int pack_json(msgpack_packer *pk, const json_t *j, int depth,
                     char *what, size_t what_size, int js) {
  int rv = 0;
  if (depth > MS_JSON_MAX_DEPTH) {
    set_what(what, what_size, "JSON nested deeper than 64 levels");
    return MS_ERR_BAD_MESSAGE;
  }
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    const char *key;
    json_t *val;
    if (msgpack_pack_map(pk, json_object_size(j)))
      return MS_ERR_NOMEM;
    /* json_object_keylen_foreach takes a non-const object. */
    json_t *o = (json_t *)(uintptr_t)j;
    for (void *it = json_object_iter(o); it;
         it = json_object_iter_next(o, it)) {
      key = json_object_iter_key(it);
      size_t klen = json_object_iter_key_len(it);
      val = json_object_iter_value(it);
      if (msgpack_pack_str(pk, klen) || msgpack_pack_str_body(pk, key, klen))
        return MS_ERR_NOMEM;
      if ((rv = pack_json(pk, val, depth + 1, what, what_size, js)) != 0)
        return rv;
    }
    return 0;
  }
  case JSON_ARRAY: {
    size_t n = json_array_size(j);
    if (msgpack_pack_array(pk, n))
      return MS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
      if ((rv = pack_json(pk, json_array_get(j, i), depth + 1, what,
                          what_size, js)) != 0)
        return rv;
    return 0;
  }
  case JSON_STRING: {
    size_t n = json_string_length(j);
    rv = msgpack_pack_str(pk, n) ||
         msgpack_pack_str_body(pk, json_string_value(j), n);
    break;
  }
  case JSON_INTEGER: {
    json_int_t v = json_integer_value(j);
    if (js) {
      rv = pack_js_number(pk, (double)v);
      break;
    }
    rv = v >= 0 ? msgpack_pack_uint64(pk, (uint64_t)v)
                : msgpack_pack_int64(pk, (int64_t)v);
    break;
  }
  case JSON_REAL:
    rv = js ? pack_js_number(pk, json_real_value(j))
            : msgpack_pack_double(pk, json_real_value(j));
    break;
  case JSON_TRUE:
    rv = msgpack_pack_true(pk);
    break;
  case JSON_FALSE:
    rv = msgpack_pack_false(pk);
    break;
  case JSON_NULL:
    rv = msgpack_pack_nil(pk);
    break;
  }
  return rv ? MS_ERR_NOMEM : 0;
}

/* One JSON text through jansson into pk; what / what_size as for
 * ms_json_to_msgpack. The caller takes back what a failure left in the
 * output. */
static int jansson_to_pk(const char *json, size_t len, size_t flags,
                         msgpack_packer *pk, char *what, size_t what_size,
                         int js) {
  json_error_t e;
  if (what && what_size)
    what[0] = '\0';
  if (!json && len) {
    set_what(what, what_size, "no JSON text");
    return MS_ERR_BAD_MESSAGE;
  }
  json_t *root = json_loadb(json ? json : "", len, flags, &e);
  if (!root) {
    if (json_error_code(&e) == json_error_out_of_memory)
      return MS_ERR_NOMEM;
    if (what && what_size)
      snprintf(what, what_size, "invalid JSON at %d:%d: %s", e.line,
               e.column, e.text);
    return MS_ERR_BAD_MESSAGE;
  }
  int rv = pack_json(pk, root, 1, what, what_size, js);
  json_decref(root);
  return rv;
}

#define NATIVE_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

int ms_json_to_msgpack(const char *json, size_t len, msgpack_sbuffer *out,
                       char *what, size_t what_size) {
  msgpack_packer pk;
  size_t mark = out->size;
  int had = out->data != NULL;

  msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
  int rv = jansson_to_pk(json, len, NATIVE_FLAGS, &pk, what, what_size, 0);
  if (rv != 0) {
    out->size = mark; /* leave no half-written object behind */
    if (!had && out->data) {
      /* A refused text leaves a buffer it found empty as it was (callers
       * may skip msgpack_sbuffer_destroy after a failure). */
      free(out->data);
      out->data = NULL;
      out->alloc = 0;
    }
  }
  return rv;
}

/* An ms_mpbuf back at `mark`, usable again. */
static void mp_rollback(ms_mpbuf *b, size_t mark) {
  b->sb.size = mark;
  b->failed = 0;
}

int ms_json_to_mp(const char *json, size_t len, ms_mpbuf *out, char *what,
                  size_t what_size) {
  msgpack_packer pk;
  size_t mark = out->sb.size;
  if (out->failed)
    return MS_ERR_NOMEM;
  msgpack_packer_init(&pk, out, ms_mpbuf_write);
  int rv = jansson_to_pk(json, len, NATIVE_FLAGS, &pk, what, what_size, 0);
  if (rv != 0)
    mp_rollback(out, mark);
  return rv;
}

/* ---- JSON -> MessagePack, as JavaScript reads it (Socket.IO) -----------
 *
 * Socket.IO peers are JavaScript: what they send was made by
 * JSON.stringify and is read by JSON.parse on the other side. So:
 * - a number is an IEEE double (strtod, correctly rounded); an integral
 *   value within +-2^53 becomes a MessagePack integer, anything else
 *   float64 ("1.0" is the integer 1, -0 is 0, 1e400 is +Infinity): what a
 *   Node service would get after JSON.parse and JSON.stringify;
 * - duplicate object keys: the last value wins, at the place of the first
 *   key, as with JSON.parse; linear time however many keys there are;
 * - at most 64 levels deep, as on the native JSON path;
 * - the whole text must be one value (trailing JSON whitespace only).
 * cJSON does not check UTF-8 (checked here first, with raw NUL bytes
 * refused) and is lenient where JSON.stringify never goes: it takes
 * control characters in strings and for whitespace, a leading byte order
 * mark and numbers such as "01" or "1." (read as strtod reads them).
 * cJSON cannot hold the escape \u0000 inside a string, misreads a \u
 * without four hex digits and reads at most 63 characters of a number:
 * such texts (rare) go through jansson, by the same rules.
 * When cJSON refuses a text, jansson reads it again: it tells running out
 * of memory from a bad text, which cJSON does not. */

#define JS_SMALL_OBJECT 8 /* keys compared pairwise up to this many */

static int pack_js_number(msgpack_packer *pk, double d) {
  if (d >= -(double)MS_JSON_MAX_EXACT && d <= (double)MS_JSON_MAX_EXACT) {
    int64_t v = (int64_t)d;
    if ((double)v == d)
      return v >= 0 ? msgpack_pack_uint64(pk, (uint64_t)v)
                    : msgpack_pack_int64(pk, v);
  }
  return msgpack_pack_double(pk, d);
}

/* Escapes cJSON reads wrongly: \u0000 (its strings end at NUL) and a \u
 * without four hex digits (it takes them for U+0000). A text with one goes
 * to jansson, which keeps the first and refuses the second. (A "u" after
 * an escaped backslash matches too: jansson then reads the text, rightly,
 * only slower.) */
static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}
static int cjson_misreads(const char *s, size_t n) {
  const char *p = s, *end = s + n;
  while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
    if (end - p >= 2 && p[1] == 'u' &&
        (end - p < 6 || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]) ||
         !is_hex(p[5]) || memcmp(p + 2, "0000", 4) == 0))
      return 1;
    p++;
  }
  return 0;
}

typedef struct js_conv {
  msgpack_packer *pk;
  const ms_allocator *mem;
  uint64_t seed;
} js_conv;

static int pack_cjson(js_conv *cx, const cJSON *j, int depth);

static int pack_key(msgpack_packer *pk, const char *k, size_t n) {
  return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, k, n)
             ? MS_ERR_NOMEM
             : 0;
}

/* Many keys: the last value of each key, found through a hash map (key ->
 * its last member); a key is written where it first appears, and taken
 * out of the map there so that later duplicates are skipped. */
static int pack_object_big(js_conv *cx, const cJSON *j, int depth) {
  ms_strmap m;
  const cJSON *c;
  int rv = 0;
  ms_strmap_init(&m, cx->mem, cx->seed);
  for (c = j->child; c && rv == 0; c = c->next)
    rv = ms_strmap_put(&m, c->string, strlen(c->string),
                       (void *)(uintptr_t)c);
  if (rv == 0 && msgpack_pack_map(cx->pk, m.n))
    rv = MS_ERR_NOMEM;
  for (c = j->child; c && rv == 0; c = c->next) {
    size_t kl = strlen(c->string);
    const cJSON *v = ms_strmap_del(&m, c->string, kl);
    if (!v)
      continue; /* written already */
    rv = pack_key(cx->pk, c->string, kl);
    if (rv == 0)
      rv = pack_cjson(cx, v, depth + 1);
  }
  ms_strmap_free(&m);
  return rv;
}

static int pack_object(js_conv *cx, const cJSON *j, int depth) {
  const cJSON *kid[JS_SMALL_OBJECT];
  unsigned char first[JS_SMALL_OBJECT];
  size_t n = 0, distinct = 0;
  for (const cJSON *c = j->child; c; c = c->next)
    if (n++ >= JS_SMALL_OBJECT)
      return pack_object_big(cx, j, depth);
  n = 0;
  for (const cJSON *c = j->child; c; c = c->next)
    kid[n++] = c;
  for (size_t i = 0; i < n; i++) {
    first[i] = 1;
    for (size_t k = 0; k < i && first[i]; k++)
      if (strcmp(kid[k]->string, kid[i]->string) == 0)
        first[i] = 0;
    distinct += first[i];
  }
  if (msgpack_pack_map(cx->pk, distinct))
    return MS_ERR_NOMEM;
  for (size_t i = 0; i < n; i++) {
    if (!first[i])
      continue;
    const cJSON *v = kid[i];
    for (size_t k = i + 1; k < n; k++)
      if (strcmp(kid[k]->string, kid[i]->string) == 0)
        v = kid[k];
    int rv = pack_key(cx->pk, kid[i]->string, strlen(kid[i]->string));
    if (rv == 0)
      rv = pack_cjson(cx, v, depth + 1);
    if (rv)
      return rv;
  }
  return 0;
}

static int pack_cjson(js_conv *cx, const cJSON *j, int depth) {
  msgpack_packer *pk = cx->pk;
  int rv;
  if (depth > MS_JSON_MAX_DEPTH)
    return MS_ERR_BAD_MESSAGE;
  switch (j->type & 0xff) {
  case cJSON_False:
    rv = msgpack_pack_false(pk);
    break;
  case cJSON_True:
    rv = msgpack_pack_true(pk);
    break;
  case cJSON_NULL:
    rv = msgpack_pack_nil(pk);
    break;
  case cJSON_Number:
    rv = pack_js_number(pk, j->valuedouble);
    break;
  case cJSON_String:
    return pack_key(pk, j->valuestring, strlen(j->valuestring));
  case cJSON_Array: {
    size_t n = 0;
    const cJSON *c;
    for (c = j->child; c; c = c->next)
      n++;
    if (msgpack_pack_array(pk, n))
      return MS_ERR_NOMEM;
    for (c = j->child; c; c = c->next)
      if ((rv = pack_cjson(cx, c, depth + 1)) != 0)
        return rv;
    return 0;
  }
  case cJSON_Object:
    return pack_object(cx, j, depth);
  default:
    return MS_ERR_BAD_MESSAGE; /* (cJSON_Raw / Invalid: not from parsing) */
  }
  return rv ? MS_ERR_NOMEM : 0;
}

/* *refused: cJSON gave no tree (a bad text, or out of memory). */
static int js_by_cjson(const char *json, size_t len, js_conv *cx,
                       int *refused) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (!root) {
    *refused = 1;
    return MS_ERR_BAD_MESSAGE;
  }
  int rv = 0;
  for (const char *p = end; p < json + len; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
      rv = MS_ERR_BAD_MESSAGE;
  if (rv == 0)
    rv = pack_cjson(cx, root, 1);
  cJSON_Delete(root);
  return rv;
}

int ms_json_js_to_mp(const char *json, size_t len, ms_mpbuf *out,
                     uint64_t seed, ms_json_engine engine) {
  msgpack_packer pk;
  size_t mark = out->sb.size;
  int slow = 0;
  if (out->failed)
    return MS_ERR_NOMEM;
  if (!json || !len)
    return MS_ERR_BAD_MESSAGE;
  msgpack_packer_init(&pk, out, ms_mpbuf_write);
  js_conv cx = {&pk, out->mem, seed};
  /* What cJSON does not check: UTF-8, and raw NUL bytes (which would cut
   * a string short). */
  int rv = ms_utf8_valid((const uint8_t *)json, len) &&
                   !memchr(json, 0, len)
               ? 0
               : MS_ERR_BAD_MESSAGE;
  slow = rv == 0 && cjson_misreads(json, len);
  if (rv == 0) {
    if (engine == MS_JSON_JANSSON || (slow && engine == MS_JSON_AUTO)) {
      rv = jansson_to_pk(json, len, NATIVE_FLAGS | JSON_DECODE_INT_AS_REAL,
                         &pk, NULL, 0, 1);
    } else if (slow) {
      rv = MS_ERR_BAD_MESSAGE; /* MS_JSON_CJSON: cannot read it */
    } else {
      int refused = 0;
      rv = js_by_cjson(json, len, &cx, &refused);
      if (refused && engine == MS_JSON_AUTO) {
        /* Refused, or out of memory: jansson tells. */
        mp_rollback(out, mark);
        rv = jansson_to_pk(json, len,
                           NATIVE_FLAGS | JSON_DECODE_INT_AS_REAL, &pk, NULL,
                           0, 1);
      }
    }
  }
  if (rv != 0)
    mp_rollback(out, mark);
  return rv;
}

/* ---- MessagePack -> JSON ----------------------------------------------- */

/* Where JSON text goes: a msgpack_sbuffer or an ms_mpbuf. */
typedef struct jw {
  int (*write)(void *data, const char *buf, size_t len);
  void *data;
  const ms_allocator *mem; /* for the text of non-string keys */
} jw;

static void jw_sbuffer(jw *w, msgpack_sbuffer *sb) {
  w->write = msgpack_sbuffer_write;
  w->data = sb;
  w->mem = ms_default_allocator();
}

static void jw_mpbuf(jw *w, ms_mpbuf *b) {
  w->write = ms_mpbuf_write;
  w->data = b;
  w->mem = b->mem;
}

static int put(jw *out, const char *s, size_t n) {
  return n ? out->write(out->data, s, n) : 0;
}

static int put_c(jw *out, const char *s) {
  return put(out, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if the
 * bytes there are not one. Overlongs, surrogates and > U+10FFFF fail. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t k;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf)
    k = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    k = 3;
    if (c == 0xe0)
      lo = 0xa0;
    else if (c == 0xed)
      hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    k = 4;
    if (c == 0xf0)
      lo = 0x90;
    else if (c == 0xf4)
      hi = 0x8f;
  } else
    return 0;
  if (n < k || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < k; i++)
    if (s[i] < 0x80 || s[i] > 0xbf)
      return 0;
  return k;
}

/* Whether any of the eight bytes in w is a quote, a backslash, below
 * 0x20 or from 0x80 (the bytes a JSON string writer must look at). */
static int json_special8(uint64_t w) {
  const uint64_t ones = UINT64_C(0x0101010101010101);
  const uint64_t high = UINT64_C(0x8080808080808080);
  uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
  uint64_t zero_q = (q - ones) & ~q & high;
  uint64_t zero_b = (b - ones) & ~b & high;
  uint64_t ctl = (w - ones * 0x20) & ~w & high;
  return ((w & high) | zero_q | zero_b | ctl) != 0;
}

static int put_json_str(jw *out, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, run = 0;
  if (n == 0)
    return put(out, "\"\"", 2);
  if (put(out, "\"", 1))
    return -1;
  while (i < n) {
    unsigned char c = s[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      i++;
      while (n - i >= 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (json_special8(w))
          break;
        i += 8;
      }
      continue;
    }
    char esc[8];
    const char *rep = NULL;
    size_t rlen = 0, adv = 1;
    if (c >= 0x80) {
      size_t k = utf8_seq(s + i, n - i);
      if (k) {
        i += k;
        continue;
      }
      rep = "\xef\xbf\xbd"; /* U+FFFD for one bad byte */
      rlen = 3;
    } else if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      rep = esc;
      rlen = 2;
    } else if (c < 0x20) {
      rep = esc;
      rlen = 2;
      esc[0] = '\\';
      switch (c) {
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      default:
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        rlen = 6;
      }
    } else {
      i++;
      continue;
    }
    if (put(out, str + run, i - run) || put(out, rep, rlen))
      return -1;
    i += adv;
    run = i;
  }
  if (put(out, str + run, n - run) || put(out, "\"", 1))
    return -1;
  return 0;
}

static int put_base64(jw *out, const char *data, size_t n) {
  char chunk[4 * 256];
  if (put(out, "\"", 1))
    return -1;
  /* Whole 3-byte groups per chunk, so only the last one is padded. */
  while (n > 0) {
    size_t take = n > 3 * 256 ? 3 * 256 : n;
    base64_encode_raw(chunk, take, (const uint8_t *)data);
    if (put(out, chunk, BASE64_ENCODE_RAW_LENGTH(take)))
      return -1;
    data += take;
    n -= take;
  }
  return put(out, "\"", 1);
}

/* Shortest of %.{lo..hi}g that reads back to v (as float when is_f32). */
static int put_float(jw *out, double v, int is_f32) {
  char b[40];
  if (isnan(v) || isinf(v))
    return put_c(out, "null");
  int lo = is_f32 ? 6 : 15, hi = is_f32 ? 9 : 17;
  for (int prec = lo; prec <= hi; prec++) {
    snprintf(b, sizeof b, "%.*g", prec, v);
    double r = strtod(b, NULL);
    if (is_f32 ? (float)r == (float)v : r == v)
      break;
  }
  /* A ',' decimal point would come from the locale, not from JSON. */
  int has_frac = 0;
  for (char *p = b; *p; p++) {
    if (*p == ',')
      *p = '.';
    if (*p == '.' || *p == 'e' || *p == 'E')
      has_frac = 1;
  }
  if (!has_frac)
    strcat(b, ".0");
  return put_c(out, b);
}

/* Socket.IO attachments: bin values (not keys) written as placeholders
 * and handed over in order. */
typedef struct ms_json_bins {
  int (*cb)(void *ud, const char *p, size_t n);
  void *ud;
  size_t n;
} ms_json_bins;

static int to_json_b(const msgpack_object *o, jw *out,
                     int kdepth, ms_json_bins *bins);

static int to_json(const msgpack_object *o, jw *out,
                   int kdepth) {
  return to_json_b(o, out, kdepth, NULL);
}

static int to_json_b(const msgpack_object *o, jw *out,
                     int kdepth, ms_json_bins *bins) {
  char b[32];
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    return put_c(out, "null");
  case MSGPACK_OBJECT_BOOLEAN:
    return put_c(out, o->via.boolean ? "true" : "false");
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    if (o->via.u64 > (uint64_t)MS_JSON_MAX_EXACT)
      snprintf(b, sizeof b, "\"%llu\"", (unsigned long long)o->via.u64);
    else
      snprintf(b, sizeof b, "%llu", (unsigned long long)o->via.u64);
    return put_c(out, b);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    if (o->via.i64 < -MS_JSON_MAX_EXACT || o->via.i64 > MS_JSON_MAX_EXACT)
      snprintf(b, sizeof b, "\"%lld\"", (long long)o->via.i64);
    else
      snprintf(b, sizeof b, "%lld", (long long)o->via.i64);
    return put_c(out, b);
  case MSGPACK_OBJECT_FLOAT32:
    return put_float(out, o->via.f64, 1);
  case MSGPACK_OBJECT_FLOAT64:
    return put_float(out, o->via.f64, 0);
  case MSGPACK_OBJECT_STR:
    return put_json_str(out, o->via.str.ptr, o->via.str.size);
  case MSGPACK_OBJECT_BIN:
    if (bins) {
      snprintf(b, sizeof b, "{\"_placeholder\":true,\"num\":%zu}", bins->n);
      if (bins->cb(bins->ud, o->via.bin.ptr, o->via.bin.size))
        return -1;
      bins->n++;
      return put_c(out, b);
    }
    return put_base64(out, o->via.bin.ptr, o->via.bin.size);
  case MSGPACK_OBJECT_EXT:
    return put_base64(out, o->via.ext.ptr, o->via.ext.size);
  case MSGPACK_OBJECT_ARRAY:
    if (put(out, "[", 1))
      return -1;
    for (uint32_t i = 0; i < o->via.array.size; i++)
      if ((i && put(out, ",", 1)) ||
          to_json_b(&o->via.array.ptr[i], out, kdepth, bins))
        return -1;
    return put(out, "]", 1);
  case MSGPACK_OBJECT_MAP:
    if (put(out, "{", 1))
      return -1;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      if (i && put(out, ",", 1))
        return -1;
      if (kv->key.type == MSGPACK_OBJECT_STR) {
        if (put_json_str(out, kv->key.via.str.ptr, kv->key.via.str.size))
          return -1;
      } else if (kv->key.type == MSGPACK_OBJECT_BIN ||
                 kv->key.type == MSGPACK_OBJECT_EXT) {
        /* already a string in JSON: base64 is the key's text */
        if (to_json(&kv->key, out, kdepth))
          return -1;
      } else if (kv->key.type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                 kv->key.type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        /* digits only, whether or not the value needed a string */
        if (kv->key.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
          snprintf(b, sizeof b, "\"%llu\"",
                   (unsigned long long)kv->key.via.u64);
        else
          snprintf(b, sizeof b, "\"%lld\"", (long long)kv->key.via.i64);
        if (put_c(out, b))
          return -1;
      } else if ((kv->key.type == MSGPACK_OBJECT_ARRAY ||
                  kv->key.type == MSGPACK_OBJECT_MAP) &&
                 kdepth >= MS_JSON_MAX_KEY_DEPTH) {
        /* Each level of keys inside keys escapes the text once more and
         * about doubles it: a few bytes nested 32 deep would become
         * gigabytes. Deep down, such a key is only a placeholder. */
        if (put_c(out, "\"?\""))
          return -1;
      } else {
        /* The key's own JSON text, quoted as a string. */
        ms_mpbuf kb;
        jw kw;
        ms_mpbuf_init(&kb, out->mem);
        jw_mpbuf(&kw, &kb);
        int rv = to_json(&kv->key, &kw, kdepth + 1);
        if (rv == 0)
          rv = put_json_str(out, kb.sb.data, kb.sb.size);
        ms_mpbuf_destroy(&kb);
        if (rv)
          return -1;
      }
      if (put(out, ":", 1) || to_json_b(&kv->val, out, kdepth, bins))
        return -1;
    }
    return put(out, "}", 1);
  }
  return put_c(out, "null");
}

int ms_msgpack_to_json(const msgpack_object *obj, msgpack_sbuffer *out) {
  jw w;
  size_t mark = out->size;
  jw_sbuffer(&w, out);
  if (to_json(obj, &w, 0) != 0) {
    out->size = mark;
    return MS_ERR_NOMEM;
  }
  return 0;
}

int ms_msgpack_to_json_mp(const msgpack_object *obj, ms_mpbuf *out) {
  jw w;
  size_t mark = out->sb.size;
  jw_mpbuf(&w, out);
  if (to_json(obj, &w, 0) != 0) {
    mp_rollback(out, mark);
    return MS_ERR_NOMEM;
  }
  return 0;
}

int ms_msgpack_to_json_bins(const msgpack_object *obj, ms_mpbuf *out,
                            int (*cb)(void *ud, const char *p, size_t n),
                            void *ud) {
  ms_json_bins bins = {cb, ud, 0};
  jw w;
  size_t mark = out->sb.size;
  jw_mpbuf(&w, out);
  if (to_json_b(obj, &w, 0, &bins) != 0) {
    mp_rollback(out, mark);
    return MS_ERR_NOMEM;
  }
  return 0;
}

/* Exactly one MessagePack object in buf, as JSON into w. */
static int bytes_to_json(const uint8_t *buf, size_t len, jw *w) {
  msgpack_zone zone;
  msgpack_object obj;
  size_t off = 0;
  int rv;

  if (ms_msgpack_check(buf, len) != 0)
    return MS_ERR_BAD_MESSAGE;
  if (!msgpack_zone_init(&zone, 1024))
    return MS_ERR_NOMEM;
  switch (msgpack_unpack((const char *)buf, len, &off, &zone, &obj)) {
  case MSGPACK_UNPACK_SUCCESS:
    rv = to_json(&obj, w, 0) ? MS_ERR_NOMEM : 0;
    break;
  case MSGPACK_UNPACK_NOMEM_ERROR:
    rv = MS_ERR_NOMEM;
    break;
  default:
    rv = MS_ERR_BAD_MESSAGE;
  }
  msgpack_zone_destroy(&zone);
  return rv;
}

int ms_msgpack_bytes_to_json(const uint8_t *buf, size_t len,
                             msgpack_sbuffer *out) {
  jw w;
  size_t mark = out->size;
  jw_sbuffer(&w, out);
  int rv = bytes_to_json(buf, len, &w);
  if (rv)
    out->size = mark;
  return rv;
}

int ms_msgpack_bytes_to_json_mp(const uint8_t *buf, size_t len,
                                ms_mpbuf *out) {
  jw w;
  size_t mark = out->sb.size;
  jw_mpbuf(&w, out);
  int rv = bytes_to_json(buf, len, &w);
  if (rv)
    mp_rollback(out, mark);
  return rv;
}
