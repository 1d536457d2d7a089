/* Socket.IO sessions over HTTP long-polling against a hubsim hub: one
 * HTTP exchange per call, on a new stream each, as a browser would. */
#ifndef SIOSIM_H
#define SIOSIM_H

#include "hubsim.h"

#include <stdio.h>

/* One HTTP exchange with the hub on a new stream; the whole answer (head
 * and body) into out. */
static inline void sio_http(sim *s, const char *head, const char *body,
                            char *out, size_t cap) {
  out[0] = '\0';
  ms_hub_conn *hc = NULL;
  if (ms_hub_accept(s->hub, &hc, NULL, s->now) != 0)
    return;
  ms_hub_conn_feed(hc, (const uint8_t *)head, strlen(head), s->now);
  if (body)
    ms_hub_conn_feed(hc, (const uint8_t *)body, strlen(body), s->now);
  size_t have = 0;
  for (int i = 0; i < 100; i++) {
    while (ms_hub_next_dirty(s->hub))
      ;
    size_t n = 0;
    const uint8_t *p = ms_hub_conn_peek(hc, &n);
    if (!p || !n)
      break;
    size_t k = n < cap - 1 - have ? n : cap - 1 - have;
    memcpy(out + have, p, k);
    have += k;
    ms_hub_conn_consume(hc, n);
  }
  out[have] = '\0';
  ms_hub_conn_release(hc);
}

/* A polling session (name NULL: a watcher), CONNECT sent; its sid. */
static inline int sio_open(sim *s, const char *name, char sid[24]) {
  char head[256], out[4096];
  snprintf(head, sizeof head,
           "GET /socket.io/?EIO=4&transport=polling%s%s HTTP/1.1\r\n"
           "Host: x\r\n\r\n",
           name ? "&serviceName=" : "", name ? name : "");
  sio_http(s, head, NULL, out, sizeof out);
  const char *p = strstr(out, "0{\"sid\":\"");
  if (!p)
    return -1;
  memcpy(sid, p + 9, 20);
  sid[20] = '\0';
  snprintf(head, sizeof head,
           "POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\n"
           "Host: x\r\nContent-Length: 2\r\n\r\n",
           sid);
  sio_http(s, head, "40", out, sizeof out);
  return 0;
}

/* What a poll of session sid gets: the body (packets separated by 0x1e). */
static inline const char *sio_poll(sim *s, const char *sid, char *out,
                                   size_t cap) {
  char head[256];
  snprintf(head, sizeof head,
           "GET /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\n"
           "Host: x\r\n\r\n",
           sid);
  sio_http(s, head, NULL, out, cap);
  const char *b = strstr(out, "\r\n\r\n");
  return b ? b + 4 : "";
}

/* The packet in body that starts with `start`, copied (up to 0x1e). */
static inline int sio_packet(const char *body, const char *start,
                             char *pkt, size_t cap) {
  const char *p = strstr(body, start);
  if (!p)
    return -1;
  const char *e = strchr(p, 0x1e);
  size_t n = e ? (size_t)(e - p) : strlen(p);
  if (n >= cap)
    return -1;
  memcpy(pkt, p, n);
  pkt[n] = '\0';
  return 0;
}

#endif
