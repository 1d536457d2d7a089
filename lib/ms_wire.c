/* Protocol messages over an ms_conn in either encoding (see ms_wire.h). */
#include "ms_wire.h"

#include "ms_json.h"

#include <stdio.h>

int ms_mpbuf_write(void *data, const char *buf, size_t len) {
  ms_mpbuf *b = data;
  if (b->failed)
    return -1;
  if (len > b->sb.alloc - b->sb.size) {
    size_t need = b->sb.size + len;
    if (need < b->sb.size) {
      b->failed = 1;
      return -1;
    }
    size_t cap = b->sb.alloc ? b->sb.alloc : 256;
    while (cap < need)
      cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = ms_realloc(b->mem, b->sb.data, cap);
    if (!p) {
      b->failed = 1;
      return -1;
    }
    b->sb.data = p;
    b->sb.alloc = cap;
  }
  if (len)
    memcpy(b->sb.data + b->sb.size, buf, len);
  b->sb.size += len;
  return 0;
}

int ms_wire_send(ms_conn *c, ms_encoding enc, const uint8_t *mp, size_t len,
                 ms_mpbuf *scratch, size_t limit) {
  if (enc != MS_ENC_JSON) {
    if (limit && len > limit)
      return MS_ERR_TOO_BIG;
    return ms_conn_send(c, 1, mp, len);
  }
  ms_mpbuf_reset(scratch);
  int rv = ms_msgpack_bytes_to_json_mp(mp, len, scratch);
  if (rv)
    return rv;
  if (limit && scratch->sb.size > limit)
    return MS_ERR_TOO_BIG;
  return ms_conn_send(c, 0, (const uint8_t *)scratch->sb.data,
                      scratch->sb.size);
}

int ms_wire_decode(ms_encoding enc, const ms_conn_message_arg *arg,
                   ms_mpbuf *scratch, msgpack_zone *zone, ms_dir dir,
                   ms_msg *msg, ms_decode_error *err) {
  const uint8_t *buf = arg->data;
  size_t len = arg->len;
  if (enc == MS_ENC_JSON || !arg->binary)
    memset(err, 0, sizeof *err); /* (ms_msg_decode() clears it itself) */
  if (enc == MS_ENC_JSON) {
    if (arg->binary) {
      snprintf(err->what, sizeof err->what,
               "binary message on microstream.json.v1");
      return MS_ERR_BAD_MESSAGE;
    }
    ms_mpbuf_reset(scratch);
    int rv = ms_json_to_mp((const char *)buf, len, scratch, err->what,
                           sizeof err->what);
    if (rv)
      return rv;
    buf = (const uint8_t *)scratch->sb.data;
    len = scratch->sb.size;
  } else if (!arg->binary) {
    snprintf(err->what, sizeof err->what, "text message on microstream.v1");
    return MS_ERR_BAD_MESSAGE;
  }
  msgpack_zone_clear(zone);
  return ms_msg_decode(msg, zone, buf, len, dir, err);
}

int ms_valid_service_name(const char *s, size_t len) {
  if (!s || len < 1 || len > 128)
    return 0;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
          ch == '-'))
      return 0;
  }
  return 1;
}
