/* Engine.IO 4 / Socket.IO 5 packet parsing (see ms_eio.h). */
#include "ms_eio.h"

#include <nettle/base64.h>

int ms_eio_parse_ws(int binary, const uint8_t *p, size_t n,
                    ms_eio_packet *out) {
  memset(out, 0, sizeof *out);
  if (binary) {
    out->type = MS_EIO_MESSAGE;
    out->binary = 1;
    out->data = p;
    out->len = n;
    return 0;
  }
  if (n < 1 || p[0] < '0' || p[0] > '6')
    return MS_ERR_BAD_MESSAGE;
  out->type = p[0] - '0';
  out->data = p + 1;
  out->len = n - 1;
  return 0;
}

static int b64_decode(const uint8_t *in, size_t n, ms_buf *scratch) {
  ms_buf_reset(scratch);
  if (n % 4)
    return MS_ERR_BAD_MESSAGE;
  if (ms_buf_reserve(scratch, BASE64_DECODE_LENGTH(n) + 1))
    return MS_ERR_NOMEM;
  struct base64_decode_ctx ctx;
  size_t dn = BASE64_DECODE_LENGTH(n);
  base64_decode_init(&ctx);
  if (!base64_decode_update(&ctx, &dn, (uint8_t *)scratch->data, n,
                            (const char *)in) ||
      !base64_decode_final(&ctx))
    return MS_ERR_BAD_MESSAGE;
  scratch->len = dn;
  return 0;
}

int ms_eio_payload_next(const uint8_t *body, size_t len, size_t *pos,
                        ms_buf *scratch, ms_eio_packet *out) {
  memset(out, 0, sizeof *out);
  size_t at = *pos;
  if (at > len)
    return MS_ERR_NEED_MORE;
  if (at == len) {
    if (at == 0)
      return MS_ERR_BAD_MESSAGE;
    return MS_ERR_NEED_MORE;
  }
  const uint8_t *sep = memchr(body + at, MS_EIO_SEP, len - at);
  size_t end = sep ? (size_t)(sep - body) : len;
  /* The position after this packet: past the separator, or past the end
   * (so the next call reports the end even for a trailing separator). */
  *pos = sep ? end + 1 : len + 1;
  if (sep && end + 1 == len)
    return MS_ERR_BAD_MESSAGE; /* trailing separator: an empty packet */
  const uint8_t *p = body + at;
  size_t n = end - at;
  if (n >= 1 && p[0] == 'b') {
    int rv = b64_decode(p + 1, n - 1, scratch);
    if (rv)
      return rv;
    out->type = MS_EIO_MESSAGE;
    out->binary = 1;
    out->data = (const uint8_t *)scratch->data;
    out->len = scratch->len;
    return 0;
  }
  return ms_eio_parse_ws(0, p, n, out);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int ms_eio_query_get(const char *q, size_t qlen, const char *key, char *out,
                     size_t cap, size_t *out_len) {
  size_t klen = strlen(key);
  size_t i = 0;
  if (out_len)
    *out_len = 0;
  if (cap)
    out[0] = '\0';
  while (i < qlen) {
    size_t j = i;
    while (j < qlen && q[j] != '&')
      j++;
    /* q[i..j) is one "name=value" (names are compared undecoded: ours are
     * plain ASCII). */
    if (j - i > klen && memcmp(q + i, key, klen) == 0 && q[i + klen] == '=') {
      size_t o = 0;
      for (size_t k = i + klen + 1; k < j; k++) {
        char c = q[k];
        if (c == '%') {
          if (k + 2 >= j)
            return -1;
          int hi = hexval(q[k + 1]), lo = hexval(q[k + 2]);
          if (hi < 0 || lo < 0)
            return -1;
          c = (char)(hi * 16 + lo);
          k += 2;
        } else if (c == '+') {
          c = ' ';
        }
        if (o + 1 >= cap)
          return -1;
        out[o++] = c;
      }
      out[o] = '\0';
      if (out_len)
        *out_len = o;
      return 1;
    }
    i = j + 1;
  }
  return 0;
}

int ms_sio_parse(const char *p, size_t n, ms_sio_packet *out) {
  memset(out, 0, sizeof *out);
  out->nsp = "/";
  out->nsp_len = 1;
  if (n < 1 || p[0] < '0' || p[0] > '6')
    return MS_ERR_BAD_MESSAGE;
  out->type = p[0] - '0';
  size_t i = 1;
  if (out->type == MS_SIO_BINARY_EVENT || out->type == MS_SIO_BINARY_ACK) {
    size_t s = i;
    uint64_t v = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9' && i - s < 6)
      v = v * 10 + (uint64_t)(p[i++] - '0');
    if (i == s || i >= n || p[i] != '-')
      return MS_ERR_BAD_MESSAGE;
    out->attachments = v;
    i++;
  }
  if (i < n && p[i] == '/') {
    size_t s = i;
    while (i < n && p[i] != ',')
      i++;
    out->nsp = p + s;
    out->nsp_len = i - s;
    if (i < n)
      i++; /* the ',' */
  }
  if (i < n && p[i] >= '0' && p[i] <= '9') {
    size_t s = i;
    uint64_t v = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
      if (i - s >= 15)
        return MS_ERR_BAD_MESSAGE; /* beyond 2^53: not an id */
      v = v * 10 + (uint64_t)(p[i++] - '0');
    }
    out->has_ack = 1;
    out->ack_id = v;
  }
  out->data = p + i;
  out->data_len = n - i;
  return 0;
}
