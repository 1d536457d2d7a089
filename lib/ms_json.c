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
 */
#include "ms_internal.h"

#include <microstream/ms_codec.h>

#include <errno.h>
#include <jansson.h>
#include <locale.h>
#include <math.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>

#define MS_JSON_MAX_DEPTH 64
#define MS_JSON_MAX_EXACT INT64_C(9007199254740992) /* 2^53 */
/* Array / map keys inside the text of other keys, at most this deep. */
#define MS_JSON_MAX_KEY_DEPTH 2

/* ---- JSON -> MessagePack ----------------------------------------------- */

static size_t utf8_seq(const unsigned char *s, size_t n);

/*
 * The direct converter: one pass over the text, writing MessagePack as it
 * goes, no tree and no allocation beyond the output. It accepts exactly
 * what the jansson path below accepts and writes the same bytes (the
 * json fuzz target checks both on every input). Container and string
 * headers are reserved at their widest and narrowed when the count is
 * known. What it does not handle itself (an object with a key twice,
 * which jansson resolves "last value wins, first position", more keys
 * open at once than it tracks, a number too long for its buffer) goes to
 * the jansson path, as does every refusal (for its message).
 */
#define FJ_FALLBACK 1
#define FJ_MAX_KEYS 256
#define FJ_MAX_NUM 64

typedef struct fj {
  const unsigned char *p, *end;
  msgpack_sbuffer *out;
  size_t nkeys;
  struct {
    size_t off;
    size_t len;
  } keys[FJ_MAX_KEYS];
} fj;

static int fj_put(fj *f, const void *d, size_t n) {
  return msgpack_sbuffer_write(f->out, (const char *)d, n) ? MS_ERR_NOMEM : 0;
}

