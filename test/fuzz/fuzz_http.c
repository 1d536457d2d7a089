/* Fuzz the HTTP side: the head parser directly, then a server-role and a
 * client-role ms_conn fed the input in chunks whose sizes derive from the
 * input itself (so a crash reproduces from the file alone). */
#include "../ms_test_random.h"
#include <microstream/ms_conn.h>

#include "ms_http.h"
#include "ms_internal.h"

#include <stdlib.h>

typedef struct fz {
  int respond; /* answer plain requests from the callback */
  int refuse;
  int keep;    /* ... keeping the connection for the next request */
} fz;

static int f_upgrade(ms_conn *c, const ms_http_request *req, void *ud) {
  fz *f = ud;
  size_t n;
  /* Touch every header so ASan sees any pointer past the buffer. */
  for (size_t i = 0; i < req->nheaders; i++)
    (void)ms_http_header_get(req, "Origin", &n);
  (void)c;
  return f->refuse ? 403 : 0;
}

static void f_http(ms_conn *c, const ms_http_request *req, void *ud) {
  fz *f = ud;
  volatile char sink = 0;
  for (size_t i = 0; i < req->path_len; i++)
    sink ^= req->path[i];
  for (size_t i = 0; i < req->query_len; i++)
    sink ^= req->query[i];
  (void)sink;
  if (f->respond && f->keep) {
    /* The request's strings stay readable after a kept answer. */
    int rv = ms_conn_http_respond_keep(c, 200, "text/plain", NULL, "ok", 2);
    if (rv != 0 && rv != 1)
      abort();
    for (size_t i = 0; i < req->path_len; i++)
      sink ^= req->path[i];
    for (size_t i = 0; i < req->body_len; i++)
      sink ^= (char)req->body[i];
    (void)sink;
  } else if (f->respond) {
    ms_conn_http_respond(c, 200, "text/plain", NULL, "ok", 2);
  }
}

static void f_message(ms_conn *c, const ms_conn_message_arg *a, void *ud) {
  (void)ud;
  ms_conn_send(c, a->binary, a->data, a->len);
}

static const ms_conn_callbacks cbs = {f_upgrade, f_http, NULL, f_message,
                                      NULL, NULL};

static uint32_t hash(const uint8_t *d, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ d[i]) * 16777619u;
  return h;
}

static void drain(ms_conn *c) {
  size_t n;
  while (ms_conn_peek(c, &n) && n)
    ms_conn_consume(c, n);
}

static void run_conn(ms_conn_role role, const uint8_t *data, size_t size,
                     uint32_t seed) {
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, role);
  cfg.max_header_bytes = 1024 + (seed & 1023);
  cfg.max_headers = 1 + (seed >> 10) % 40;
  cfg.max_message = 4096;
  fz f = {(int)(seed >> 16) & 1, (seed >> 17 & 7) == 0, (seed >> 20 & 1)};
  ms_conn *c = NULL;
  if (ms_conn_new(&c, &cfg, &cbs, &f, NULL) != 0)
    return;
  ms_conn_start(c, 0);
  drain(c);
  size_t off = 0;
  uint32_t r = seed | 1;
  int64_t now = 1;
  while (off < size && ms_conn_want_read(c)) {
    r = r * 1103515245u + 12345u;
    size_t chunk = (r >> 16) % 97 + 1;
    if ((r >> 8 & 15) == 0)
      chunk = size - off;
    chunk = chunk < size - off ? chunk : size - off;
    if (ms_conn_feed(c, data + off, chunk, now) != 0)
      break;
    off += chunk;
    drain(c);
    now += 7;
  }
  ms_conn_tick(c, now + 20000);
  ms_conn_eof(c, now + 20001);
  drain(c);
  ms_conn_del(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_http_header hdrs[16];
  ms_http_request req;
  ms_http_response res;
  size_t hl;
  const char *s = (const char *)data;
  if (ms_http_parse_request(s, size, 4096, hdrs, 16, &req, &hl) == 0) {
    if (hl > size)
      abort();
    for (size_t i = 0; i < req.nheaders; i++) {
      size_t pos = 0, tl;
      const char *t;
      while (ms_http_list_next(hdrs[i].value, hdrs[i].value_len, &pos, &t,
                               &tl))
        if (tl == 0 || t < hdrs[i].value ||
            t + tl > hdrs[i].value + hdrs[i].value_len)
          abort();
    }
  }
  if (ms_http_parse_response(s, size, 4096, hdrs, 16, &res, &hl) == 0) {
    if (hl > size || res.status < 100 || res.status > 999)
      abort();
  }
  size_t scan = 0;
  for (size_t i = 0; i <= size && i < 4096; i += 13)
    if (ms_http_find_end(s, i, &scan, &hl) == 0 && hl > i)
      abort();

  uint32_t seed = hash(data, size);
  run_conn(MS_CONN_SERVER, data, size, seed);
  run_conn(MS_CONN_CLIENT, data, size, seed);
  return 0;
}
