/*
 * microstream: the built-in loop as a backend of the driver core
 * (transports/common/ms_driver.c), and ms_posix_client on top of it. All
 * the driving logic (connect, pump, reconnect, deadlines, coalesced
 * wakeups) is in the core; this file only maps its hooks onto ms_loop.
 */
#include "ms_internal.h"
#include "ms_posix_internal.h"

struct ms_posix_client {
  ms_posix_drv x;
};

static void on_fd(ms_loop *loop, int fd, unsigned events, void *ud) {
  MS_UNUSED(loop);
  MS_UNUSED(fd);
  ms_drv_io_ready(ud, events); /* MS_EV_* and MS_DRV_* share values */
}

static void on_timer(ms_loop *loop, ms_timer *t, void *ud) {
  MS_UNUSED(loop);
  MS_UNUSED(t);
  ms_drv_timer_fired(((ms_posix_drv *)ud)->d);
}

static void on_defer(void *ud) { ms_drv_run_deferred(((ms_posix_drv *)ud)->d); }

static int hk_io_watch(void *ctx, ms_drv_io *io, unsigned events) {
  ms_posix_drv *x = ctx;
  return ms_loop_watch(x->loop, io->fd, events, on_fd, io);
}
static void hk_io_close(void *ctx, ms_drv_io *io) {
  ms_posix_drv *x = ctx;
  ms_loop_watch(x->loop, io->fd, 0, NULL, NULL);
}
static void hk_timer(void *ctx, int64_t at) {
  ms_timer_set_at(((ms_posix_drv *)ctx)->timer, at);
}
static int hk_defer(void *ctx) {
  ms_posix_drv *x = ctx;
  return ms_loop_defer(x->loop, on_defer, x);
}
static int64_t hk_now(void *ctx) {
  return ms_loop_now(((ms_posix_drv *)ctx)->loop);
}
static void hk_release(void *ctx) { ms_posix_drv_free(ctx); }

const ms_drv_hooks ms_posix_drv_hooks = {hk_io_watch, hk_io_close, hk_timer,
                                         hk_defer,    hk_now,      hk_release};

int ms_posix_drv_alloc(ms_posix_drv **out, size_t size, ms_loop *loop) {
  const ms_allocator *mem = ms_default_allocator();
  ms_posix_drv *x = ms_calloc(mem, 1, size);
  if (!x)
    return MS_ERR_NOMEM;
  x->loop = loop;
  int rv = ms_loop_timer_start(loop, 0, 0, on_timer, x, &x->timer);
  if (rv < 0) {
    ms_free(mem, x);
    return rv;
  }
  ms_timer_set_at(x->timer, MS_NO_DEADLINE);
  *out = x;
  return 0;
}

void ms_posix_drv_free(ms_posix_drv *x) {
  ms_loop_defer_cancel(x->loop, on_defer, x);
  ms_timer_stop(x->timer);
  ms_free(ms_default_allocator(), x);
}

int ms_posix_client_new(ms_posix_client **pp, ms_loop *loop, ms_client *c,
                        const char *url) {
  if (!pp || !loop || !c || !url)
    return MS_ERR_INVALID_ARG;
  ms_posix_drv *x;
  int rv = ms_posix_drv_alloc(&x, sizeof(ms_posix_client), loop);
  if (rv < 0)
    return rv;
  rv = ms_drv_client_new(&x->d, c, url, &ms_posix_drv_hooks, x);
  if (rv < 0) {
    ms_posix_drv_free(x);
    return rv;
  }
  *pp = (ms_posix_client *)x;
  return 0;
}

static void run_once(void *ctx, int64_t max_ms) {
  ms_loop_run_once(((ms_posix_drv *)ctx)->loop, (int)max_ms);
}

int ms_posix_client_flush(ms_posix_client *p, int64_t timeout_ms) {
  return p ? ms_drv_client_flush(p->x.d, timeout_ms, run_once)
           : MS_ERR_INVALID_ARG;
}

void ms_posix_client_del(ms_posix_client *p) {
  if (p)
    ms_drv_del(p->x.d);
}
