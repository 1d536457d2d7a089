/*
 * microstream: an ms_client on an ms_loop. Opens the TCP stream when the
 * client asks for one, pumps bytes, reports the end of the stream, and
 * keeps one timer at the client's next deadline.
 *
 * The driver calls into the client through its own engine ops so that it
 * stops touching the client the moment ms_posix_client_del() runs, even
 * from inside a client callback in the middle of a pump.
 */
#include "ms_internal.h"

#include <stdio.h>
#include <microstream/ms_log.h>
#include "ms_posix_internal.h"

enum { PHASE_NONE = 0, PHASE_CONNECTING, PHASE_OPEN };

struct ms_posix_client {
  ms_loop *loop;
  ms_client *c; /* NULL once deleted */
  ms_url url;
  ms_fd_stream s;
  ms_transport t;
  int phase;
  int eof;          /* the stream ended or failed during this pump */
  unsigned watched;
  ms_timer *timer;
  int flush_queued; /* a deferred flush is pending (wakeups coalesce) */
  int depth;
  int deleted;
};

static int cl_feed(void *e, const uint8_t *d, size_t n, int64_t now) {
  ms_posix_client *p = e;
  return p->c ? ms_client_feed(p->c, d, n, now) : 0;
}
static const uint8_t *cl_peek(void *e, size_t *len) {
  ms_posix_client *p = e;
  if (!p->c) {
    *len = 0;
    return NULL;
  }
  return ms_client_peek(p->c, len);
}
static void cl_consume(void *e, size_t n) {
  ms_posix_client *p = e;
  if (p->c)
    ms_client_consume(p->c, n);
}
static int cl_want_read(const void *e) {
  const ms_posix_client *p = e;
  return p->c && !p->eof ? ms_client_want_read(p->c) : 0;
}
static int cl_want_write(const void *e) {
  const ms_posix_client *p = e;
  return p->c && !p->eof ? ms_client_want_write(p->c) : 0;
}
/* The stream is reported with ms_client_disconnected() once the pump is
 * over (and the fd closed), not from inside it. */
static void cl_eof(void *e, int64_t now) {
  ms_posix_client *p = e;
  MS_UNUSED(now);
  p->eof = 1;
}
static const ms_engine_ops cl_ops = {cl_feed,      cl_peek,       cl_consume,
                                     cl_want_read, cl_want_write, cl_eof};

static void on_fd(ms_loop *loop, int fd, unsigned events, void *ud);

static void set_watch(ms_posix_client *p, unsigned ev) {
  if (ev == p->watched || p->s.fd < 0)
    return;
  if (ms_loop_watch(p->loop, p->s.fd, ev, on_fd, p) == 0)
    p->watched = ev;
}

static void close_fd(ms_posix_client *p) {
  set_watch(p, 0);
  if (p->s.fd >= 0)
    p->t.vt->close(p->t.self);
  p->s.fd = -1;
  p->phase = PHASE_NONE;
  p->eof = 0;
}

static void drop_stream(ms_posix_client *p, int64_t now) {
  close_fd(p);
  if (p->c)
    ms_client_disconnected(p->c, now);
}

static void start_connect(ms_posix_client *p, int64_t now) {
  ms_client_connecting(p->c, now);
  if (!p->c)
    return;
  int fd = -1;
  if (ms_tcp_connect(p->url.host, p->url.port, &fd) < 0) {
    ms_client_disconnected(p->c, now);
    return;
  }
  ms_fd_transport(&p->s, fd, &p->t);
  p->phase = PHASE_CONNECTING;
}

static void enter(ms_posix_client *p) { p->depth++; }

static void leave(ms_posix_client *p) {
  if (--p->depth == 0 && p->deleted) {
    ms_timer_stop(p->timer);
    ms_free(ms_default_allocator(), p);
  }
}

/* One step of the driver: finish a connect, pump, notice the end of the
 * stream, open a new one if the client wants it, then re-arm the watches
 * and the timer (the client's deadline may have moved). */
static void drive(ms_posix_client *p, unsigned events) {
  int64_t now = ms_loop_now(p->loop);
  if (p->c && p->phase == PHASE_CONNECTING && events) {
    if (ms_tcp_connect_result(p->s.fd) < 0) {
      drop_stream(p, now);
    } else {
      p->phase = PHASE_OPEN;
      ms_client_connected(p->c, now);
      events = MS_EV_WRITE; /* the upgrade request is queued */
    }
  }
  if (p->c && p->phase == PHASE_OPEN) {
    int mask;
    if (events & MS_EV_READ)
      mask = ms_pump(&cl_ops, p, &p->t, 0, now);
    else
      mask = ms_pump_write(&cl_ops, p, &p->t, now);
    if (p->c && (p->eof || mask < 0 || (mask & MS_PUMP_DONE)))
      drop_stream(p, now);
  }
  if (p->c && p->phase == PHASE_NONE && ms_client_want_connect(p->c, now))
    start_connect(p, now);
  if (!p->c)
    return;

  unsigned ev = 0;
  if (p->phase == PHASE_CONNECTING) {
    ev = MS_EV_WRITE;
  } else if (p->phase == PHASE_OPEN) {
    size_t pending = 0;
    ms_client_peek(p->c, &pending);
    if (ms_client_want_read(p->c))
      ev |= MS_EV_READ;
    if (pending > 0)
      ev |= MS_EV_WRITE;
  }
  set_watch(p, ev);
  ms_timer_set_at(p->timer, ms_client_next_deadline(p->c));
}