static void fj_ws(fj *f) {
  while (f->p < f->end &&
         (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
    f->p++;
}

/* A 5-byte header placeholder; returns its offset (or SIZE_MAX). */
static size_t fj_reserve(fj *f) {
  static const unsigned char z[5] = {0};
  size_t off = f->out->size;
  return fj_put(f, z, 5) ? SIZE_MAX : off;
}

/* Narrow the header at off: kind 0 str, 1 array, 2 map. */
static void fj_finish(fj *f, size_t off, size_t n, int kind) {
  static const unsigned char tags[3][4] = {
      {0xa0, 0xd9, 0xda, 0xdb}, {0x90, 0, 0xdc, 0xdd}, {0x80, 0, 0xde, 0xdf}};
  unsigned char h[5];
  size_t hl;
  size_t small = kind == 0 ? 32 : 16;
  if (n < small) {
    h[0] = (unsigned char)(tags[kind][0] | n);
    hl = 1;
  } else if (kind == 0 && n < 256) {
    h[0] = tags[0][1];
    h[1] = (unsigned char)n;
    hl = 2;
  } else if (n < 65536) {
    h[0] = tags[kind][2];
    h[1] = (unsigned char)(n >> 8);
    h[2] = (unsigned char)n;
    hl = 3;
  } else {
    h[0] = tags[kind][3];
    h[1] = (unsigned char)(n >> 24);
    h[2] = (unsigned char)(n >> 16);
    h[3] = (unsigned char)(n >> 8);
    h[4] = (unsigned char)n;
    hl = 5;
  }
  char *d = f->out->data + off;
  size_t body = f->out->size - off - 5;
  memcpy(d, h, hl);
  if (hl < 5) {
    memmove(d + hl, d + 5, body);
    f->out->size -= 5 - hl;
  }
}

static int fj_hex4(const unsigned char *p, const unsigned char *end,
                   uint32_t *v) {
  if (end - p < 4)
    return -1;
  uint32_t r = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = p[i];
    uint32_t d;
    if (c >= '0' && c <= '9')
      d = (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      d = (uint32_t)(c - 'A' + 10);
    else
      return -1;
    r = r << 4 | d;
  }
  *v = r;
  return 0;
}

/* Whether any of the eight bytes in w is a quote, a backslash, below
 * 0x20 or from 0x80 (the bytes a JSON string scan must look at). */
static int fj_special(uint64_t w) {
  const uint64_t ones = UINT64_C(0x0101010101010101);
  const uint64_t high = UINT64_C(0x8080808080808080);
  uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
  uint64_t zero_q = (q - ones) & ~q & high;
  uint64_t zero_b = (b - ones) & ~b & high;
  uint64_t ctl = (w - ones * 0x20) & ~w & high;
  return ((w & high) | zero_q | zero_b | ctl) != 0;
}

/* A string at f->p (the opening quote); body and len: where its bytes are
 * in the output. */
static int fj_string(fj *f, size_t *body, size_t *len) {
  size_t off = fj_reserve(f);
  if (off == SIZE_MAX)
    return MS_ERR_NOMEM;
  const unsigned char *p = f->p + 1, *end = f->end, *run = p;
  for (;;) {
    if (p >= end)
      return MS_ERR_BAD_MESSAGE;
    unsigned char c = *p;
    if (c == '"')
      break;
    if (c >= 0x20 && c < 0x80 && c != '\\') {
      p++;
      /* Eight plain bytes at a time (no quote, backslash, control or
       * non-ASCII byte among them). */
      while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (fj_special(w))
          break;
        p += 8;
      }
      continue;
    }
    if (c >= 0x80) {
      size_t k = utf8_seq(p, (size_t)(end - p));
      if (!k)
        return MS_ERR_BAD_MESSAGE;
      p += k;
      continue;
    }
    if (c < 0x20)
      return MS_ERR_BAD_MESSAGE;
    /* An escape. */
    if (fj_put(f, run, (size_t)(p - run)))
      return MS_ERR_NOMEM;
    if (end - p < 2)
      return MS_ERR_BAD_MESSAGE;
    unsigned char e = p[1], o[4];
    size_t ol = 1;
    p += 2;
    switch (e) {
    case '"': case '\\': case '/': o[0] = e; break;
    case 'b': o[0] = '\b'; break;
    case 'f': o[0] = '\f'; break;
    case 'n': o[0] = '\n'; break;
    case 'r': o[0] = '\r'; break;
    case 't': o[0] = '\t'; break;
    case 'u': {
      uint32_t v, v2;
      if (fj_hex4(p, end, &v))
        return MS_ERR_BAD_MESSAGE;
      p += 4;
      if (v >= 0xd800 && v <= 0xdbff) {
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
            fj_hex4(p + 2, end, &v2) || v2 < 0xdc00 || v2 > 0xdfff)
          return MS_ERR_BAD_MESSAGE;
        p += 6;
        v = ((v - 0xd800) << 10) + (v2 - 0xdc00) + 0x10000;
      } else if (v >= 0xdc00 && v <= 0xdfff) {
        return MS_ERR_BAD_MESSAGE;
      }
      if (v < 0x80) {
        o[0] = (unsigned char)v;
      } else if (v < 0x800) {
        o[0] = (unsigned char)(0xc0 | v >> 6);
        o[1] = (unsigned char)(0x80 | (v & 0x3f));
        ol = 2;
      } else if (v < 0x10000) {
        o[0] = (unsigned char)(0xe0 | v >> 12);
        o[1] = (unsigned char)(0x80 | (v >> 6 & 0x3f));
        o[2] = (unsigned char)(0x80 | (v & 0x3f));
        ol = 3;
      } else {
        o[0] = (unsigned char)(0xf0 | v >> 18);
        o[1] = (unsigned char)(0x80 | (v >> 12 & 0x3f));
        o[2] = (unsigned char)(0x80 | (v >> 6 & 0x3f));
        o[3] = (unsigned char)(0x80 | (v & 0x3f));
        ol = 4;
      }
      break;
    }
    default:
      return MS_ERR_BAD_MESSAGE;
    }
    if (fj_put(f, o, ol))
      return MS_ERR_NOMEM;
    run = p;
  }
  if (fj_put(f, run, (size_t)(p - run)))
    return MS_ERR_NOMEM;
  f->p = p + 1;
  size_t n = f->out->size - off - 5;
  if (n > UINT32_MAX)
    return MS_ERR_BAD_MESSAGE;
  fj_finish(f, off, n, 0);
  *len = n;
  *body = f->out->size - n;
  return 0;
}

