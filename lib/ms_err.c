/* Error strings, wire code mapping, the default allocator, ms_buf. */
#include "ms_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <errno.h>

static const char *const wire_codes[] = {
    "TARGET_SERVICE_NOT_FOUND", "EVENT_NOT_FOUND",
    "REQUEST_TIMEOUT",          "INTERNAL_SERVER_ERROR",
    "DUPLICATE_SERVICE_REGISTRATION", "TARGET_DISCONNECTED",
    "UNAUTHORIZED",             "PAYLOAD_TOO_LARGE",
    "TOO_MANY_PENDING",         "BAD_REQUEST",
    "UNSUPPORTED_VERSION",      "CANCELLED",
    "SLOW_CONSUMER",            "HUB_UNAVAILABLE",
};

const char *ms_err_to_wire(int err) {
  if (err <= MS_ERR_TARGET_SERVICE_NOT_FOUND && err >= MS_ERR_HUB_UNAVAILABLE)
    return wire_codes[-err - 401];
  return NULL;
}

int ms_err_from_wire(const char *code, size_t len) {
  if (!code)
    return MS_ERR_APPLICATION;
  for (size_t i = 0; i < MS_ARRAY_LEN(wire_codes); i++) {
    if (strlen(wire_codes[i]) == len && memcmp(wire_codes[i], code, len) == 0)
      return -401 - (int)i;
  }
  return MS_ERR_APPLICATION;
}

const char *ms_strerror(int err) {
  switch (err) {
  case MS_OK: return "success";
  case MS_ERR_WOULDBLOCK: return "operation would block";
  case MS_ERR_AGAIN: return "try again";
  case MS_ERR_PROTO: return "protocol error";
  case MS_ERR_BAD_MESSAGE: return "malformed message";
  case MS_ERR_HTTP: return "malformed HTTP";
  case MS_ERR_HANDSHAKE: return "WebSocket handshake failed";
  case MS_ERR_TOO_BIG: return "message too big";
  case MS_ERR_UTF8: return "invalid UTF-8";
  case MS_ERR_NEED_MORE: return "need more input";
  case MS_ERR_INVALID_ARG: return "invalid argument";
  case MS_ERR_STATE: return "invalid state for this call";
  case MS_ERR_NOT_FOUND: return "not found";
  case MS_ERR_EXISTS: return "already exists";
  case MS_ERR_LIMIT: return "limit reached";
  case MS_ERR_BUFFER_FULL: return "output buffer full";
  case MS_ERR_TARGET_SERVICE_NOT_FOUND: return "target service not found";
  case MS_ERR_EVENT_NOT_FOUND: return "event not found";
  case MS_ERR_REQUEST_TIMEOUT: return "request timed out";
  case MS_ERR_INTERNAL_SERVER_ERROR: return "internal server error";
  case MS_ERR_DUPLICATE_SERVICE_REGISTRATION:
    return "service name already registered";
  case MS_ERR_TARGET_DISCONNECTED: return "target disconnected";
  case MS_ERR_UNAUTHORIZED: return "unauthorized";
  case MS_ERR_PAYLOAD_TOO_LARGE: return "payload too large";
  case MS_ERR_TOO_MANY_PENDING: return "too many requests in flight";
  case MS_ERR_BAD_REQUEST: return "bad request";
  case MS_ERR_UNSUPPORTED_VERSION: return "unsupported protocol version";
  case MS_ERR_CANCELLED: return "cancelled";
  case MS_ERR_SLOW_CONSUMER: return "slow consumer";
  case MS_ERR_HUB_UNAVAILABLE: return "hub unavailable";
  case MS_ERR_APPLICATION: return "application error";
  case MS_ERR_CALLBACK_FAILURE: return "callback failure";
  case MS_ERR_IO: return "I/O error";
  case MS_ERR_CLOSED: return "connection closed";
  case MS_ERR_TIMEOUT: return "timed out";
  case MS_ERR_ADDRESS: return "bad or unresolvable address";
  case MS_ERR_NOMEM: return "out of memory";
  case MS_ERR_INTERNAL: return "internal error";
  default: return "unknown error";
  }
}

int ms_err_is_fatal(int err) { return err <= -900; }

static void *d_malloc(size_t n, void *ud) { (void)ud; return malloc(n); }
static void d_free(void *p, void *ud) { (void)ud; free(p); }
static void *d_calloc(size_t k, size_t n, void *ud) { (void)ud; return calloc(k, n); }
static void *d_realloc(void *p, size_t n, void *ud) { (void)ud; return realloc(p, n); }

static const ms_allocator default_allocator = {d_malloc, d_free, d_calloc,
                                               d_realloc, NULL};

const ms_allocator *ms_default_allocator(void) { return &default_allocator; }

char *ms_strndup(const ms_allocator *m, const char *s, size_t n) {
  char *r = ms_malloc(m, n + 1);
  if (!r)
    return NULL;
  if (n)
    memcpy(r, s, n);
  r[n] = '\0';
  return r;
}

void ms_os_random(void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = getrandom(p, len, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      abort(); /* no entropy source: nothing sensible to do */
    }
    p += r;
    len -= (size_t)r;
  }
}

/* ---- ms_buf ---- */

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
