/*
 * microstream: an ms_hub on an ms_loop. Accepts streams, feeds each
 * connection, and after every batch of events drains the hub's dirty list
 * so that each connection gets at most one write per loop iteration, no
 * matter how many messages were routed to it.
 */
#include "ms_internal.h"
#include "ms_posix_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

/* Accept at most this many streams per readiness event, so a connection
 * storm cannot starve the connections already open. */
#define HUB_ACCEPT_BATCH 256

typedef struct hub_stream {
  struct ms_posix_hub *ph;
  ms_hub_conn *hc;
  ms_fd_stream s;
  ms_transport t;
  unsigned watched;
  int eof;
  struct hub_stream *prev, *next;
} hub_stream;

struct ms_posix_hub {
  ms_loop *loop;
  ms_hub *hub;
  int listen_fd;
  int port;
  ms_timer *timer;
  int drain_queued;
  hub_stream *streams;
  size_t nstreams;
};

/* Engine ops over a stream, so the driver sees end of stream itself and
 * never reads a socket again after it. */
static int hs_feed(void *e, const uint8_t *d, size_t n, int64_t now) {
  return ms_hub_conn_feed(((hub_stream *)e)->hc, d, n, now);
}
static const uint8_t *hs_peek(void *e, size_t *len) {
  return ms_hub_conn_peek(((hub_stream *)e)->hc, len);
}
static void hs_consume(void *e, size_t n) {
  ms_hub_conn_consume(((hub_stream *)e)->hc, n);
}
static int hs_want_read(const void *e) {
  const hub_stream *s = e;
  return !s->eof && ms_hub_conn_want_read(s->hc);
}
static int hs_want_write(const void *e) {
  return ms_hub_conn_want_write(((const hub_stream *)e)->hc);
}
static void hs_eof(void *e, int64_t now) {
  hub_stream *s = e;
  if (s->eof)
    return;
  s->eof = 1;
  ms_hub_conn_eof(s->hc, now);
}
static const ms_engine_ops hs_ops = {hs_feed,      hs_peek,       hs_consume,
                                     hs_want_read, hs_want_write, hs_eof};

static void on_stream_fd(ms_loop *loop, int fd, unsigned events, void *ud);

static void stream_watch(hub_stream *s, unsigned ev) {
  if (ev == s->watched)
    return;
  if (ms_loop_watch(s->ph->loop, s->s.fd, ev, on_stream_fd, s) == 0)
    s->watched = ev;
}

static void stream_free(hub_stream *s, int release) {
  ms_posix_hub *ph = s->ph;
  stream_watch(s, 0);
  s->t.vt->close(s->t.self);
  if (s->prev)
    s->prev->next = s->next;
  else
    ph->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  ph->nstreams--;
  if (release)
    ms_hub_conn_release(s->hc);
  ms_free(ms_default_allocator(), s);
}

/* Close a finished stream, or watch what it waits for: reading only while
 * the hub takes input (backpressure), writing only while a write would
 * have blocked. */
static void stream_update(hub_stream *s) {
  int r = hs_want_read(s);
  int w = ms_hub_conn_want_write(s->hc);
  if (!r && !w) {
    stream_free(s, 1);
    return;
  }
  size_t pending = 0;
  ms_hub_conn_peek(s->hc, &pending);
  stream_watch(s, (r ? MS_EV_READ : 0u) | (pending ? MS_EV_WRITE : 0u));
}

static void stream_flush(hub_stream *s) {
  ms_pump_write(&hs_ops, s, &s->t, ms_loop_now(s->ph->loop));
  stream_update(s);
}

static void drain(ms_posix_hub *ph) {
  ms_hub_conn *hc;
  while ((hc = ms_hub_next_dirty(ph->hub)) != NULL) {
    hub_stream *s = ms_hub_conn_transport_data(hc);
    if (s)
      stream_flush(s);
  }
  ms_timer_set_at(ph->timer, ms_hub_next_deadline(ph->hub));
}

static void on_drain(void *ud) {
  ms_posix_hub *ph = ud;
  ph->drain_queued = 0;
  drain(ph);
}

static void queue_drain(ms_posix_hub *ph) {
  if (ph->drain_queued)
    return;
  if (ms_loop_defer(ph->loop, on_drain, ph) == 0)
    ph->drain_queued = 1;
  else
    drain(ph); /* out of memory for the queue: drain now */
}

