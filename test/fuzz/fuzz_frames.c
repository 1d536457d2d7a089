/* Fuzz WebSocket frame input: a server conn past a valid upgrade, then a
 * client conn past a valid 101, each fed the input as frames in chunks
 * whose sizes derive from the input. Callbacks answer, ping, close and
 * (rarely) free the conn, to exercise the re-entrant paths too. */
#include "../ms_test_random.h"
#include <microstream/ms_conn.h>

#include "ms_internal.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct fz {
  uint32_t r;
  int freed;
} fz;

static uint32_t next(fz *f) {
  f->r = f->r * 1103515245u + 12345u;
  return f->r >> 16;
}

static void f_message(ms_conn *c, const ms_conn_message_arg *a, void *ud) {
  fz *f = ud;
  uint32_t k = next(f) % 16;
  if (k < 10)
    ms_conn_send(c, a->binary, a->data, a->len);
  else if (k == 10)
    ms_conn_ping(c, a->data, a->len < 125 ? a->len : 125);
  else if (k == 11)
    ms_conn_close(c, 1000, "fuzz");
  else if (k == 12) {
    ms_conn_del(c);
    f->freed = 1;
  }
}

static void f_pong(ms_conn *c, const uint8_t *d, size_t n, void *ud) {
  (void)c;
  (void)d;
  (void)n;
  (void)ud;
}

static void f_close(ms_conn *c, const ms_conn_close_arg *a, void *ud) {
  fz *f = ud;
  if (a->reason[a->reason_len] != '\0')
    abort();
  if (next(f) % 4 == 0) {
    ms_conn_del(c);
    f->freed = 1;
  }
}

static const ms_conn_callbacks cbs = {NULL, NULL, NULL, f_message, f_pong,
                                      f_close};

static uint32_t hash(const uint8_t *d, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ d[i]) * 16777619u;
  return h;
}

static void drain(ms_conn *c, fz *f, size_t limit) {
  size_t n;
  const uint8_t *p;
  /* Sometimes leave output unconsumed to exercise backpressure. */
  while (limit && (p = ms_conn_peek(c, &n)) != NULL && n) {
    size_t k = 1 + next(f) % n;
    if (k > limit)
      k = limit;
    ms_conn_consume(c, k);
    limit -= k;
  }
}

static void run(ms_conn *c, fz *f, const uint8_t *data, size_t size) {
  size_t off = 0;
  int64_t now = 10;
  while (off < size && !f->freed) {
    size_t chunk = next(f) % 61 + 1;
    if (next(f) % 8 == 0)
      chunk = size - off;
    chunk = chunk < size - off ? chunk : size - off;
    if (ms_conn_want_read(c))
      ms_conn_feed(c, data + off, chunk, now);
    off += chunk;
    if (f->freed)
      return;
    drain(c, f, next(f) % 3 ? SIZE_MAX : 100);
    if (next(f) % 32 == 0)
      ms_conn_tick(c, now += 3000);
    if (f->freed)
      return;
  }
  ms_conn_tick(c, now + 60000);
  if (f->freed)
    return;
  ms_conn_eof(c, now + 60001);
  if (f->freed)
    return;
  drain(c, f, SIZE_MAX);
  ms_conn_del(c);
}

static const char upgrade[] =
    "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint32_t seed = hash(data, size);
  ms_conn_config cfg;

  /* Server role. */
  ms_conn_config_init(&cfg, MS_CONN_SERVER);
  cfg.max_message = 1 + seed % 70000;
  cfg.out_high_water = 4096;
  cfg.out_low_water = 1024;
  fz f = {seed | 1, 0};
  ms_conn *s = NULL;
  if (ms_conn_new(&s, &cfg, &cbs, &f, NULL) != 0)
    return 0;
  ms_conn_start(s, 0);
  ms_conn_feed(s, (const uint8_t *)upgrade, sizeof upgrade - 1, 1);
  if (!ms_conn_is_open(s))
    abort();
  drain(s, &f, SIZE_MAX);
  run(s, &f, data, size);

  /* Client role: answer its request with a valid 101 first. */
  ms_conn_config_init(&cfg, MS_CONN_CLIENT);
  cfg.max_message = 1 + (seed >> 8) % 70000;
  fz g = {seed ^ 0x5bd1e995u, 0};
  ms_conn *c = NULL;
  if (ms_conn_new(&c, &cfg, &cbs, &g, NULL) != 0)
    return 0;
  ms_conn_start(c, 0);
  size_t n;
  const uint8_t *p = ms_conn_peek(c, &n);
  const char *k = p ? memmem(p, n, "Sec-WebSocket-Key: ", 19) : NULL;
  if (!k)
    abort();
  char accept[29];
  ms_ws_accept_key(k + 19, 24, accept);
  ms_conn_consume(c, n);
  char resp[256];
  int len = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
  ms_conn_feed(c, (const uint8_t *)resp, (size_t)len, 1);
  if (!ms_conn_is_open(c))
    abort();
  run(c, &g, data, size);
  return 0;
}
