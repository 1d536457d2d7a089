/*
 * microstream: the libuv adapter. Only maps the driver core's hooks
 * (transports/common/ms_driver.h) onto libuv handles; all the driving
 * logic is in the core.
 *
 * libuv closes handles asynchronously, so every handle is heap-allocated
 * or lives in the adapter state, which is freed from the last close
 * callback, never while libuv may still reference it.
 */
#include "ms_internal.h"

#include <stdlib.h>
#include <microstream/ms_libuv.h>
#include "ms_driver.h"

typedef struct uv_ctx {
  uv_loop_t *loop;
  uv_timer_t timer;
  uv_idle_t idle; /* active only while a deferred flush is due: it also
                     keeps uv_run from blocking until the flush runs */
  uv_timer_t bound; /* bounds one uv_run(UV_RUN_ONCE) in ms_libuv_client_flush */
  ms_drv *d;
  int open_handles;
} uv_ctx;

struct ms_libuv_client {
  uv_ctx x;
};
struct ms_libuv_hub {
  uv_ctx x;
};

static void on_poll(uv_poll_t *h, int status, int events) {
  unsigned ev = 0;
  if (events & UV_READABLE)
    ev |= MS_DRV_READ;
  if (events & UV_WRITABLE)
    ev |= MS_DRV_WRITE;
  if (status < 0)
    ev = MS_DRV_READ | MS_DRV_WRITE; /* let the pump read the error */
  ms_drv_io_ready(h->data, ev);
}

static void free_handle(uv_handle_t *h) { free(h); }

static int hk_io_watch(void *ctx, ms_drv_io *io, unsigned events) {
  uv_ctx *x = ctx;
  uv_poll_t *h = io->watcher;
  if (!h) {
    h = malloc(sizeof(*h));
    if (!h)
      return MS_ERR_NOMEM;
    if (uv_poll_init(x->loop, h, io->fd) < 0) {
      free(h);
      return MS_ERR_IO;
    }
    h->data = io;
    io->watcher = h;
  }
  if (!events)
    return uv_poll_stop(h) < 0 ? MS_ERR_IO : 0;
  int flags = ((events & MS_DRV_READ) ? UV_READABLE : 0) |
              ((events & MS_DRV_WRITE) ? UV_WRITABLE : 0);
  /* uv_poll_start on an active handle just changes its events. */
  return uv_poll_start(h, flags, on_poll) < 0 ? MS_ERR_IO : 0;
}

static void hk_io_close(void *ctx, ms_drv_io *io) {
  uv_poll_t *h = io->watcher;
  MS_UNUSED(ctx);
  if (!h)
    return;
  uv_poll_stop(h);
  uv_close((uv_handle_t *)h, free_handle);
}

static void on_timer(uv_timer_t *t) {
  uv_ctx *x = t->data;
  ms_drv_timer_fired(x->d);
}

static void hk_timer(void *ctx, int64_t at) {
  uv_ctx *x = ctx;
  if (at == MS_NO_DEADLINE) {
    uv_timer_stop(&x->timer);
    return;
  }
  int64_t delay = at - (int64_t)uv_now(x->loop);
  uv_timer_start(&x->timer, on_timer, delay > 0 ? (uint64_t)delay : 0, 0);
}

static void on_idle(uv_idle_t *i) {
  uv_ctx *x = i->data;
  uv_idle_stop(i);
  ms_drv_run_deferred(x->d);
}

static int hk_defer(void *ctx) {
  uv_ctx *x = ctx;
  return uv_idle_start(&x->idle, on_idle) < 0 ? MS_ERR_IO : 0;
}

static int64_t hk_now(void *ctx) { return (int64_t)uv_now(((uv_ctx *)ctx)->loop); }

static void on_ctx_close(uv_handle_t *h) {
  uv_ctx *x = h->data;
  if (--x->open_handles == 0)
    free(x);
}