static void on_fd(ms_loop *loop, int fd, unsigned events, void *ud) {
  ms_posix_client *p = ud;
  MS_UNUSED(loop);
  MS_UNUSED(fd);
  enter(p);
  drive(p, events);
  leave(p);
}

static void on_timer(ms_loop *loop, ms_timer *t, void *ud) {
  ms_posix_client *p = ud;
  MS_UNUSED(t);
  enter(p);
  if (p->c)
    ms_client_tick(p->c, ms_loop_now(loop));
  if (p->c)
    drive(p, 0);
  leave(p);
}

static void on_flush(void *ud) {
  ms_posix_client *p = ud;
  p->flush_queued = 0;
  enter(p);
  if (p->c)
    drive(p, 0);
  leave(p);
}

/* From inside the client: only schedule, never call back into it. */
static void on_wakeup(void *ud) {
  ms_posix_client *p = ud;
  if (p->flush_queued || p->deleted)
    return;
  if (ms_loop_defer(p->loop, on_flush, p) == 0)
    p->flush_queued = 1;
}

static int64_t wall_clock(void *ud) {
  MS_UNUSED(ud);
  return ms_wall_us();
}

int ms_posix_client_new(ms_posix_client **pp, ms_loop *loop, ms_client *c,
                        const char *url) {
  if (!pp || !loop || !c || !url)
    return MS_ERR_INVALID_ARG;
  ms_url u;
  int rv = ms_url_parse(url, &u);
  if (rv < 0)
    return rv;
  if (u.tls)
    return MS_ERR_INVALID_ARG; /* wss:// needs the TLS transport */
  /* The URL is where we connect: the Host header and path follow it. */
  char hostport[300];
  snprintf(hostport, sizeof hostport,
           strchr(u.host, ':') ? "[%s]:%d" : "%s:%d", u.host, u.port);
  rv = ms_client_set_endpoint(c, hostport, u.path);
  if (rv < 0)
    return rv;
  const ms_allocator *mem = ms_default_allocator();
  ms_posix_client *p = ms_calloc(mem, 1, sizeof(*p));
  if (!p)
    return MS_ERR_NOMEM;
  p->loop = loop;
  p->c = c;
  p->url = u;
  p->s.fd = -1;
  rv = ms_loop_timer_start(loop, 0, 0, on_timer, p, &p->timer);
  if (rv < 0) {
    ms_free(mem, p);
    return rv;
  }
  ms_timer_set_at(p->timer, MS_NO_DEADLINE);
  /* The first connect happens from the loop, once the caller holds *pp. */
  rv = ms_loop_defer(loop, on_flush, p);
  if (rv < 0) {
    ms_timer_stop(p->timer);
    ms_free(mem, p);
    return rv;
  }
  p->flush_queued = 1;
  ms_client_set_wakeup(c, on_wakeup, p);
  /* Log records carry the time they were made, not when they reach the
   * hub (they may wait in the ring while the hub is away). */
  ms_log_set_clock(c, wall_clock, NULL);
  *pp = p;
  return 0;
}

int ms_posix_client_flush(ms_posix_client *p, int64_t timeout_ms) {
  if (!p || p->deleted || !p->c)
    return MS_ERR_INVALID_ARG;
  int64_t end = ms_now_ms() + timeout_ms;
  for (;;) {
    ms_client *c = p->c;
    if (!c)
      return MS_ERR_CLOSED;
    int busy = ms_log_queued(c) > 0 || ms_client_want_write(c);
    if (!busy)
      return 0;
    int64_t left = end - ms_now_ms();
    if (left <= 0)
      return MS_ERR_TIMEOUT;
    ms_loop_run_once(p->loop, left < 20 ? (int)left : 20);
  }
}

void ms_posix_client_del(ms_posix_client *p) {
  if (!p || p->deleted)
    return;
  if (p->c)
    ms_client_set_wakeup(p->c, NULL, NULL);
  p->deleted = 1;
  p->c = NULL;
  close_fd(p);
  ms_loop_defer_cancel(p->loop, on_flush, p);
  ms_timer_set_at(p->timer, MS_NO_DEADLINE);
  if (p->depth == 0) {
    ms_timer_stop(p->timer);
    ms_free(ms_default_allocator(), p);
  }
}
