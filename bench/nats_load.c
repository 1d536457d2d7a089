/*
 * nats-bench: the same workload on nats-server, through nats.c.
 *
 *   nats-bench echo --url nats://127.0.0.1:PORT   subscribes "echo" and
 *                                                 publishes each message
 *                                                 back to its reply subject
 *   nats-bench req --url URL --conc 1 ...         natsConnection_Request
 *   nats-bench req --url URL --conc C ...         C publish-requests to one
 *                                                 inbox with an async
 *                                                 subscription; each reply
 *                                                 sends the next
 *   nats-bench idle --url HOST:PORT --n N         N connections with one
 *                                                 subscription each, speaking
 *                                                 the text protocol on one
 *                                                 epoll thread (nats.c would
 *                                                 start threads per
 *                                                 connection); answers the
 *                                                 server's PING
 *
 * natsOptions_SetSendAsap is on: without it nats.c waits about 1 ms before
 * flushing, which would not be a fair peer.
 */
#include <nats/nats.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_common.h"

static natsConnection *connect_nats(const char *url) {
  natsOptions *opts = NULL;
  natsConnection *nc = NULL;
  if (natsOptions_Create(&opts) != NATS_OK) return NULL;
  natsOptions_SetURL(opts, url);
  natsOptions_SetSendAsap(opts, true);
  natsOptions_SetNoEcho(opts, true);
  if (strncmp(url, "tls://", 6) == 0) {
    /* The same check as the microstream client: chain from the CA file,
     * host name. */
    const char *ca = getenv("MS_BENCH_CA");
    natsOptions_SetSecure(opts, true);
    if (ca)
      natsOptions_LoadCATrustedCertificates(opts, ca);
    natsOptions_SetExpectedHostname(opts, "localhost");
  }
  if (natsConnection_Connect(&nc, opts) != NATS_OK) nc = NULL;
  natsOptions_Destroy(opts);
  return nc;
}

/* ---- echo ---------------------------------------------------------------- */