static int fj_number(fj *f) {
  const unsigned char *s = f->p, *p = s, *end = f->end;
  int neg = 0, real = 0;
  if (*p == '-') {
    neg = 1;
    p++;
  }
  if (p >= end)
    return MS_ERR_BAD_MESSAGE;
  if (*p == '0') {
    p++;
    if (p < end && *p >= '0' && *p <= '9')
      return MS_ERR_BAD_MESSAGE;
  } else if (*p >= '1' && *p <= '9') {
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  } else {
    return MS_ERR_BAD_MESSAGE;
  }
  if (p < end && *p == '.') {
    real = 1;
    p++;
    if (p >= end || *p < '0' || *p > '9')
      return MS_ERR_BAD_MESSAGE;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    real = 1;
    p++;
    if (p < end && (*p == '+' || *p == '-'))
      p++;
    if (p >= end || *p < '0' || *p > '9')
      return MS_ERR_BAD_MESSAGE;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  f->p = p;
  msgpack_packer pk;
  msgpack_packer_init(&pk, f->out, msgpack_sbuffer_write);
  if (!real) {
    /* As strtoll: beyond int64 is refused. */
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (const unsigned char *d = s + neg; d < p; d++) {
      uint64_t dig = (uint64_t)(*d - '0');
      if (v > (lim - dig) / 10)
        return MS_ERR_BAD_MESSAGE;
      v = v * 10 + dig;
    }
    int rv;
    if (!neg || v == 0)
      rv = msgpack_pack_uint64(&pk, v);
    else
      rv = msgpack_pack_int64(&pk, v == (uint64_t)INT64_MAX + 1
                                       ? INT64_MIN
                                       : -(int64_t)v);
    return rv ? MS_ERR_NOMEM : 0;
  }
  char buf[FJ_MAX_NUM + 1];
  size_t n = (size_t)(p - s);
  if (n > FJ_MAX_NUM)
    return FJ_FALLBACK;
  memcpy(buf, s, n);
  buf[n] = '\0';
  /* strtod reads the locale's decimal point, as jansson arranges too. */
  const char *dp = localeconv()->decimal_point;
  if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
    char *dot = strchr(buf, '.');
    if (dot)
      *dot = dp[0];
  } else if (dp && dp[0] != '.') {
    return FJ_FALLBACK;
  }
  errno = 0;
  char *e;
  double v = strtod(buf, &e);
  if ((size_t)(e - buf) != n)
    return FJ_FALLBACK;
  if ((v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE)
    return MS_ERR_BAD_MESSAGE;
  return msgpack_pack_double(&pk, v) ? MS_ERR_NOMEM : 0;
}

static int fj_lit(fj *f, const char *lit, size_t n, unsigned char byte) {
  if ((size_t)(f->end - f->p) < n || memcmp(f->p, lit, n) != 0)
    return MS_ERR_BAD_MESSAGE;
  f->p += n;
  return fj_put(f, &byte, 1);
}

static int fj_value(fj *f, int depth);

static int fj_array(fj *f, int depth) {
  size_t off = fj_reserve(f), n = 0;
  if (off == SIZE_MAX)
    return MS_ERR_NOMEM;
  f->p++;
  fj_ws(f);
  if (f->p < f->end && *f->p == ']') {
    f->p++;
    fj_finish(f, off, 0, 1);
    return 0;
  }
  for (;;) {
    int rv = fj_value(f, depth + 1);
    if (rv)
      return rv;
    n++;
    fj_ws(f);
    if (f->p >= f->end)
      return MS_ERR_BAD_MESSAGE;
    if (*f->p == ',') {
      f->p++;
      continue;
    }
    if (*f->p != ']')
      return MS_ERR_BAD_MESSAGE;
    f->p++;
    break;
  }
  if (n > UINT32_MAX)
    return MS_ERR_BAD_MESSAGE;
  fj_finish(f, off, n, 1);
  return 0;
}

static int fj_object(fj *f, int depth) {
  size_t off = fj_reserve(f), n = 0, base = f->nkeys;
  if (off == SIZE_MAX)
    return MS_ERR_NOMEM;
  f->p++;
  fj_ws(f);
  if (f->p < f->end && *f->p == '}') {
    f->p++;
    fj_finish(f, off, 0, 2);
    return 0;
  }
  for (;;) {
    fj_ws(f);
    if (f->p >= f->end || *f->p != '"')
      return MS_ERR_BAD_MESSAGE;
    size_t kb, kl;
    int rv = fj_string(f, &kb, &kl);
    if (rv)
      return rv;
    const char *key = f->out->data + kb;
    if (memchr(key, 0, kl))
      return MS_ERR_BAD_MESSAGE; /* jansson keeps no NUL in a key */
    for (size_t i = base; i < f->nkeys; i++)
      if (f->keys[i].len == kl && memcmp(f->out->data + f->keys[i].off, key,
                                         kl) == 0)
        return FJ_FALLBACK; /* a key twice */
    if (f->nkeys == FJ_MAX_KEYS)
      return FJ_FALLBACK;
    f->keys[f->nkeys].off = kb;
    f->keys[f->nkeys].len = kl;
    f->nkeys++;
    fj_ws(f);
    if (f->p >= f->end || *f->p != ':')
      return MS_ERR_BAD_MESSAGE;
    f->p++;
    if ((rv = fj_value(f, depth + 1)) != 0)
      return rv;
    n++;
    fj_ws(f);
    if (f->p >= f->end)
      return MS_ERR_BAD_MESSAGE;
    if (*f->p == ',') {
      f->p++;
      continue;
    }
    if (*f->p != '}')
      return MS_ERR_BAD_MESSAGE;
    f->p++;
    break;
  }
  f->nkeys = base;
  if (n > UINT32_MAX)
    return MS_ERR_BAD_MESSAGE;
  fj_finish(f, off, n, 2);
  return 0;
}

static int fj_value(fj *f, int depth) {
  if (depth > MS_JSON_MAX_DEPTH)
    return MS_ERR_BAD_MESSAGE;
  fj_ws(f);
  if (f->p >= f->end)
    return MS_ERR_BAD_MESSAGE;
  switch (*f->p) {
  case '{':
    return fj_object(f, depth);
  case '[':
    return fj_array(f, depth);
  case '"': {
    size_t b, l;
    return fj_string(f, &b, &l);
  }
  case 't':
    return fj_lit(f, "true", 4, 0xc3);
  case 'f':
    return fj_lit(f, "false", 5, 0xc2);
  case 'n':
    return fj_lit(f, "null", 4, 0xc0);
  default:
    if (*f->p == '-' || (*f->p >= '0' && *f->p <= '9'))
      return fj_number(f);
    return MS_ERR_BAD_MESSAGE;
  }
}

int ms_json_to_msgpack_direct(const char *json, size_t len,
                              msgpack_sbuffer *out) {
  fj f;
  size_t mark = out->size;
  int had = out->data != NULL;
  f.p = (const unsigned char *)(json ? json : "");
  f.end = f.p + (json ? len : 0);
  f.out = out;
  f.nkeys = 0;
  int rv = fj_value(&f, 1);
  if (rv == 0) {
    fj_ws(&f);
    if (f.p != f.end)
      rv = MS_ERR_BAD_MESSAGE;
  }
  if (rv) {
    out->size = mark;
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

static void set_what(char *what, size_t what_size, const char *s) {
  if (what && what_size)
    snprintf(what, what_size, "%s", s);
}

static int pack_json(msgpack_packer *pk, const json_t *j, int depth,
                     char *what, size_t what_size) {
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
      if ((rv = pack_json(pk, val, depth + 1, what, what_size)) != 0)
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
                          what_size)) != 0)
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
    rv = v >= 0 ? msgpack_pack_uint64(pk, (uint64_t)v)
                : msgpack_pack_int64(pk, (int64_t)v);
    break;
  }
  case JSON_REAL:
    rv = msgpack_pack_double(pk, json_real_value(j));
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