static void ctx_close(uv_ctx *x) {
  uv_timer_stop(&x->timer);
  uv_timer_stop(&x->bound);
  uv_idle_stop(&x->idle);
  uv_close((uv_handle_t *)&x->timer, on_ctx_close);
  uv_close((uv_handle_t *)&x->bound, on_ctx_close);
  uv_close((uv_handle_t *)&x->idle, on_ctx_close);
}

static void hk_release(void *ctx) { ctx_close(ctx); }

static const ms_drv_hooks uv_hooks = {hk_io_watch, hk_io_close, hk_timer,
                                      hk_defer,    hk_now,      hk_release};

static uv_ctx *ctx_new(uv_loop_t *loop, size_t size) {
  uv_ctx *x = calloc(1, size);
  if (!x)
    return NULL;
  x->loop = loop;
  uv_timer_init(loop, &x->timer);
  uv_idle_init(loop, &x->idle);
  uv_timer_init(loop, &x->bound);
  x->timer.data = x;
  x->idle.data = x;
  x->bound.data = x;
  x->open_handles = 3;
  return x;
}

int ms_libuv_client_attach(ms_libuv_client **out, uv_loop_t *loop,
                           ms_client *c, const char *url) {
  if (!out || !loop || !c || !url)
    return MS_ERR_INVALID_ARG;
  uv_ctx *x = ctx_new(loop, sizeof(ms_libuv_client));
  if (!x)
    return MS_ERR_NOMEM;
  int rv = ms_drv_client_new(&x->d, c, url, &uv_hooks, x);
  if (rv < 0) {
    ctx_close(x);
    return rv;
  }
  *out = (ms_libuv_client *)x;
  return 0;
}

static void on_bound(uv_timer_t *t) { MS_UNUSED(t); }

static void run_once(void *ctx, int64_t max_ms) {
  uv_ctx *x = ctx;
  /* The timer wakes uv_run when nothing else happens in max_ms. */
  uv_timer_start(&x->bound, on_bound, (uint64_t)max_ms, 0);
  uv_run(x->loop, UV_RUN_ONCE);
  uv_timer_stop(&x->bound);
}

int ms_libuv_client_flush(ms_libuv_client *a, int64_t timeout_ms) {
  return a ? ms_drv_client_flush(a->x.d, timeout_ms, run_once)
           : MS_ERR_INVALID_ARG;
}

void ms_libuv_client_detach(ms_libuv_client *a) {
  if (a)
    ms_drv_del(a->x.d);
}

int ms_libuv_hub_attach(ms_libuv_hub **out, uv_loop_t *loop, ms_hub *h,
                        const char *host, int port) {
  if (!out || !loop || !h)
    return MS_ERR_INVALID_ARG;
  uv_ctx *x = ctx_new(loop, sizeof(ms_libuv_hub));
  if (!x)
    return MS_ERR_NOMEM;
  int rv = ms_drv_hub_new(&x->d, h, host, port, &uv_hooks, x);
  if (rv < 0) {
    ctx_close(x);
    return rv;
  }
  *out = (ms_libuv_hub *)x;
  return 0;
}

int ms_libuv_hub_listen(ms_libuv_hub *a, const char *host, int port,
                        const ms_stream_wrap *tls, int *bound_port) {
  if (!a || !host)
    return MS_ERR_INVALID_ARG;
  return ms_drv_hub_listen(a->x.d, host, port, tls, bound_port);
}

int ms_libuv_hub_port(const ms_libuv_hub *a) {
  return a ? ms_drv_hub_port(a->x.d) : -1;
}

int ms_libuv_hub_cluster(ms_libuv_hub *a, const ms_cluster_config *cfg) {
  return a ? ms_drv_hub_cluster(a->x.d, cfg) : MS_ERR_INVALID_ARG;
}

void ms_libuv_hub_detach(ms_libuv_hub *a) {
  if (a)
    ms_drv_del(a->x.d);
}