static void on_echo(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                    void *closure) {
  const char *reply = natsMsg_GetReply(msg);
  if (reply)
    natsConnection_Publish(nc, reply, natsMsg_GetData(msg),
                           natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

static int run_echo(const bench_opts *o) {
  natsConnection *nc = connect_nats(o->url);
  natsSubscription *sub = NULL;
  char b[256];
  if (!nc || natsConnection_Subscribe(&sub, nc, "echo", on_echo, NULL) !=
                 NATS_OK)
    return 1;
  natsConnection_Flush(nc);
  while (read(0, b, sizeof b) > 0) {
  }
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(nc);
  return 0;
}

/* ---- requester ----------------------------------------------------------- */

static bench_phase ph;
static int64_t sent[BENCH_MAX_CONC];
static const char *inbox = "_INBOX.bench";
static atomic_int finished;
static int in_flight;

static void send_slot(natsConnection *nc, uint32_t s) {
  uint8_t msg[BENCH_PAYLOAD];
  memset(msg, 'x', sizeof msg);
  memcpy(msg, &s, 4);
  sent[s] = bench_now_ns();
  natsConnection_PublishRequest(nc, "echo", inbox, msg, sizeof msg);
  in_flight++;
}

/* All the requester's state is touched from this callback only (the
 * subscription's one delivery thread) once the first batch is out. */
static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                     void *closure) {
  uint32_t s = 0;
  int64_t now = bench_now_ns();
  int bad = natsMsg_GetDataLength(msg) != BENCH_PAYLOAD;
  if (!bad) memcpy(&s, natsMsg_GetData(msg), 4);
  natsMsg_Destroy(msg);
  if (bad || s >= BENCH_MAX_CONC) return;
  in_flight--;
  if (!bench_phase_tick(&ph, now, now - sent[s], 0)) send_slot(nc, s);
  if (ph.done && in_flight == 0) atomic_store(&finished, 1);
}

static int run_req(const bench_opts *o) {
  natsConnection *nc = connect_nats(o->url);
  natsSubscription *sub = NULL;
  int i;
  if (!nc) return 1;
  bench_phase_init(&ph, o);
  if (o->conc == 1) {
    uint8_t msg[BENCH_PAYLOAD];
    memset(msg, 'x', sizeof msg);
    bench_phase_start(&ph);
    while (!ph.done) {
      natsMsg *reply = NULL;
      int64_t t0 = bench_now_ns(), t1;
      natsStatus s = natsConnection_Request(&reply, nc, "echo", msg,
                                            sizeof msg, 10000);
      t1 = bench_now_ns();
      bench_phase_tick(&ph, t1, t1 - t0,
                       s != NATS_OK || natsMsg_GetDataLength(reply) !=
                                           BENCH_PAYLOAD);
      natsMsg_Destroy(reply);
    }
  } else {
    if (natsConnection_Subscribe(&sub, nc, inbox, on_reply, NULL) != NATS_OK)
      return 1;
    natsConnection_Flush(nc);
    bench_phase_start(&ph);
    /* The first batch goes out before any reply can arrive: the callback
     * thread only starts touching the state after these publishes. */
    for (i = 0; i < o->conc; i++) send_slot(nc, (uint32_t)i);
    while (!atomic_load(&finished)) usleep(2000);
    natsSubscription_Destroy(sub);
  }
  bench_phase_report(&ph);
  natsConnection_Destroy(nc);
  free(ph.lat.v);
  return 0;
}

/* ---- idle: the text protocol on one thread ----------------------------------- */

static int run_idle(const bench_opts *o) {
  char host[256] = "127.0.0.1";
  int port = 4222, ep, ready = 0, announced = 0;
  long i;
  const char *u = o->url, *colon;
  struct epoll_event ev, evs[256];
  if (!strncmp(u, "nats://", 7)) u += 7;
  colon = strrchr(u, ':');
  if (colon) {
    snprintf(host, sizeof host, "%.*s", (int)(colon - u), u);
    port = atoi(colon + 1);
  }
  bench_raise_nofile();
  ep = epoll_create1(0);
  ev.events = EPOLLIN;
  ev.data.fd = 0;
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  for (i = 0; i < o->n; i++) {
    struct sockaddr_in a;
    char hello[256];
    int fd = socket(AF_INET, SOCK_STREAM, 0), n;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
      fprintf(stderr, "nats-bench: connect %ld: %s\n", i, strerror(errno));
      return 1;
    }
    n = snprintf(hello, sizeof hello,
                 "CONNECT {\"verbose\":false,\"pedantic\":false,"
                 "\"name\":\"%s-%ld\"}\r\nSUB %s.%ld 1\r\nPING\r\n",
                 o->name, i, o->name, i);
    if (write(fd, hello, (size_t)n) != n) return 1;
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  for (;;) {
    int n = epoll_wait(ep, evs, 256, 50), k;
    for (k = 0; k < n; k++) {
      char buf[4096];
      int fd = evs[k].data.fd;
      ssize_t r = read(fd, buf, sizeof buf - 1);
      if (fd == 0) {
        if (r <= 0) return 0;
        continue;
      }
      if (r <= 0) {
        fprintf(stderr, "nats-bench: connection lost\n");
        return 1;
      }
      buf[r] = 0;
      /* Lines of interest are whole in one read at this rate. */
      if (strstr(buf, "PONG\r\n")) ready++;
      if (strstr(buf, "PING\r\n") && write(fd, "PONG\r\n", 6) != 6) return 1;
      if (strstr(buf, "-ERR")) {
        fprintf(stderr, "nats-bench: %s", buf);
        return 1;
      }
    }
    if (!announced && ready >= o->n) {
      announced = 1;
      printf("ready %ld\n", o->n);
      fflush(stdout);
    }
  }
}

int main(int argc, char **argv) {
  bench_opts o;
  int rc;
  signal(SIGPIPE, SIG_IGN);
  if (bench_parse(argc, argv, &o) != 0) {
    fprintf(stderr, BENCH_USAGE, argv[0]);
    return 2;
  }
  if (!strcmp(o.mode, "echo"))
    rc = run_echo(&o);
  else if (!strcmp(o.mode, "req"))
    rc = run_req(&o);
  else if (!strcmp(o.mode, "idle"))
    return run_idle(&o);
  else {
    fprintf(stderr, BENCH_USAGE, argv[0]);
    return 2;
  }
  nats_Close();
  return rc;
}
