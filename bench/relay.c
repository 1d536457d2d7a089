/*
 * relay-bench: the floor. 64-byte messages go client -> relay -> server ->
 * relay -> client over loopback TCP: the same four hops as a round trip
 * through a hub, with nothing done to the bytes. Blocking sockets,
 * TCP_NODELAY; the relay is one thread (poll, then a blocking read and
 * write), like a single-threaded hub.
 *
 *   relay-bench relay --url PORT     listen on 127.0.0.1:PORT (0: any, the
 *                                    port is printed); the first connection
 *                                    is the server, the second the client
 *   relay-bench echo --url PORT      the server: writes back what it reads
 *   relay-bench req --url PORT --conc C ...   the client
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_common.h"

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int connect_port(int port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
  nodelay(fd);
  return fd;
}

static int run_relay(int port) {
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  int one = 1, lfd, srv, cli;
  uint8_t buf[65536];
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4) != 0)
    return 1;
  getsockname(lfd, (struct sockaddr *)&a, &alen);
  printf("port %d\n", ntohs(a.sin_port));
  fflush(stdout);
  srv = accept(lfd, NULL, NULL);
  if (srv < 0) return 1;
  nodelay(srv);
  /* The client reconnects for each phase: serve one at a time. */
  for (;;) {
    struct pollfd p[2];
    cli = accept(lfd, NULL, NULL);
    if (cli < 0) return 1;
    nodelay(cli);
    p[0].fd = cli;
    p[0].events = POLLIN;
    p[1].fd = srv;
    p[1].events = POLLIN;
    for (;;) {
      ssize_t r;
      if (poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return 1;
      }
      if (p[0].revents) {
        r = read(cli, buf, sizeof buf);
        if (r <= 0) break;
        if (write_all(srv, buf, (size_t)r) != 0) return 1;
      }
      if (p[1].revents) {
        r = read(srv, buf, sizeof buf);
        if (r <= 0) return 1;
        if (write_all(cli, buf, (size_t)r) != 0) break;
      }
    }
    close(cli);
  }
}

static int run_echo(int port) {
  uint8_t buf[65536];
  int fd = connect_port(port);
  if (fd < 0) return 1;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r <= 0) return 0;
    if (write_all(fd, buf, (size_t)r) != 0) return 0;
  }
}

/* Each message carries its slot number in its first 4 bytes. */
static int run_req(const bench_opts *o, int port) {
  static int64_t sent[BENCH_MAX_CONC];
  uint8_t msg[BENCH_PAYLOAD], buf[BENCH_PAYLOAD * BENCH_MAX_CONC];
  size_t have = 0;
  int in_flight = 0, i;
  bench_phase ph;
  int fd = connect_port(port);
  if (fd < 0) return 1;
  memset(msg, 'x', sizeof msg);
  bench_phase_init(&ph, o);
  bench_phase_start(&ph);
  for (i = 0; i < o->conc; i++) {
    uint32_t s = (uint32_t)i;
    memcpy(msg, &s, 4);
    sent[i] = bench_now_ns();
    if (write_all(fd, msg, sizeof msg) != 0) return 1;
    in_flight++;
  }
  while (in_flight > 0) {
    size_t off = 0;
    ssize_t r = read(fd, buf + have, sizeof buf - have);
    if (r <= 0) return 1;
    have += (size_t)r;
    while (have - off >= BENCH_PAYLOAD) {
      uint32_t s;
      int64_t now = bench_now_ns();
      memcpy(&s, buf + off, 4);
      off += BENCH_PAYLOAD;
      in_flight--;
      if (s >= (uint32_t)o->conc) return 1;
      if (!bench_phase_tick(&ph, now, now - sent[s], 0)) {
        memcpy(msg, &s, 4);
        sent[s] = bench_now_ns();
        if (write_all(fd, msg, sizeof msg) != 0) return 1;
        in_flight++;
      }
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
  close(fd);
  bench_phase_report(&ph);
  free(ph.lat.v);
  return 0;
}

int main(int argc, char **argv) {
  bench_opts o;
  signal(SIGPIPE, SIG_IGN);
  if (bench_parse(argc, argv, &o) != 0) {
    fprintf(stderr, BENCH_USAGE, argv[0]);
    return 2;
  }
  if (!strcmp(o.mode, "relay")) return run_relay(atoi(o.url));
  if (!strcmp(o.mode, "echo")) return run_echo(atoi(o.url));
  if (!strcmp(o.mode, "req")) return run_req(&o, atoi(o.url));
  fprintf(stderr, BENCH_USAGE, argv[0]);
  return 2;
}
