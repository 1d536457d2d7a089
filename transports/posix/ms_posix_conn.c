/*
 * microstream: one plain WebSocket connection (ms_conn) over an fd on an
 * ms_loop.
 *
 * The connection may be deleted by the user from inside on_done, and from
 * inside one of its own callbacks provided ms_posix_conn_del() is called
 * first: the driver pumps through its own engine ops, which stop touching
 * the ms_conn once the driver is detached from it.
 */
#include "ms_internal.h"
#include "ms_posix_internal.h"

struct ms_posix_conn {
  ms_loop *loop;
  ms_conn *c;       /* NULL once detached (deleted or done) */
  ms_fd_stream s;
  ms_transport t;
  ms_timer *timer;
  unsigned watched; /* MS_EV_* currently asked of the loop */
  void (*on_done)(ms_posix_conn *p, ms_conn *c, void *user_data);
  void *user_data;
  ms_life life;     /* the lifetime rule of ms_common.h */
  int done;
};

/* ---- engine ops that survive the conn going away mid-pump --------------- */

static int pc_feed(void *e, const uint8_t *d, size_t n, int64_t now) {
  ms_posix_conn *p = e;
  return p->c ? ms_conn_feed(p->c, d, n, now) : 0;
}
static const uint8_t *pc_peek(void *e, size_t *len) {
  ms_posix_conn *p = e;
  if (!p->c) {
    *len = 0;
    return NULL;
  }
  return ms_conn_peek(p->c, len);
}
static void pc_consume(void *e, size_t n) {
  ms_posix_conn *p = e;
  if (p->c)
    ms_conn_consume(p->c, n);
}
static int pc_want_read(const void *e) {
  const ms_posix_conn *p = e;
  return p->c ? ms_conn_want_read(p->c) : 0;
}
static int pc_want_write(const void *e) {
  const ms_posix_conn *p = e;
  return p->c ? ms_conn_want_write(p->c) : 0;
}
static void pc_eof(void *e, int64_t now) {
  ms_posix_conn *p = e;
  if (p->c)
    ms_conn_eof(p->c, now);
}
static const ms_engine_ops pc_ops = {pc_feed,       pc_peek, pc_consume,
                                     pc_want_read,  pc_want_write, pc_eof,
                                     NULL,          NULL};

static void on_fd(ms_loop *loop, int fd, unsigned events, void *ud);
static void on_timer(ms_loop *loop, ms_timer *t, void *ud);

static void set_watch(ms_posix_conn *p, unsigned ev) {
  if (ev == p->watched || p->s.fd < 0)
    return;
  if (ms_loop_watch(p->loop, p->s.fd, ev, on_fd, p) == 0)
    p->watched = ev;
}

static void close_stream(ms_posix_conn *p) {
  set_watch(p, 0);
  if (p->s.fd >= 0)
    p->t.vt->close(p->t.self);
  if (p->timer)
    ms_timer_set_at(p->timer, MS_NO_DEADLINE);
}

/* Bring the loop's view (watches, timer) in line with the conn's state;
 * finish the stream when the conn wants nothing more. */
static void update(ms_posix_conn *p) {
  if (ms_life_dead(&p->life) || p->done || !p->c)
    return;
  int r = ms_conn_want_read(p->c);
  int w = ms_conn_want_write(p->c);
  if (!r && !w) {
    ms_conn *c = p->c;
    p->done = 1;
    close_stream(p);
    p->c = NULL;
    if (p->on_done)
      p->on_done(p, c, p->user_data);
    return;
  }
  unsigned ev = (r ? MS_EV_READ : 0u) |
                (ms_conn_out_pending(p->c) > 0 ? MS_EV_WRITE : 0u);
  set_watch(p, ev);
  ms_timer_set_at(p->timer, ms_conn_next_deadline(p->c));
}

static void enter(ms_posix_conn *p) { ms_life_enter(&p->life); }

static void leave(ms_posix_conn *p) {
  if (ms_life_leave(&p->life)) {
    ms_timer_stop(p->timer);
    ms_free(ms_default_allocator(), p);
  }
}

static void pump(ms_posix_conn *p, int readable) {
  if (!p->c || p->done)
    return;
  int64_t now = ms_loop_now(p->loop);
  if (readable)
    ms_pump(&pc_ops, p, &p->t, 0, now);
  else
    ms_pump_write(&pc_ops, p, &p->t, now);
  update(p);
}

static void on_fd(ms_loop *loop, int fd, unsigned events, void *ud) {
  ms_posix_conn *p = ud;
  MS_UNUSED(loop);
  MS_UNUSED(fd);
  enter(p);
  pump(p, (events & MS_EV_READ) != 0);
  leave(p);
}

static void on_timer(ms_loop *loop, ms_timer *t, void *ud) {
  ms_posix_conn *p = ud;
  MS_UNUSED(t);
  enter(p);
  if (p->c && !p->done)
    ms_conn_tick(p->c, ms_loop_now(loop));
  pump(p, 0);
  leave(p);
}

int ms_posix_conn_new(ms_posix_conn **pp, ms_loop *loop, int fd, ms_conn *c,
                      void (*on_done)(ms_posix_conn *p, ms_conn *c,
                                      void *user_data),
                      void *user_data) {
  if (!pp || !loop || fd < 0 || !c)
    return MS_ERR_INVALID_ARG;
  const ms_allocator *mem = ms_default_allocator();
  ms_posix_conn *p = ms_calloc(mem, 1, sizeof(*p));
  if (!p)
    return MS_ERR_NOMEM;
  p->loop = loop;
  p->c = c;
  p->on_done = on_done;
  p->user_data = user_data;
  ms_fd_transport(&p->s, fd, &p->t);
  int rv = ms_loop_timer_start(loop, 0, 0, on_timer, p, &p->timer);
  if (rv < 0) {
    ms_free(mem, p);
    return rv;
  }
  ms_timer_set_at(p->timer, MS_NO_DEADLINE);
  /* Start the conn unless the caller already did (MS_ERR_STATE). */
  rv = ms_conn_start(c, ms_loop_now(loop));
  if (rv < 0 && rv != MS_ERR_STATE) {
    ms_timer_stop(p->timer);
    ms_free(mem, p);
    return rv;
  }
  *pp = p;
  /* Flush a client's upgrade request and arm the watches. done may fire
   * on_done only from a later loop callback, never from here: the caller
   * does not have *pp stored yet, so only arm here. */
  enter(p);
  set_watch(p, MS_EV_READ | MS_EV_WRITE);
  ms_timer_set_at(p->timer, ms_conn_next_deadline(c));
  leave(p);
  return 0;
}

void ms_posix_conn_flush(ms_posix_conn *p) {
  if (!p || ms_life_dead(&p->life))
    return;
  /* Inside one of our own pumps the outer frame writes and updates. */
  if (ms_life_inside(&p->life))
    return;
  enter(p);
  pump(p, 0);
  leave(p);
}

void ms_posix_conn_del(ms_posix_conn *p) {
  if (!p || ms_life_dead(&p->life))
    return;
  int now = ms_life_del(&p->life);
  p->c = NULL;
  close_stream(p);
  if (now) {
    ms_timer_stop(p->timer);
    ms_free(ms_default_allocator(), p);
  }
}
