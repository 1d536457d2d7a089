/*
 * microstream: protocol codec (PROTOCOL.md "Messages", "Bad messages").
 *
 * Decoding checks before it builds. The structural walk (mp_walk, also
 * ms_msgpack_check()) reads the bytes without allocating and refuses
 * anything msgpack-c could be tricked into allocating a lot for (a 5-byte
 * array header may claim 2^32 elements); the scalars of the top-level
 * array are read in the same pass, and msgpack_unpack() only builds the
 * elements that are containers, in the caller's zone, with strings
 * pointing into the input buffer. Then the array is validated against the
 * layout of its type, strictly: a peer that sends a
 * wrong type for a field gets BAD_REQUEST instead of a guess.
 *
 * Choices PROTOCOL.md leaves open, fixed here:
 * - sub_id (SUBSCRIBE, UNSUBSCRIBE, RECORD, PRESENCE) is 1..2^53-1 like a
 *   request id: an ERROR answering a bad SUBSCRIBE carries the sub_id, and
 *   id 0 already means "session error".
 * - ERROR id may be 0 in both directions (session errors).
 * - PING/PONG n is 0..2^53-1; HELLO version is any positive integer (the
 *   hub, not the codec, answers UNSUPPORTED_VERSION).
 * - timeout_ms and seq are any unsigned integer; floats are refused even
 *   when integral (JSON clients send integers, which stay integers).
 * - A REQUEST's source (hub -> client) only needs to be a non-empty
 *   string; its target (client -> hub) must be a valid service name.
 * - RECORD ts_us is a required integer >= 0; LOG ts_us may also be nil.
 */
#include "ms_internal.h"
#include "ms_wire.h"

#include <microstream/ms_codec.h>

#include <stdio.h>

/* Nesting bound; equal to msgpack-c's own stack, so anything that passes
 * the check also unpacks. */
#define MS_MAX_DEPTH 32
#define MS_MAX_SERVICE_LEN 128
#define MS_MAX_EVENT_LEN 256

/* ---- structural pre-check ---------------------------------------------- */

static uint64_t rd_be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = (v << 8) | p[i];
  return v;
}

/* The structural walk of the one object that starts at *pos, inside
 * `base` levels of nesting (0 for a whole message); *pos is left at its
 * end. */
static int mp_walk(const uint8_t *buf, size_t len, size_t *pos,
                   unsigned base) {
  /* saved[d] is the number of items still to read in the container that
   * encloses depth d+1; `pending` counts those of the innermost one (the
   * object itself is in a virtual container of one item). */
  uint64_t saved[MS_MAX_DEPTH];
  unsigned depth = base;
  uint64_t pending = 1;
  size_t p = *pos;

  if (!buf && len)
    return MS_ERR_BAD_MESSAGE;
  for (;;) {
    while (pending == 0) {
      if (depth == base) {
        *pos = p;
        return 0;
      }
      pending = saved[--depth];
    }
    if (p >= len)
      return MS_ERR_BAD_MESSAGE; /* truncated */
    pending--;
    uint8_t b = buf[p++];
    size_t hdr = 0;       /* length-field bytes after the type byte */
    size_t fixed = 0;     /* payload bytes that follow, when known */
    int kind = 0;         /* 0 scalar, 1 raw (len from header), 2 array, 3 map */
    size_t extra = 0;     /* ext type byte */
    uint64_t count = 0;

    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      /* fixints, nil, bool: the byte is the whole object */
    } else if (b <= 0x8f) {
      kind = 3;
      count = b & 0x0f;
    } else if (b <= 0x9f) {
      kind = 2;
      count = b & 0x0f;
    } else if (b <= 0xbf) {
      fixed = b & 0x1f;
    } else {
      switch (b) {
      case 0xc4: kind = 1; hdr = 1; break;
      case 0xc5: kind = 1; hdr = 2; break;
      case 0xc6: kind = 1; hdr = 4; break;
      case 0xc7: kind = 1; hdr = 1; extra = 1; break;
      case 0xc8: kind = 1; hdr = 2; extra = 1; break;
      case 0xc9: kind = 1; hdr = 4; extra = 1; break;
      case 0xca: fixed = 4; break;
      case 0xcb: fixed = 8; break;
      case 0xcc: case 0xd0: fixed = 1; break;
      case 0xcd: case 0xd1: fixed = 2; break;
      case 0xce: case 0xd2: fixed = 4; break;
      case 0xcf: case 0xd3: fixed = 8; break;
      case 0xd4: fixed = 2; break;
      case 0xd5: fixed = 3; break;
      case 0xd6: fixed = 5; break;
      case 0xd7: fixed = 9; break;
      case 0xd8: fixed = 17; break;
      case 0xd9: kind = 1; hdr = 1; break;
      case 0xda: kind = 1; hdr = 2; break;
      case 0xdb: kind = 1; hdr = 4; break;
      case 0xdc: kind = 2; hdr = 2; break;
      case 0xdd: kind = 2; hdr = 4; break;
      case 0xde: kind = 3; hdr = 2; break;
      case 0xdf: kind = 3; hdr = 4; break;
      default:
        return MS_ERR_BAD_MESSAGE; /* 0xc1: never used */
      }
    }
    if (hdr) {
      if (len - p < hdr)
        return MS_ERR_BAD_MESSAGE;
      uint64_t n = rd_be(buf + p, hdr);
      p += hdr;
      if (kind == 1) {
        if (n > len - p || len - p - n < extra)
          return MS_ERR_BAD_MESSAGE;
        fixed = (size_t)n + extra;
      } else {
        count = n;
      }
    }
    if (kind == 2 || kind == 3) {
      /* Every element takes at least one byte: a count that cannot fit
       * is a lie, refused before msgpack-c sizes an allocation by it. */
      uint64_t items = kind == 3 ? count * 2 : count;
      if (items > len - p)
        return MS_ERR_BAD_MESSAGE;
      if (depth + 1 > MS_MAX_DEPTH)
        return MS_ERR_BAD_MESSAGE;
      if (items > 0) {
        saved[depth++] = pending;
        pending = items;
      }
      continue;
    }
    if (fixed > len - p)
      return MS_ERR_BAD_MESSAGE;
    p += fixed;
  }
}

