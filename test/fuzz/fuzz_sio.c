/* Fuzz the hub's Socket.IO sessions end to end: two polling sessions are
 * opened and connected ("fa", "fb"), then the input, split at 0xFF bytes,
 * drives them: each part's first byte picks an action (POST the rest as a
 * payload to fa or fb, poll, let time pass, or send the rest as a
 * /socket.io/ query), so requests, responses, logs and malformed packets
 * meet the router, the translation and the session timers. */
#include "../ms_test_random.h"
#include "ms_hub_int.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_OPEN 64

typedef struct fz {
  ms_hub *h;
  int64_t now;
  ms_hub_conn *open[MAX_OPEN];
  size_t nopen;
  char last[4096]; /* start of the last response seen */
} fz;

static void pump(fz *f) {
  ms_hub_conn *d;
  while ((d = ms_hub_next_dirty(f->h)) != NULL)
    (void)d;
  for (size_t i = 0; i < f->nopen;) {
    ms_hub_conn *hc = f->open[i];
    size_t n;
    const uint8_t *p;
    while ((p = ms_hub_conn_peek(hc, &n)) != NULL && n) {
      size_t k = n < sizeof f->last - 1 ? n : sizeof f->last - 1;
      memcpy(f->last, p, k);
      f->last[k] = '\0';
      ms_hub_conn_consume(hc, n);
    }
    if (!ms_hub_conn_want_read(hc) && !ms_hub_conn_want_write(hc)) {
      ms_hub_conn_release(hc);
      f->open[i] = f->open[--f->nopen];
      continue;
    }
    i++;
  }
}

static void request(fz *f, const char *head, const uint8_t *body, size_t bn) {
  ms_hub_conn *hc;
  if (f->nopen == MAX_OPEN || ms_hub_accept(f->h, &hc, NULL, f->now))
    return;
  f->open[f->nopen++] = hc;
  f->last[0] = '\0';
  ms_hub_conn_feed(hc, (const uint8_t *)head, strlen(head), f->now);
  if (bn)
    ms_hub_conn_feed(hc, body, bn, f->now);
  pump(f);
}

static void post(fz *f, const char *sid, const uint8_t *body, size_t bn) {
  char head[256];
  snprintf(head, sizeof head,
           "POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\n"
           "Host: x\r\nContent-Length: %zu\r\n\r\n",
           sid, bn);
  request(f, head, body, bn);
}

static void poll_get(fz *f, const char *sid) {
  char head[256];
  snprintf(head, sizeof head,
           "GET /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\n"
           "Host: x\r\n\r\n",
           sid);
  request(f, head, NULL, 0);
}

static int open_session(fz *f, const char *name, char sid[24]) {
  char head[256];
  snprintf(head, sizeof head,
           "GET /socket.io/?EIO=4&transport=polling&serviceName=%s "
           "HTTP/1.1\r\nHost: x\r\n\r\n",
           name);
  request(f, head, NULL, 0);
  const char *p = strstr(f->last, "0{\"sid\":\"");
  if (!p)
    return -1;
  memcpy(sid, p + 9, 20);
  sid[20] = '\0';
  post(f, sid, (const uint8_t *)"40", 2);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz f;
  memset(&f, 0, sizeof f);
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.heartbeat_ms = 1000;
  cfg.max_message = 4096;
  cfg.sio_max_sessions = 8;
  cfg.default_timeout_ms = 500;
  cfg.max_late_ms = 500;
  if (ms_hub_new(&f.h, &cfg, NULL, NULL))
    return 0;
  f.now = 1000;
  char sa[24], sb[24];
  if (open_session(&f, "fa", sa) == 0 && open_session(&f, "fb", sb) == 0) {
    size_t at = 0;
    for (int steps = 0; at <= size && steps < 256; steps++) {
      const uint8_t *e = memchr(data + at, 0xFF, size - at);
      size_t end = e ? (size_t)(e - data) : size;
      const uint8_t *part = data + at;
      size_t n = end - at;
      if (n > 0) {
        switch (part[0] % 6) {
        case 0:
          post(&f, sa, part + 1, n - 1);
          break;
        case 1:
          post(&f, sb, part + 1, n - 1);
          break;
        case 2:
          poll_get(&f, part[0] & 8 ? sb : sa);
          break;
        case 3:
          f.now += (int64_t)(n > 1 ? part[1] : 1) * 20;
          ms_hub_tick(f.h, f.now);
          pump(&f);
          break;
        case 4: {
          char head[600];
          size_t k = n - 1 < 400 ? n - 1 : 400;
          int ok = 1;
          for (size_t i = 1; i <= k; i++)
            if (part[i] < 0x21 || part[i] > 0x7e)
              ok = 0;
          if (ok) {
            snprintf(head, sizeof head,
                     "GET /socket.io/?%.*s HTTP/1.1\r\nHost: x\r\n\r\n",
                     (int)k, (const char *)part + 1);
            request(&f, head, NULL, 0);
          }
          break;
        }
        default:
          f.now += 1500; /* past a ping: the sessions must answer */
          ms_hub_tick(f.h, f.now);
          pump(&f);
          break;
        }
      }
      if (!e)
        break;
      at = end + 1;
    }
  }
  f.now += 100000;
  ms_hub_tick(f.h, f.now);
  pump(&f);
  for (size_t i = 0; i < f.nopen; i++)
    ms_hub_conn_release(f.open[i]);
  ms_hub_del(f.h);
  return 0;
}
