/*
 * microstream: the libev adapter. Only maps the driver core's hooks
 * (transports/common/ms_driver.h) onto libev watchers; all the driving
 * logic is in the core. libev stops are synchronous, so the state is
 * freed as soon as the core releases it.
 */
#include "ms_internal.h"

#include <stdlib.h>
#include <ev.h>
#include <microstream/ms_libev.h>
#include <microstream/ms_posix.h>
#include "ms_driver.h"

typedef struct ev_ctx {
  struct ev_loop *loop;
  ev_timer timer;
  /* Started only while a deferred flush is due. An active idle watcher
   * keeps ev_run from blocking; at the highest priority it runs before
   * the next batch of I/O callbacks, so a flush is never starved. */
  ev_idle idle;
  ev_timer bound; /* bounds one ev_run(EVRUN_ONCE) in ms_libev_client_flush */
  ms_drv *d;
} ev_ctx;

struct ms_libev_client {
  ev_ctx x;
};
struct ms_libev_hub {
  ev_ctx x;
};

static void on_io(struct ev_loop *loop, ev_io *w, int revents) {
  unsigned ev = 0;
  MS_UNUSED(loop);
  if (revents & EV_READ)
    ev |= MS_DRV_READ;
  if (revents & EV_WRITE)
    ev |= MS_DRV_WRITE;
  if (revents & EV_ERROR)
    ev = MS_DRV_READ | MS_DRV_WRITE; /* let the pump read the error */
  ms_drv_io_ready(w->data, ev);
}

static int hk_io_watch(void *ctx, ms_drv_io *io, unsigned events) {
  ev_ctx *x = ctx;
  ev_io *w = io->watcher;
  if (!w) {
    w = malloc(sizeof(*w));
    if (!w)
      return MS_ERR_NOMEM;
    ev_io_init(w, on_io, io->fd, 0);
    w->data = io;
    io->watcher = w;
  }
  /* libev changes an ev_io's events only while it is stopped. */
  ev_io_stop(x->loop, w);
  if (events) {
    ev_io_set(w, io->fd, ((events & MS_DRV_READ) ? EV_READ : 0) |
                             ((events & MS_DRV_WRITE) ? EV_WRITE : 0));
    ev_io_start(x->loop, w);
  }
  return 0;
}

static void hk_io_close(void *ctx, ms_drv_io *io) {
  ev_ctx *x = ctx;
  ev_io *w = io->watcher;
  if (!w)
    return;
  ev_io_stop(x->loop, w); /* also drops a pending event */
  free(w);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents) {
  ev_ctx *x = t->data;
  MS_UNUSED(loop);
  MS_UNUSED(revents);
  ms_drv_timer_fired(x->d);
}

/* The core's clock is CLOCK_MONOTONIC (ev_now() is wall-clock based). A
 * timer that fires a little early is harmless: the core re-arms it. */
static void hk_timer(void *ctx, int64_t at) {
  ev_ctx *x = ctx;
  ev_timer_stop(x->loop, &x->timer);
  if (at == MS_NO_DEADLINE)
    return;
  int64_t delay = at - ms_now_ms();
  ev_timer_set(&x->timer, delay > 0 ? (ev_tstamp)delay / 1000.0 : 0., 0.);
  ev_timer_start(x->loop, &x->timer);
}

static void on_idle(struct ev_loop *loop, ev_idle *i, int revents) {
  ev_ctx *x = i->data;
  MS_UNUSED(revents);
  ev_idle_stop(loop, i);
  ms_drv_run_deferred(x->d);
}

static int hk_defer(void *ctx) {
  ev_ctx *x = ctx;
  ev_idle_start(x->loop, &x->idle); /* a no-op when already active */
  return 0;
}

static int64_t hk_now(void *ctx) {
  MS_UNUSED(ctx);
  return ms_now_ms();
}

static void hk_release(void *ctx) {
  ev_ctx *x = ctx;
  ev_timer_stop(x->loop, &x->timer);
  ev_idle_stop(x->loop, &x->idle);
  ev_timer_stop(x->loop, &x->bound);
  free(x);
}

static const ms_drv_hooks ev_hooks = {hk_io_watch, hk_io_close, hk_timer,
                                      hk_defer,    hk_now,      hk_release};

static void on_bound(struct ev_loop *loop, ev_timer *t, int revents) {
  MS_UNUSED(loop);
  MS_UNUSED(t);
  MS_UNUSED(revents);
}

static void run_once(void *ctx, int64_t max_ms) {
  ev_ctx *x = ctx;
  /* The timer wakes ev_run when nothing else happens in max_ms. */
  ev_timer_set(&x->bound, (ev_tstamp)max_ms / 1000.0, 0.);
  ev_timer_start(x->loop, &x->bound);
  ev_run(x->loop, EVRUN_ONCE);
  ev_timer_stop(x->loop, &x->bound);
}

int ms_libev_client_flush(ms_libev_client *a, int64_t timeout_ms) {
  return a ? ms_drv_client_flush(a->x.d, timeout_ms, run_once)
           : MS_ERR_INVALID_ARG;
}

static ev_ctx *ctx_new(struct ev_loop *loop, size_t size) {
  ev_ctx *x = calloc(1, size);
  if (!x)
    return NULL;
  x->loop = loop;
  ev_timer_init(&x->timer, on_timer, 0., 0.);
  ev_idle_init(&x->idle, on_idle);
  ev_timer_init(&x->bound, on_bound, 0., 0.);
  ev_set_priority(&x->idle, EV_MAXPRI);
  x->timer.data = x;
  x->idle.data = x;
  return x;
}

int ms_libev_client_attach(ms_libev_client **out, struct ev_loop *loop,
                           ms_client *c, const char *url) {
  if (!out || !loop || !c || !url)
    return MS_ERR_INVALID_ARG;
  ev_ctx *x = ctx_new(loop, sizeof(ms_libev_client));
  if (!x)
    return MS_ERR_NOMEM;
  int rv = ms_drv_client_new(&x->d, c, url, &ev_hooks, x);
  if (rv < 0) {
    hk_release(x);
    return rv;
  }
  *out = (ms_libev_client *)x;
  return 0;
}

void ms_libev_client_detach(ms_libev_client *a) {
  if (a)
    ms_drv_del(a->x.d);
}

int ms_libev_hub_attach(ms_libev_hub **out, struct ev_loop *loop, ms_hub *h,
                        const char *host, int port) {
  if (!out || !loop || !h)
    return MS_ERR_INVALID_ARG;
  ev_ctx *x = ctx_new(loop, sizeof(ms_libev_hub));
  if (!x)
    return MS_ERR_NOMEM;
  int rv = ms_drv_hub_new(&x->d, h, host, port, &ev_hooks, x);
  if (rv < 0) {
    hk_release(x);
    return rv;
  }
  *out = (ms_libev_hub *)x;
  return 0;
}

int ms_libev_hub_listen(ms_libev_hub *a, const char *host, int port,
                        const ms_stream_wrap *tls, int *bound_port) {
  if (!a || !host)
    return MS_ERR_INVALID_ARG;
  return ms_drv_hub_listen(a->x.d, host, port, tls, bound_port);
}

int ms_libev_hub_port(const ms_libev_hub *a) {
  return a ? ms_drv_hub_port(a->x.d) : -1;
}

int ms_libev_hub_cluster(ms_libev_hub *a, const ms_cluster_config *cfg) {
  return a ? ms_drv_hub_cluster(a->x.d, cfg) : MS_ERR_INVALID_ARG;
}

void ms_libev_hub_detach(ms_libev_hub *a) {
  if (a)
    ms_drv_del(a->x.d);
}
