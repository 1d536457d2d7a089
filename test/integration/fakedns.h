/* A tiny DNS server on 127.0.0.1 (UDP, a thread of its own) for tests of
 * name resolution: it answers A and AAAA questions for one name with the
 * addresses it is given, in the given order, and NXDOMAIN for any other
 * name. Bounded: it polls a stop flag every 20 ms. */
#ifndef FAKEDNS_H
#define FAKEDNS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAKEDNS_MAX 4

typedef struct fakedns {
  int fd;
  int port;
  pthread_t thread;
  atomic_int stop;
  atomic_int a_queries, aaaa_queries, other_queries;
  char name[64];
  int n;
  int family[FAKEDNS_MAX];
  uint8_t addr[FAKEDNS_MAX][16];
} fakedns;

/* The question's name as "a.b.c" (lower case); its end offset, or 0. */
static size_t fakedns_qname(const uint8_t *p, size_t len, size_t off,
                            char *out, size_t cap) {
  size_t o = 0;
  while (off < len && p[off]) {
    size_t l = p[off++];
    if (l > 63 || off + l > len || o + l + 2 > cap)
      return 0;
    if (o)
      out[o++] = '.';
    for (size_t i = 0; i < l; i++) {
      char ch = (char)p[off + i];
      out[o++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    off += l;
  }
  out[o] = '\0';
  return off < len ? off + 1 : 0;
}

static void fakedns_answer(fakedns *d, const uint8_t *q, size_t qlen,
                           struct sockaddr_storage *from, socklen_t flen) {
  char name[256];
  if (qlen < 12)
    return;
  size_t end = fakedns_qname(q, qlen, 12, name, sizeof name);
  if (!end || end + 4 > qlen)
    return;
  int qtype = (q[end] << 8) | q[end + 1];
  if (qtype == 1)
    atomic_fetch_add(&d->a_queries, 1);
  else if (qtype == 28)
    atomic_fetch_add(&d->aaaa_queries, 1);
  else
    atomic_fetch_add(&d->other_queries, 1);
  int known = strcmp(name, d->name) == 0;
  uint8_t r[512];
  size_t rl = end + 4;
  if (rl > sizeof r - FAKEDNS_MAX * 28)
    return;
  memcpy(r, q, rl); /* header and question */
  r[2] = (uint8_t)(0x80 | (q[2] & 0x01)); /* QR, RD as asked */
  r[3] = known ? 0x80 : 0x83;             /* RA; NXDOMAIN if unknown */
  r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
  int an = 0;
  for (int i = 0; known && i < d->n; i++) {
    int want = d->family[i] == AF_INET ? 1 : 28;
    if (want != qtype)
      continue;
    size_t al = d->family[i] == AF_INET ? 4 : 16;
    uint8_t *a = r + rl;
    a[0] = 0xC0; /* the name: a pointer to the question's */
    a[1] = 12;
    a[2] = 0;
    a[3] = (uint8_t)want;
    a[4] = 0;
    a[5] = 1; /* IN */
    a[6] = a[7] = 0;
    a[8] = 0;
    a[9] = 60; /* TTL */
    a[10] = 0;
    a[11] = (uint8_t)al;
    memcpy(a + 12, d->addr[i], al);
    rl += 12 + al;
    an++;
  }
  r[7] = (uint8_t)an;
  sendto(d->fd, r, rl, 0, (struct sockaddr *)from, flen);
}

static void *fakedns_main(void *arg) {
  fakedns *d = arg;
  while (!atomic_load(&d->stop)) {
    struct pollfd pf = {d->fd, POLLIN, 0};
    if (poll(&pf, 1, 20) <= 0)
      continue;
    uint8_t q[512];
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(d->fd, q, sizeof q, 0, (struct sockaddr *)&from,
                         &flen);
    if (n > 0)
      fakedns_answer(d, q, (size_t)n, &from, flen);
  }
  return NULL;
}

/* Add an address for the name ("127.0.0.2", "::1"); before start. */
static int fakedns_add(fakedns *d, const char *addr) {
  if (d->n >= FAKEDNS_MAX)
    return -1;
  if (inet_pton(AF_INET, addr, d->addr[d->n]) == 1)
    d->family[d->n] = AF_INET;
  else if (inet_pton(AF_INET6, addr, d->addr[d->n]) == 1)
    d->family[d->n] = AF_INET6;
  else
    return -1;
  d->n++;
  return 0;
}

static int fakedns_start(fakedns *d, const char *name) {
  d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (d->fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (bind(d->fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(d->fd, (struct sockaddr *)&a, &al) != 0) {
    close(d->fd);
    return -1;
  }
  d->port = ntohs(a.sin_port);
  snprintf(d->name, sizeof d->name, "%s", name);
  atomic_store(&d->stop, 0);
  if (pthread_create(&d->thread, NULL, fakedns_main, d) != 0) {
    close(d->fd);
    return -1;
  }
  return 0;
}

static void fakedns_stop(fakedns *d) {
  atomic_store(&d->stop, 1);
  pthread_join(d->thread, NULL);
  close(d->fd);
}

#endif