static void on_wakeup(void *ud) { queue_drain(ud); }

static void on_stream_fd(ms_loop *loop, int fd, unsigned events, void *ud) {
  hub_stream *s = ud;
  ms_posix_hub *ph = s->ph;
  MS_UNUSED(fd);
  int64_t now = ms_loop_now(loop);
  if (events & MS_EV_READ)
    ms_pump(&hs_ops, s, &s->t, 0, now);
  else
    ms_pump_write(&hs_ops, s, &s->t, now);
  stream_update(s); /* may free s */
  /* Routing put output on other connections: flush them all at the end
   * of this iteration, once per connection. */
  queue_drain(ph);
}

static void on_listen(ms_loop *loop, int fd, unsigned events, void *ud) {
  ms_posix_hub *ph = ud;
  MS_UNUSED(events);
  for (int i = 0; i < HUB_ACCEPT_BATCH; i++) {
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      break; /* EAGAIN, or EMFILE and friends: try again next time */
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    hub_stream *s = ms_calloc(ms_default_allocator(), 1, sizeof(*s));
    if (!s) {
      close(cfd);
      continue;
    }
    s->ph = ph;
    ms_fd_transport(&s->s, cfd, &s->t);
    if (ms_hub_accept(ph->hub, &s->hc, s, ms_loop_now(loop)) < 0) {
      close(cfd); /* MS_ERR_LIMIT or out of memory */
      ms_free(ms_default_allocator(), s);
      continue;
    }
    s->next = ph->streams;
    if (ph->streams)
      ph->streams->prev = s;
    ph->streams = s;
    ph->nstreams++;
    stream_watch(s, MS_EV_READ);
  }
  queue_drain(ph);
}

static void on_timer(ms_loop *loop, ms_timer *t, void *ud) {
  ms_posix_hub *ph = ud;
  MS_UNUSED(t);
  ms_hub_tick(ph->hub, ms_loop_now(loop));
  drain(ph);
}

int ms_posix_hub_new(ms_posix_hub **pp, ms_loop *loop, ms_hub *h,
                     const char *host, int port) {
  if (!pp || !loop || !h)
    return MS_ERR_INVALID_ARG;
  const ms_allocator *mem = ms_default_allocator();
  ms_posix_hub *ph = ms_calloc(mem, 1, sizeof(*ph));
  if (!ph)
    return MS_ERR_NOMEM;
  ph->loop = loop;
  ph->hub = h;
  int rv = ms_tcp_listen(host, port, &ph->listen_fd, &ph->port);
  if (rv < 0) {
    ms_free(mem, ph);
    return rv;
  }
  rv = ms_loop_timer_start(loop, 0, 0, on_timer, ph, &ph->timer);
  if (rv == 0) {
    ms_timer_set_at(ph->timer, ms_hub_next_deadline(h));
    rv = ms_loop_watch(loop, ph->listen_fd, MS_EV_READ, on_listen, ph);
  }
  if (rv < 0) {
    ms_timer_stop(ph->timer);
    close(ph->listen_fd);
    ms_free(mem, ph);
    return rv;
  }
  ms_hub_set_wakeup(h, on_wakeup, ph);
  *pp = ph;
  return 0;
}

int ms_posix_hub_port(const ms_posix_hub *p) { return p ? p->port : -1; }

void ms_posix_hub_stop_listening(ms_posix_hub *p) {
  if (!p || p->listen_fd < 0)
    return;
  ms_loop_watch(p->loop, p->listen_fd, 0, NULL, NULL);
  close(p->listen_fd);
  p->listen_fd = -1;
}

size_t ms_posix_hub_streams(const ms_posix_hub *p) {
  return p ? p->nstreams : 0;
}

void ms_posix_hub_del(ms_posix_hub *p) {
  if (!p)
    return;
  ms_hub_set_wakeup(p->hub, NULL, NULL);
  ms_posix_hub_stop_listening(p);
  /* The hub frees its connections in ms_hub_del(); the streams are only
   * closed here, so the hub sees no callbacks from a half-torn driver. */
  while (p->streams)
    stream_free(p->streams, 0);
  ms_loop_defer_cancel(p->loop, on_drain, p);
  ms_timer_stop(p->timer);
  ms_free(ms_default_allocator(), p);
}