int ms_msgpack_check(const uint8_t *buf, size_t len) {
  size_t p = 0;
  if (mp_walk(buf, len, &p, 0) != 0)
    return MS_ERR_BAD_MESSAGE;
  return p == len ? 0 : MS_ERR_BAD_MESSAGE; /* exactly one object */
}

/* ---- field readers ----------------------------------------------------- */

typedef struct dec {
  const msgpack_object *el;
  uint32_t n;
  const char *tname;
  ms_decode_error *err;
} dec;

/* Records "<TYPE>: <field> <reason>" (field may be NULL). */
static int bad(dec *d, const char *field, const char *reason) {
  if (d->err)
    snprintf(d->err->what, sizeof d->err->what, "%s: %s%s%s", d->tname,
             field ? field : "", field ? " " : "", reason);
  return MS_ERR_BAD_MESSAGE;
}

static int obj_u64(const msgpack_object *o, uint64_t *out) {
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    *out = o->via.u64;
    return 1;
  }
  /* Objects built by hand may say NEGATIVE for a non-negative value. */
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= 0) {
    *out = (uint64_t)o->via.i64;
    return 1;
  }
  return 0;
}

static int obj_i64(const msgpack_object *o, int64_t *out) {
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    if (o->via.u64 > (uint64_t)INT64_MAX)
      return 0;
    *out = (int64_t)o->via.u64;
    return 1;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    *out = o->via.i64;
    return 1;
  }
  return 0;
}

/* Element i, or NULL when the array is shorter. */
static const msgpack_object *el(dec *d, uint32_t i) {
  return i < d->n ? &d->el[i] : NULL;
}

static int get_uint(dec *d, uint32_t i, const char *field, uint64_t lo,
                    uint64_t hi, uint64_t *out) {
  const msgpack_object *o = el(d, i);
  uint64_t v;
  if (!o)
    return bad(d, field, "is missing");
  if (!obj_u64(o, &v) || v < lo || v > hi) {
    if (lo == 0 && hi == UINT64_MAX)
      return bad(d, field, "must be an unsigned integer");
    if (hi == MS_MAX_ID)
      return bad(d, field,
                 lo ? "must be an integer 1..2^53-1"
                    : "must be an integer 0..2^53-1");
    return bad(d, field, "must be a positive integer");
  }
  *out = v;
  return 0;
}

static int get_int(dec *d, uint32_t i, const char *field, int64_t lo,
                   int nil_ok, int64_t *out) {
  const msgpack_object *o = el(d, i);
  int64_t v;
  if (!o)
    return bad(d, field, "is missing");
  if (nil_ok && o->type == MSGPACK_OBJECT_NIL) {
    *out = 0;
    return 0;
  }
  if (!obj_i64(o, &v) || v < lo)
    return bad(d, field,
               lo > 0 ? "must be a positive integer"
                      : "must be an integer >= 0");
  *out = v;
  return 0;
}

/* min_len 0: any string; max_len 0: no bound. */
static int get_str(dec *d, uint32_t i, const char *field, size_t min_len,
                   size_t max_len, ms_str *out) {
  const msgpack_object *o = el(d, i);
  if (!o)
    return bad(d, field, "is missing");
  if (o->type != MSGPACK_OBJECT_STR || o->via.str.size < min_len ||
      (max_len && o->via.str.size > max_len)) {
    if (max_len)
      return bad(d, field, "must be a string of 1-256 bytes");
    return bad(d, field,
               min_len ? "must be a non-empty string" : "must be a string");
  }
  /* An empty str may carry a NULL ptr: keep "" distinct from nil. */
  out->ptr = o->via.str.ptr ? o->via.str.ptr : "";
  out->len = o->via.str.size;
  return 0;
}