int ms_json_to_msgpack(const char *json, size_t len, msgpack_sbuffer *out,
                       char *what, size_t what_size) {
  if (what && what_size)
    what[0] = '\0';
  int rv = ms_json_to_msgpack_direct(json, len, out);
  if (rv == 0 || rv == MS_ERR_NOMEM)
    return rv;
  /* A key twice, or a refusal (jansson says why). */
  return ms_json_to_msgpack_jansson(json, len, out, what, what_size);
}

int ms_json_to_msgpack_jansson(const char *json, size_t len,
                               msgpack_sbuffer *out, char *what,
                               size_t what_size) {
  json_error_t e;
  msgpack_packer pk;
  size_t mark = out->size;

  if (what && what_size)
    what[0] = '\0';
  if (!json && len) {
    set_what(what, what_size, "no JSON text");
    return MS_ERR_BAD_MESSAGE;
  }
  json_t *root = json_loadb(json ? json : "", len,
                            JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (!root) {
    if (json_error_code(&e) == json_error_out_of_memory)
      return MS_ERR_NOMEM;
    if (what && what_size)
      snprintf(what, what_size, "invalid JSON at %d:%d: %s", e.line,
               e.column, e.text);
    return MS_ERR_BAD_MESSAGE;
  }
  msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
  int rv = pack_json(&pk, root, 1, what, what_size);
  json_decref(root);
  if (rv != 0)
    out->size = mark; /* leave no half-written object behind */
  return rv;
}

/* ---- MessagePack -> JSON ----------------------------------------------- */

static int put(msgpack_sbuffer *out, const char *s, size_t n) {
  return n ? msgpack_sbuffer_write(out, s, n) : 0;
}

static int put_c(msgpack_sbuffer *out, const char *s) {
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

static int put_json_str(msgpack_sbuffer *out, const char *str, size_t n) {
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
        if (fj_special(w))
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

static int put_base64(msgpack_sbuffer *out, const char *data, size_t n) {
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
static int put_float(msgpack_sbuffer *out, double v, int is_f32) {
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

static int to_json_b(const msgpack_object *o, msgpack_sbuffer *out,
                     int kdepth, ms_json_bins *bins);

static int to_json(const msgpack_object *o, msgpack_sbuffer *out,
                   int kdepth) {
  return to_json_b(o, out, kdepth, NULL);
}

static int to_json_b(const msgpack_object *o, msgpack_sbuffer *out,
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
        msgpack_sbuffer kb;
        msgpack_sbuffer_init(&kb);
        int rv = to_json(&kv->key, &kb, kdepth + 1);
        if (rv == 0)
          rv = put_json_str(out, kb.data, kb.size);
        msgpack_sbuffer_destroy(&kb);
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
  size_t mark = out->size;
  if (to_json(obj, out, 0) != 0) {
    out->size = mark;
    return MS_ERR_NOMEM;
  }
  return 0;
}

int ms_msgpack_to_json_bins(const msgpack_object *obj, msgpack_sbuffer *out,
                            int (*cb)(void *ud, const char *p, size_t n),
                            void *ud) {
  ms_json_bins bins = {cb, ud, 0};
  size_t mark = out->size;
  if (to_json_b(obj, out, 0, &bins) != 0) {
    out->size = mark;
    return MS_ERR_NOMEM;
  }
  return 0;
}

int ms_msgpack_bytes_to_json(const uint8_t *buf, size_t len,
                             msgpack_sbuffer *out) {
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
    rv = ms_msgpack_to_json(&obj, out);
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
