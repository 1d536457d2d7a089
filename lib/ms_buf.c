/* ms_buf: the growing byte buffer used for output and text. */
#include "ms_internal.h"

#include <stdio.h>

void ms_buf_init(ms_buf *b, const ms_allocator *mem) {
  b->data = NULL;
  b->len = b->cap = 0;
  b->mem = ms_mem_or_default(mem);
}

int ms_buf_reserve(ms_buf *b, size_t extra) {
  if (!b->mem)
    b->mem = ms_default_allocator();
  if (b->cap - b->len > extra)
    return 0;
  size_t need = b->len + extra + 1;
  if (need < b->len)
    return MS_ERR_NOMEM;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > SIZE_MAX / 2)
      return MS_ERR_NOMEM;
    cap *= 2;
  }
  char *d = ms_realloc(b->mem, b->data, cap);
  if (!d)
    return MS_ERR_NOMEM;
  b->data = d;
  b->cap = cap;
  return 0;
}

int ms_buf_append(ms_buf *b, const void *data, size_t len) {
  int rv = ms_buf_reserve(b, len);
  if (rv)
    return rv;
  if (len)
    memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
  return 0;
}

int ms_buf_appendf(ms_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return MS_ERR_INTERNAL;
  int rv = ms_buf_reserve(b, (size_t)n);
  if (rv)
    return rv;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

int ms_buf_append_json_str(ms_buf *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  int rv = ms_buf_append(b, "\"", 1);
  for (size_t i = 0; rv == 0 && i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') {
      char e[2] = {'\\', (char)ch};
      rv = ms_buf_append(b, e, 2);
    } else if (ch < 0x20 || ch == 0x7f) {
      char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
      rv = ms_buf_append(b, e, 6);
    } else {
      rv = ms_buf_append(b, &s[i], 1);
    }
  }
  if (rv == 0)
    rv = ms_buf_append(b, "\"", 1);
  return rv;
}

void ms_buf_reset(ms_buf *b) { b->len = 0; if (b->data) b->data[0] = '\0'; }

void ms_buf_free(ms_buf *b) {
  if (b->data && b->mem)
    ms_free(b->mem, b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