/* [A-Za-z0-9._:-], one lookup per byte. */
static const uint8_t service_chars[256] = {
    ['-'] = 1, ['.'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    [':'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,
    ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1,
    ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['_'] = 1, ['a'] = 1, ['b'] = 1,
    ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static int service_char(unsigned char c) { return service_chars[c]; }

static int get_service(dec *d, uint32_t i, const char *field, ms_str *out) {
  const msgpack_object *o = el(d, i);
  if (!o)
    return bad(d, field, "is missing");
  if (o->type == MSGPACK_OBJECT_STR && o->via.str.size >= 1 &&
      o->via.str.size <= MS_MAX_SERVICE_LEN) {
    uint32_t k;
    for (k = 0; k < o->via.str.size; k++)
      if (!service_char((unsigned char)o->via.str.ptr[k]))
        break;
    if (k == o->via.str.size) {
      out->ptr = o->via.str.ptr;
      out->len = o->via.str.size;
      return 0;
    }
  }
  return bad(d, field, "must be 1-128 bytes of [A-Za-z0-9._:-]");
}

static int get_any(dec *d, uint32_t i, const char *field,
                   msgpack_object *out) {
  const msgpack_object *o = el(d, i);
  if (!o)
    return bad(d, field, "is missing");
  *out = *o;
  return 0;
}

/* opts / filter / fields / detail: absent or nil -> empty map. */
static int get_opt_map(dec *d, uint32_t i, const char *field,
                       msgpack_object *out) {
  const msgpack_object *o = el(d, i);
  if (!o || o->type == MSGPACK_OBJECT_NIL) {
    memset(out, 0, sizeof *out);
    out->type = MSGPACK_OBJECT_MAP;
    return 0;
  }
  if (o->type != MSGPACK_OBJECT_MAP)
    return bad(d, field, "must be a map");
  *out = *o;
  return 0;
}

static const char *type_name(uint64_t t) {
  static const char *const names[] = {
      "?",     "HELLO",     "WELCOME",     "REQUEST",  "RESPONSE",
      "ERROR", "CANCEL",    "LOG",         "RECORD",   "SUBSCRIBE",
      "UNSUBSCRIBE", "PRESENCE", "PING", "PONG"};
  return t < MS_ARRAY_LEN(names) ? names[t] : "?";
}

/* Which types each direction may carry (bit = type). */
#define BIT(t) (1u << (t))
static const unsigned dir_types[2] = {
    /* to hub */
    BIT(MS_MSG_HELLO) | BIT(MS_MSG_REQUEST) | BIT(MS_MSG_RESPONSE) |
        BIT(MS_MSG_ERROR) | BIT(MS_MSG_CANCEL) | BIT(MS_MSG_LOG) |
        BIT(MS_MSG_SUBSCRIBE) | BIT(MS_MSG_UNSUBSCRIBE) | BIT(MS_MSG_PING) |
        BIT(MS_MSG_PONG),
    /* to client */
    BIT(MS_MSG_WELCOME) | BIT(MS_MSG_REQUEST) | BIT(MS_MSG_RESPONSE) |
        BIT(MS_MSG_ERROR) | BIT(MS_MSG_CANCEL) | BIT(MS_MSG_RECORD) |
        BIT(MS_MSG_PRESENCE) | BIT(MS_MSG_PING) | BIT(MS_MSG_PONG),
};

static int decode_fields(dec *d, ms_msg *m, ms_dir dir) {
  int rv;
  switch (m->type) {
  case MS_MSG_HELLO: {
    const msgpack_object *t;
    if ((rv = get_uint(d, 1, "version", 1, UINT64_MAX, &m->version)) ||
        (rv = get_service(d, 2, "service", &m->name)))
      return rv;
    if (!(t = el(d, 3)))
      return bad(d, "token", "is missing");
    if (t->type == MSGPACK_OBJECT_STR) {
      m->token.ptr = t->via.str.ptr ? t->via.str.ptr : "";
      m->token.len = t->via.str.size;
    } else if (t->type != MSGPACK_OBJECT_NIL) {
      return bad(d, "token", "must be a string or nil");
    }
    return get_opt_map(d, 4, "opts", &m->opts);
  }
  case MS_MSG_WELCOME:
    if ((rv = get_str(d, 1, "hub_id", 0, 0, &m->hub_id)))
      return rv;
    return get_opt_map(d, 2, "opts", &m->opts);
  case MS_MSG_REQUEST:
    if ((rv = get_uint(d, 1, "id", 1, MS_MAX_ID, &m->id)))
      return rv;
    /* From here on the id is readable: the hub answers this request
     * alone and keeps the connection. */
    if (dir == MS_DIR_TO_HUB && d->err) {
      d->err->id_readable = 1;
      d->err->id = m->id;
    }
    if (dir == MS_DIR_TO_HUB)
      rv = get_service(d, 2, "target", &m->name);
    else
      rv = get_str(d, 2, "source", 1, 0, &m->name);
    if (rv || (rv = get_str(d, 3, "event", 1, MS_MAX_EVENT_LEN, &m->event)) ||
        (rv = get_any(d, 4, "data", &m->data)) ||
        (rv = get_uint(d, 5, "timeout_ms", 0, UINT64_MAX, &m->timeout_ms)))
      return rv;
    return get_opt_map(d, 6, "opts", &m->opts);
  case MS_MSG_RESPONSE:
    if ((rv = get_uint(d, 1, "id", 1, MS_MAX_ID, &m->id)))
      return rv;
    return get_any(d, 2, "data", &m->data);
  case MS_MSG_ERROR:
    if ((rv = get_uint(d, 1, "id", 0, MS_MAX_ID, &m->id)) ||
        (rv = get_str(d, 2, "code", 1, 0, &m->code)) ||
        (rv = get_str(d, 3, "message", 0, 0, &m->message)))
      return rv;
    if (el(d, 4))
      m->extra = *el(d, 4);
    else
      m->extra.type = MSGPACK_OBJECT_NIL;
    return 0;
  case MS_MSG_CANCEL:
    return get_uint(d, 1, "id", 1, MS_MAX_ID, &m->id);
  case MS_MSG_LOG:
    if ((rv = get_int(d, 1, "ts_us", 0, 1, &m->ts_us)) ||
        (rv = get_int(d, 2, "level", 1, 0, &m->level)) ||
        (rv = get_str(d, 3, "message", 0, 0, &m->message)))
      return rv;
    return get_opt_map(d, 4, "fields", &m->extra);
  case MS_MSG_RECORD:
    if ((rv = get_uint(d, 1, "sub_id", 1, MS_MAX_ID, &m->id)) ||
        (rv = get_uint(d, 2, "seq", 0, UINT64_MAX, &m->seq)) ||
        (rv = get_int(d, 3, "ts_us", 0, 0, &m->ts_us)) ||
        (rv = get_int(d, 4, "level", 0, 0, &m->level)) ||
        (rv = get_str(d, 5, "service", 0, 0, &m->name)) ||
        (rv = get_str(d, 6, "message", 0, 0, &m->message)))
      return rv;
    return get_opt_map(d, 7, "fields", &m->extra);
  case MS_MSG_SUBSCRIBE:
    if ((rv = get_uint(d, 1, "sub_id", 1, MS_MAX_ID, &m->id)))
      return rv;
    if (d->err) {
      d->err->id_readable = 1;
      d->err->id = m->id;
    }
    if ((rv = get_str(d, 2, "stream", 1, 0, &m->stream)))
      return rv;
    return get_opt_map(d, 3, "filter", &m->extra);
  case MS_MSG_UNSUBSCRIBE:
    return get_uint(d, 1, "sub_id", 1, MS_MAX_ID, &m->id);
  case MS_MSG_PRESENCE:
    if ((rv = get_uint(d, 1, "sub_id", 1, MS_MAX_ID, &m->id)) ||
        (rv = get_uint(d, 2, "seq", 0, UINT64_MAX, &m->seq)) ||
        (rv = get_int(d, 3, "ts_us", 0, 0, &m->ts_us)) ||
        (rv = get_str(d, 4, "kind", 1, 0, &m->kind)) ||
        (rv = get_str(d, 5, "service", 0, 0, &m->name)))
      return rv;
    return get_opt_map(d, 6, "detail", &m->extra);
  case MS_MSG_PING:
  case MS_MSG_PONG:
    return get_uint(d, 1, "n", 0, MS_MAX_ID, &m->id);
  }
  return bad(d, NULL, "unknown type");
}

/* Top-level elements decoded: the most any message type reads. */
#define MS_TOP_ELEMS 8

/* The scalar at *pos as msgpack_unpack() would build it (strings and
 * binaries point into buf), checked against len like mp_walk() checks
 * it: 1 read (*pos moves past it), 0 not one of these (mp_walk() and
 * msgpack_unpack() take it), -1 truncated. */
static int scalar_at(const uint8_t *buf, size_t len, size_t *pos,
                     msgpack_object *o) {
  size_t p = *pos;
  uint8_t b = buf[p];
  size_t left = len - p - 1; /* bytes after the type byte */
  const uint8_t *q = buf + p + 1;
  size_t used = 0;
  memset(o, 0, sizeof *o);
  if (b <= 0x7f) {
    o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    o->via.u64 = b;
  } else if (b >= 0xe0) {
    o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
    o->via.i64 = (int8_t)b;
  } else if (b >= 0xa0 && b <= 0xbf) {
    used = b & 0x1f;
    if (used > left)
      return -1;
    o->type = MSGPACK_OBJECT_STR;
    o->via.str.ptr = (const char *)q;
    o->via.str.size = (uint32_t)used;
  } else {
    switch (b) {
    case 0xc0:
      o->type = MSGPACK_OBJECT_NIL;
      break;
    case 0xc2:
    case 0xc3:
      o->type = MSGPACK_OBJECT_BOOLEAN;
      o->via.boolean = b == 0xc3;
      break;
    case 0x80: /* empty map and array */
      o->type = MSGPACK_OBJECT_MAP;
      break;
    case 0x90:
      o->type = MSGPACK_OBJECT_ARRAY;
      break;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
      used = (size_t)1 << (b - 0xcc);
      if (used > left)
        return -1;
      o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
      o->via.u64 = rd_be(q, used);
      break;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
      used = (size_t)1 << (b - 0xd0);
      if (used > left)
        return -1;
      uint64_t u = rd_be(q, used);
      int64_t v;
      if (used < 8 && (u >> (8 * used - 1)))
        u |= ~(uint64_t)0 << (8 * used); /* sign-extend */
      memcpy(&v, &u, sizeof v);
      if (v >= 0) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = (uint64_t)v;
      } else {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = v;
      }
      break;
    }
    case 0xd9: case 0xda: case 0xdb:
    case 0xc4: case 0xc5: case 0xc6: {
      size_t h = (size_t)1 << (b >= 0xd9 ? b - 0xd9 : b - 0xc4);
      if (h > left)
        return -1;
      uint64_t n = rd_be(q, h);
      if (n > left - h)
        return -1;
      used = h + (size_t)n;
      if (b >= 0xd9) {
        o->type = MSGPACK_OBJECT_STR;
        o->via.str.ptr = (const char *)q + h;
        o->via.str.size = (uint32_t)n;
      } else {
        o->type = MSGPACK_OBJECT_BIN;
        o->via.bin.ptr = (const char *)q + h;
        o->via.bin.size = (uint32_t)n;
      }
      break;
    }
    default:
      return 0;
    }
  }
  *pos = p + 1 + used;
  return 1;
}

/* The encoded bytes of data / error_data / a LOG's fields, for passing on
 * as they are: element i spans starts[i] up to the next one's start (or
 * the end when it is the last). */
static void raw_spans(ms_msg *msg, const uint8_t *buf, size_t len,
                      const size_t *starts, const msgpack_object *elems,
                      uint32_t n, uint64_t count) {
  unsigned want = 0;
  ms_raw *r = &msg->extra_raw;
  switch (msg->type) {
  case MS_MSG_REQUEST:
    want = 4;
    r = &msg->data_raw;
    break;
  case MS_MSG_RESPONSE:
    want = 2;
    r = &msg->data_raw;
    break;
  case MS_MSG_ERROR:
    want = 4;
    break;
  case MS_MSG_LOG: /* (nil fields decode as an empty map: no span) */
    if (n > 4 && elems[4].type == MSGPACK_OBJECT_MAP)
      want = 4;
    break;
  default:
    return;
  }
  if (want && want < n) {
    size_t end = want + 1 < n ? starts[want + 1]
                 : want + 1 == count ? len : 0;
    if (end > starts[want]) {
      r->ptr = buf + starts[want];
      r->len = end - starts[want];
    }
  }
}

int ms_msg_decode(ms_msg *msg, msgpack_zone *zone, const uint8_t *buf,
                  size_t len, ms_dir dir, ms_decode_error *err) {
  msgpack_object elems[MS_TOP_ELEMS];
  size_t starts[MS_TOP_ELEMS];
  unsigned unpack = 0; /* elements left to msgpack_unpack() (bits) */
  uint64_t t;
  dec d;

  memset(msg, 0, sizeof *msg);
  if (err)
    memset(err, 0, sizeof *err);
  d.el = NULL;
  d.n = 0;
  d.tname = "message";
  d.err = err;
  if (dir != MS_DIR_TO_HUB && dir != MS_DIR_TO_CLIENT)
    return MS_ERR_INVALID_ARG;
  /* One pass checks the structure (as ms_msgpack_check() does) and builds
   * the scalars of the top-level array, which make up most messages;
   * msgpack-c only unpacks the elements that are containers. */
  size_t p = 0;
  uint64_t count = 0;
  int is_array = 1;
  if (!buf || len == 0) {
    is_array = 0;
  } else if (buf[0] >= 0x90 && buf[0] <= 0x9f) {
    count = buf[0] & 0x0f;
    p = 1;
  } else if (buf[0] == 0xdc && len >= 3) {
    count = rd_be(buf + 1, 2);
    p = 3;
  } else if (buf[0] == 0xdd && len >= 5) {
    count = rd_be(buf + 1, 4);
    p = 5;
  } else {
    is_array = 0;
  }
  if (!is_array) {
    size_t q = 0;
    if (!buf || mp_walk(buf, len, &q, 0) != 0 || q != len)
      return bad(&d, NULL, "is not one well-formed MessagePack object");
    return bad(&d, NULL, "must be a non-empty array");
  }
  /* Every element takes at least one byte (as in mp_walk). */
  if (count > len - p)
    return bad(&d, NULL, "is not one well-formed MessagePack object");
  for (uint64_t i = 0; i < count; i++) {
    if (p >= len)
      return bad(&d, NULL, "is not one well-formed MessagePack object");
    int r = 0;
    if (i < MS_TOP_ELEMS) {
      starts[i] = p;
      r = scalar_at(buf, len, &p, &elems[i]);
      if (r == 0)
        unpack |= 1u << i;
    }
    if (r < 0 || (r == 0 && mp_walk(buf, len, &p, 1) != 0))
      return bad(&d, NULL, "is not one well-formed MessagePack object");
  }
  if (p != len)
    return bad(&d, NULL, "is not one well-formed MessagePack object");
  if (count == 0)
    return bad(&d, NULL, "must be a non-empty array");
  d.n = count < MS_TOP_ELEMS ? (uint32_t)count : MS_TOP_ELEMS;
  for (uint32_t i = 0; unpack && i < d.n; i++) {
    if (!(unpack & (1u << i)))
      continue;
    size_t off = starts[i];
    switch (msgpack_unpack((const char *)buf, len, &off, zone, &elems[i])) {
    case MSGPACK_UNPACK_SUCCESS:
    case MSGPACK_UNPACK_EXTRA_BYTES:
      break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
      return MS_ERR_NOMEM;
    default: /* the walk accepted it, so this is unexpected */
      return bad(&d, NULL, "does not unpack");
    }
  }
  d.el = elems;
  if (!obj_u64(&d.el[0], &t) || t < MS_MSG_HELLO || t > MS_MSG_PONG)
    return bad(&d, NULL, "type must be a known message type");
  msg->type = (ms_msg_type)t;
  d.tname = type_name(t);
  if (err)
    err->type = msg->type;
  if (!(dir_types[dir] & BIT(t)))
    return bad(&d, NULL, dir == MS_DIR_TO_HUB
                                 ? "is not sent to a hub"
                                 : "is not sent to a client");
  int rv = decode_fields(&d, msg, dir);
  if (rv == 0 && err) {
    /* What decoding wrote (the rest is still zero). */
    err->id_readable = 0;
    err->id = 0;
    err->type = 0;
  }
  if (rv == 0)
    raw_spans(msg, buf, len, starts, elems, d.n, count);
  return rv;
}

/* ---- encoders ---------------------------------------------------------- */

/* msgpack-c packers return the write callback's status: non-zero means the
 * buffer could not grow. */
#define TRY(x)                                                               \
  do {                                                                       \
    if ((x) != 0)                                                            \
      return MS_ERR_NOMEM;                                                   \
  } while (0)

/* NULL ptr encodes as "" (a nil where a string is required would not
 * decode). */
static int put_str(msgpack_packer *pk, ms_str s) {
  if (s.len > UINT32_MAX)
    return MS_ERR_INVALID_ARG;
  TRY(msgpack_pack_str(pk, s.len));
  if (s.len)
    TRY(msgpack_pack_str_body(pk, s.ptr, s.len));
  return 0;
}

static int put_map(msgpack_packer *pk, const msgpack_object *o) {
  if (!o || o->type == MSGPACK_OBJECT_NIL)
    TRY(msgpack_pack_map(pk, 0));
  else
    TRY(msgpack_pack_object(pk, *o));
  return 0;
}

/* Already-encoded bytes go straight to the packer's sink. */
static int put_raw(msgpack_packer *pk, const uint8_t *raw, size_t len,
                   int as_map) {
  if (!raw || !len) {
    TRY(as_map ? msgpack_pack_map(pk, 0) : msgpack_pack_nil(pk));
    return 0;
  }
  TRY(pk->callback(pk->data, (const char *)raw, len));
  return 0;
}

#define PUT(x)                                                               \
  do {                                                                       \
    int rv_ = (x);                                                           \
    if (rv_ != 0)                                                            \
      return rv_;                                                            \
  } while (0)

int ms_enc_hello(msgpack_packer *pk, ms_str service, ms_str token,
                 const msgpack_object *opts) {
  TRY(msgpack_pack_array(pk, 5));
  TRY(msgpack_pack_uint64(pk, MS_MSG_HELLO));
  TRY(msgpack_pack_uint64(pk, MS_PROTOCOL_VERSION));
  PUT(put_str(pk, service));
  if (token.ptr)
    PUT(put_str(pk, token));
  else
    TRY(msgpack_pack_nil(pk));
  return put_map(pk, opts);
}

int ms_enc_welcome(msgpack_packer *pk, ms_str hub_id,
                   const msgpack_object *opts) {
  TRY(msgpack_pack_array(pk, 3));
  TRY(msgpack_pack_uint64(pk, MS_MSG_WELCOME));
  PUT(put_str(pk, hub_id));
  return put_map(pk, opts);
}

/*
 * REQUEST, RESPONSE and ERROR: the messages a hub routes, on its hot path.
 * Each has one encoder (ms_enc_*_any below; the public ms_enc_* and
 * ms_enc_*_raw are it with the data given one way or the other). The head
 * is framed on the stack and reaches the packer's sink in a few writes
 * instead of one per field, in the bytes msgpack-c's packer picks (the
 * smallest form of each integer and string length); payloads given as
 * bytes go on as they are, with no decode and re-encode.
 */
#if defined(__GNUC__)
#define MS_HOT_INLINE static inline __attribute__((always_inline))
#else
#define MS_HOT_INLINE static inline
#endif

typedef struct frame {
  msgpack_packer *pk;
  size_t n;
  int err;
  uint8_t b[256];
} frame;

MS_HOT_INLINE void fr_flush(frame *f) {
  if (f->n && !f->err)
    f->err = f->pk->callback(f->pk->data, (const char *)f->b, f->n);
  f->n = 0;
}

MS_HOT_INLINE void fr_bytes(frame *f, const void *p, size_t n) {
  if (n > sizeof f->b - f->n) {
    fr_flush(f);
    if (n > sizeof f->b) {
      if (!f->err)
        f->err = f->pk->callback(f->pk->data, p, n);
      return;
    }
  }
  memcpy(f->b + f->n, p, n);
  f->n += n;
}

MS_HOT_INLINE void fr_be(frame *f, uint8_t tag, uint64_t v, unsigned bytes) {
  uint8_t t[9];
  t[0] = tag;
  for (unsigned i = 0; i < bytes; i++)
    t[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
  fr_bytes(f, t, 1 + bytes);
}

MS_HOT_INLINE void fr_uint(frame *f, uint64_t v) {
  if (v < 128) {
    uint8_t b = (uint8_t)v;
    fr_bytes(f, &b, 1);
  } else if (v < 256) {
    fr_be(f, 0xcc, v, 1);
  } else if (v < 65536) {
    fr_be(f, 0xcd, v, 2);
  } else if (v <= UINT32_MAX) {
    fr_be(f, 0xce, v, 4);
  } else {
    fr_be(f, 0xcf, v, 8);
  }
}

/* NULL ptr encodes as "" (as put_str). */
MS_HOT_INLINE void fr_str(frame *f, ms_str s) {
  size_t n = s.ptr ? s.len : 0;
  if (n < 32) {
    uint8_t b = (uint8_t)(0xa0 | n);
    fr_bytes(f, &b, 1);
  } else if (n < 256) {
    fr_be(f, 0xd9, n, 1);
  } else if (n < 65536) {
    fr_be(f, 0xda, n, 2);
  } else {
    fr_be(f, 0xdb, n, 4);
  }
  if (n)
    fr_bytes(f, s.ptr, n);
}

/* A value as the bytes that came in (raw), else the object re-packed,
 * else nil (as_map: an empty map, also for a nil object). */
MS_HOT_INLINE void fr_value(frame *f, const uint8_t *raw, size_t len,
                     const msgpack_object *obj, int as_map) {
  if (raw && len) {
    fr_bytes(f, raw, len);
  } else if (obj && !(as_map && obj->type == MSGPACK_OBJECT_NIL)) {
    fr_flush(f);
    if (!f->err && msgpack_pack_object(f->pk, *obj) != 0)
      f->err = -1;
  } else {
    uint8_t b = as_map ? 0x80 : 0xc0;
    fr_bytes(f, &b, 1);
  }
}

static int fr_done(frame *f, int invalid) {
  fr_flush(f);
  if (invalid)
    return MS_ERR_INVALID_ARG;
  return f->err ? MS_ERR_NOMEM : 0;
}

static int str_ok(ms_str s) { return !s.ptr || s.len <= UINT32_MAX; }

int ms_enc_request_any(msgpack_packer *pk, uint64_t id, ms_str name,
                       ms_str event, const uint8_t *data, size_t data_len,
                       const msgpack_object *data_obj, uint64_t timeout_ms,
                       const uint8_t *opts, size_t opts_len,
                       const msgpack_object *opts_obj) {
  if (!str_ok(name) || !str_ok(event))
    return MS_ERR_INVALID_ARG;
  frame f;
  f.pk = pk;
  f.n = 0;
  f.err = 0;
  static const uint8_t head[2] = {0x97, MS_MSG_REQUEST};
  fr_bytes(&f, head, 2);
  fr_uint(&f, id);
  fr_str(&f, name);
  fr_str(&f, event);
  fr_value(&f, data, data_len, data_obj, 0);
  fr_uint(&f, timeout_ms);
  fr_value(&f, opts, opts_len, opts_obj, 1);
  return fr_done(&f, 0);
}

int ms_enc_response_any(msgpack_packer *pk, uint64_t id, const uint8_t *data,
                        size_t data_len, const msgpack_object *data_obj) {
  frame f;
  f.pk = pk;
  f.n = 0;
  f.err = 0;
  static const uint8_t head[2] = {0x93, MS_MSG_RESPONSE};
  fr_bytes(&f, head, 2);
  fr_uint(&f, id);
  fr_value(&f, data, data_len, data_obj, 0);
  return fr_done(&f, 0);
}

int ms_enc_error_any(msgpack_packer *pk, uint64_t id, ms_str code,
                     ms_str message, const uint8_t *data, size_t data_len,
                     const msgpack_object *data_obj) {
  if (!str_ok(code) || !str_ok(message))
    return MS_ERR_INVALID_ARG;
  frame f;
  f.pk = pk;
  f.n = 0;
  f.err = 0;
  static const uint8_t head[2] = {0x95, MS_MSG_ERROR};
  fr_bytes(&f, head, 2);
  fr_uint(&f, id);
  fr_str(&f, code);
  fr_str(&f, message);
  fr_value(&f, data, data_len, data_obj, 0);
  return fr_done(&f, 0);
}

int ms_enc_request(msgpack_packer *pk, uint64_t id, ms_str name,
                   ms_str event, const msgpack_object *data,
                   uint64_t timeout_ms, const msgpack_object *opts) {
  return ms_enc_request_any(pk, id, name, event, NULL, 0, data, timeout_ms,
                            NULL, 0, opts);
}

int ms_enc_request_raw(msgpack_packer *pk, uint64_t id, ms_str name,
                       ms_str event, const uint8_t *data, size_t data_len,
                       uint64_t timeout_ms, const uint8_t *opts,
                       size_t opts_len) {
  return ms_enc_request_any(pk, id, name, event, data, data_len, NULL,
                            timeout_ms, opts, opts_len, NULL);
}

int ms_enc_response(msgpack_packer *pk, uint64_t id,
                    const msgpack_object *data) {
  return ms_enc_response_any(pk, id, NULL, 0, data);
}

int ms_enc_response_raw(msgpack_packer *pk, uint64_t id, const uint8_t *data,
                        size_t data_len) {
  return ms_enc_response_any(pk, id, data, data_len, NULL);
}

int ms_enc_error(msgpack_packer *pk, uint64_t id, ms_str code,
                 ms_str message, const msgpack_object *error_data) {
  return ms_enc_error_any(pk, id, code, message, NULL, 0, error_data);
}

int ms_enc_error_raw(msgpack_packer *pk, uint64_t id, ms_str code,
                     ms_str message, const uint8_t *error_data,
                     size_t error_data_len) {
  return ms_enc_error_any(pk, id, code, message, error_data, error_data_len,
                          NULL);
}

static int two(msgpack_packer *pk, ms_msg_type t, uint64_t v) {
  TRY(msgpack_pack_array(pk, 2));
  TRY(msgpack_pack_uint64(pk, (uint64_t)t));
  TRY(msgpack_pack_uint64(pk, v));
  return 0;
}

int ms_enc_cancel(msgpack_packer *pk, uint64_t id) {
  return two(pk, MS_MSG_CANCEL, id);
}

int ms_enc_log(msgpack_packer *pk, int64_t ts_us, int64_t level,
               ms_str message, const msgpack_object *fields) {
  TRY(msgpack_pack_array(pk, 5));
  TRY(msgpack_pack_uint64(pk, MS_MSG_LOG));
  TRY(msgpack_pack_int64(pk, ts_us));
  TRY(msgpack_pack_int64(pk, level));
  PUT(put_str(pk, message));
  return put_map(pk, fields);
}

int ms_enc_log_raw(msgpack_packer *pk, int64_t ts_us, int64_t level,
                   ms_str message, const uint8_t *fields, size_t fields_len) {
  TRY(msgpack_pack_array(pk, 5));
  TRY(msgpack_pack_uint64(pk, MS_MSG_LOG));
  TRY(msgpack_pack_int64(pk, ts_us));
  TRY(msgpack_pack_int64(pk, level));
  PUT(put_str(pk, message));
  return put_raw(pk, fields, fields_len, 1);
}

/* RECORD and PRESENCE in two parts, [type, sub_id] and the rest, so a
 * hub encodes a record's rest once for all its subscribers; the whole
 * message is the two parts in a row. */
int ms_enc_stream_head(msgpack_packer *pk, ms_msg_type type,
                       uint64_t sub_id) {
  TRY(msgpack_pack_array(pk, type == MS_MSG_RECORD ? 8 : 7));
  TRY(msgpack_pack_uint64(pk, (uint64_t)type));
  TRY(msgpack_pack_uint64(pk, sub_id));
  return 0;
}

int ms_enc_record_rest(msgpack_packer *pk, uint64_t seq, int64_t ts_us,
                       int64_t level, ms_str service, ms_str message,
                       const uint8_t *fields, size_t fields_len,
                       const msgpack_object *fields_obj) {
  TRY(msgpack_pack_uint64(pk, seq));
  TRY(msgpack_pack_int64(pk, ts_us));
  TRY(msgpack_pack_int64(pk, level));
  PUT(put_str(pk, service));
  PUT(put_str(pk, message));
  if (fields && fields_len)
    return put_raw(pk, fields, fields_len, 1);
  return put_map(pk, fields_obj);
}

int ms_enc_presence_rest(msgpack_packer *pk, uint64_t seq, int64_t ts_us,
                         ms_str kind, ms_str service, const uint8_t *detail,
                         size_t detail_len,
                         const msgpack_object *detail_obj) {
  TRY(msgpack_pack_uint64(pk, seq));
  TRY(msgpack_pack_int64(pk, ts_us));
  PUT(put_str(pk, kind));
  PUT(put_str(pk, service));
  if (detail && detail_len)
    return put_raw(pk, detail, detail_len, 1);
  return put_map(pk, detail_obj);
}

int ms_enc_record(msgpack_packer *pk, uint64_t sub_id, uint64_t seq,
                  int64_t ts_us, int64_t level, ms_str service,
                  ms_str message, const msgpack_object *fields) {
  PUT(ms_enc_stream_head(pk, MS_MSG_RECORD, sub_id));
  return ms_enc_record_rest(pk, seq, ts_us, level, service, message, NULL, 0,
                            fields);
}

int ms_enc_subscribe(msgpack_packer *pk, uint64_t sub_id, ms_str stream,
                     const msgpack_object *filter) {
  TRY(msgpack_pack_array(pk, 4));
  TRY(msgpack_pack_uint64(pk, MS_MSG_SUBSCRIBE));
  TRY(msgpack_pack_uint64(pk, sub_id));
  PUT(put_str(pk, stream));
  return put_map(pk, filter);
}

int ms_enc_subscribe_raw(msgpack_packer *pk, uint64_t sub_id, ms_str stream,
                         const uint8_t *filter, size_t filter_len) {
  TRY(msgpack_pack_array(pk, 4));
  TRY(msgpack_pack_uint64(pk, MS_MSG_SUBSCRIBE));
  TRY(msgpack_pack_uint64(pk, sub_id));
  PUT(put_str(pk, stream));
  return put_raw(pk, filter, filter_len, 1);
}

int ms_enc_unsubscribe(msgpack_packer *pk, uint64_t sub_id) {
  return two(pk, MS_MSG_UNSUBSCRIBE, sub_id);
}

int ms_enc_presence(msgpack_packer *pk, uint64_t sub_id, uint64_t seq,
                    int64_t ts_us, ms_str kind, ms_str service,
                    const msgpack_object *detail) {
  PUT(ms_enc_stream_head(pk, MS_MSG_PRESENCE, sub_id));
  return ms_enc_presence_rest(pk, seq, ts_us, kind, service, NULL, 0,
                              detail);
}

int ms_enc_ping(msgpack_packer *pk, uint64_t n) {
  return two(pk, MS_MSG_PING, n);
}

int ms_enc_pong(msgpack_packer *pk, uint64_t n) {
  return two(pk, MS_MSG_PONG, n);
}

/* ---- map readers ------------------------------------------------------- */

const msgpack_object *ms_map_get(const msgpack_object *m, const char *key) {
  if (!m || !key || m->type != MSGPACK_OBJECT_MAP)
    return NULL;
  size_t klen = strlen(key);
  for (uint32_t i = 0; i < m->via.map.size; i++) {
    const msgpack_object *k = &m->via.map.ptr[i].key;
    /* First match wins, so a duplicate key cannot override a checked one. */
    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
        (klen == 0 || memcmp(k->via.str.ptr, key, klen) == 0))
      return &m->via.map.ptr[i].val;
  }
  return NULL;
}

static const msgpack_object *map_val(const msgpack_object *m,
                                     const char *key) {
  const msgpack_object *v = ms_map_get(m, key);
  return v && v->type != MSGPACK_OBJECT_NIL ? v : NULL;
}

int ms_map_get_u64(const msgpack_object *m, const char *key, uint64_t *out) {
  const msgpack_object *v = map_val(m, key);
  uint64_t x;
  if (!v)
    return MS_ERR_NOT_FOUND;
  if (!obj_u64(v, &x))
    return MS_ERR_BAD_MESSAGE;
  *out = x;
  return 0;
}

int ms_map_get_i64(const msgpack_object *m, const char *key, int64_t *out) {
  const msgpack_object *v = map_val(m, key);
  int64_t x;
  if (!v)
    return MS_ERR_NOT_FOUND;
  if (!obj_i64(v, &x))
    return MS_ERR_BAD_MESSAGE;
  *out = x;
  return 0;
}

int ms_map_get_bool(const msgpack_object *m, const char *key, int *out) {
  const msgpack_object *v = map_val(m, key);
  if (!v)
    return MS_ERR_NOT_FOUND;
  if (v->type != MSGPACK_OBJECT_BOOLEAN)
    return MS_ERR_BAD_MESSAGE;
  *out = v->via.boolean ? 1 : 0;
  return 0;
}

int ms_map_get_str(const msgpack_object *m, const char *key, ms_str *out) {
  const msgpack_object *v = map_val(m, key);
  if (!v)
    return MS_ERR_NOT_FOUND;
  if (v->type != MSGPACK_OBJECT_STR)
    return MS_ERR_BAD_MESSAGE;
  out->ptr = v->via.str.ptr ? v->via.str.ptr : "";
  out->len = v->via.str.size;
  return 0;
}
