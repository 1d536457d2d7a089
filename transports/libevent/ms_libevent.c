/*
 * microstream: the libevent adapter. Only maps the driver core's hooks
 * (transports/common/ms_driver.h) onto libevent events; all the driving
 * logic is in the core. event_del/event_free are synchronous on the
 * loop's own thread, so the state is freed as soon as the core releases
 * it.
 */
#include "ms_internal.h"

#include <stdlib.h>
#include <event2/event.h>
#include <microstream/ms_libevent.h>
#include <microstream/ms_posix.h>
#include "ms_driver.h"

typedef struct evt_ctx {
  struct event_base *base;
  struct event *timer;
  /* Activated by hand (event_active): it runs after the callbacks already
   * active in this pass, and an active event keeps the loop from
   * blocking. Activating it twice is a no-op. */
  struct event *flush;
  /* Set inside on_flush (a new defer then waits for the next poll); points
   * at on_flush's own flag, which a release clears. */
  int *in_flush;
  struct event *bound; /* bounds one EVLOOP_ONCE in ms_libevent_client_flush */
  ms_drv *d;
} evt_ctx;

struct ms_libevent_client {
  evt_ctx x;
};
struct ms_libevent_hub {
  evt_ctx x;
};

static void on_io(evutil_socket_t fd, short what, void *ud) {
  unsigned ev = 0;
  MS_UNUSED(fd);
  if (what & EV_READ)
    ev |= MS_DRV_READ;
  if (what & EV_WRITE)
    ev |= MS_DRV_WRITE;
  ms_drv_io_ready(ud, ev);
}

static int hk_io_watch(void *ctx, ms_drv_io *io, unsigned events) {
  evt_ctx *x = ctx;
  struct event *e = io->watcher;
  short what = (short)(((events & MS_DRV_READ) ? EV_READ : 0) |
                       ((events & MS_DRV_WRITE) ? EV_WRITE : 0) | EV_PERSIST);
  if (!e) {
    e = event_new(x->base, io->fd, what, on_io, io);
    if (!e)
      return MS_ERR_NOMEM;
    io->watcher = e;
  } else {
    /* An event's flags change only while it is not pending. */
    event_del(e);
    if (event_assign(e, x->base, io->fd, what, on_io, io) < 0)
      return MS_ERR_IO;
  }
  if (events && event_add(e, NULL) < 0)
    return MS_ERR_IO;
  return 0;
}

static void hk_io_close(void *ctx, ms_drv_io *io) {
  MS_UNUSED(ctx);
  if (io->watcher)
    event_free(io->watcher); /* also drops it from the active queue */
}

static void on_timer(evutil_socket_t fd, short what, void *ud) {
  evt_ctx *x = ud;
  MS_UNUSED(fd);
  MS_UNUSED(what);
  ms_drv_timer_fired(x->d);
}

/* The core's clock is CLOCK_MONOTONIC; libevent timers are relative. A
 * timer that fires a little early is harmless: the core re-arms it. */
static void hk_timer(void *ctx, int64_t at) {
  evt_ctx *x = ctx;
  evtimer_del(x->timer);
  if (at == MS_NO_DEADLINE)
    return;
  int64_t delay = at - ms_now_ms();
  if (delay < 0)
    delay = 0;
  struct timeval tv = {(time_t)(delay / 1000),
                       (suseconds_t)((delay % 1000) * 1000)};
  evtimer_add(x->timer, &tv);
}

static void on_flush(evutil_socket_t fd, short what, void *ud) {
  evt_ctx *x = ud;
  MS_UNUSED(fd);
  MS_UNUSED(what);
  int inside = 1;
  x->in_flush = &inside;
  ms_drv_run_deferred(x->d); /* may release x */
  if (inside)
    x->in_flush = NULL;
}

static int hk_defer(void *ctx) {
  evt_ctx *x = ctx;
  if (x->in_flush) {
    /* Activated from its own callback, the event would run again in the
     * same pass, before any I/O: a zero timeout runs it after the next
     * poll instead (more held input gets its share in turn). */
    static const struct timeval zero = {0, 0};
    return evtimer_add(x->flush, &zero) == 0 ? 0 : MS_ERR_IO;
  }
  event_active(x->flush, EV_TIMEOUT, 0);
  return 0;
}

static int64_t hk_now(void *ctx) {
  MS_UNUSED(ctx);
  return ms_now_ms();
}

static void hk_release(void *ctx) {
  evt_ctx *x = ctx;
  if (x->in_flush)
    *x->in_flush = 0;
  if (x->timer)
    event_free(x->timer);
  if (x->flush)
    event_free(x->flush);
  if (x->bound)
    event_free(x->bound);
  free(x);
}

static const ms_drv_hooks evt_hooks = {hk_io_watch, hk_io_close, hk_timer,
                                       hk_defer,    hk_now,      hk_release};

static void on_bound(evutil_socket_t fd, short what, void *ud) {
  MS_UNUSED(fd);
  MS_UNUSED(what);
  MS_UNUSED(ud);
}

static void run_once(void *ctx, int64_t max_ms) {
  evt_ctx *x = ctx;
  /* The timer wakes the loop when nothing else happens in max_ms. */
  struct timeval tv = {(time_t)(max_ms / 1000), (suseconds_t)(max_ms % 1000) * 1000};
  evtimer_add(x->bound, &tv);
  event_base_loop(x->base, EVLOOP_ONCE);
  evtimer_del(x->bound);
}

int ms_libevent_client_flush(ms_libevent_client *a, int64_t timeout_ms) {
  return a ? ms_drv_client_flush(a->x.d, timeout_ms, run_once)
           : MS_ERR_INVALID_ARG;
}

static evt_ctx *ctx_new(struct event_base *base, size_t size) {
  evt_ctx *x = calloc(1, size);
  if (!x)
    return NULL;
  x->base = base;
  x->timer = evtimer_new(base, on_timer, x);
  x->flush = event_new(base, -1, 0, on_flush, x);
  x->bound = evtimer_new(base, on_bound, x);
  if (!x->timer || !x->flush || !x->bound) {
    hk_release(x);
    return NULL;
  }
  return x;
}

int ms_libevent_client_attach(ms_libevent_client **out,
                              struct event_base *base, ms_client *c,
                              const char *url) {
  if (!out || !base || !c || !url)
    return MS_ERR_INVALID_ARG;
  evt_ctx *x = ctx_new(base, sizeof(ms_libevent_client));
  if (!x)
    return MS_ERR_NOMEM;
  int rv = ms_drv_client_new(&x->d, c, url, &evt_hooks, x);
  if (rv < 0) {
    hk_release(x);
    return rv;
  }
  *out = (ms_libevent_client *)x;
  return 0;
}

void ms_libevent_client_detach(ms_libevent_client *a) {
  if (a)
    ms_drv_del(a->x.d);
}

int ms_libevent_hub_attach(ms_libevent_hub **out, struct event_base *base,
                           ms_hub *h, const char *host, int port) {
  if (!out || !base || !h)
    return MS_ERR_INVALID_ARG;
  evt_ctx *x = ctx_new(base, sizeof(ms_libevent_hub));
  if (!x)
    return MS_ERR_NOMEM;
  int rv = ms_drv_hub_new(&x->d, h, host, port, &evt_hooks, x);
  if (rv < 0) {
    hk_release(x);
    return rv;
  }
  *out = (ms_libevent_hub *)x;
  return 0;
}

int ms_libevent_hub_listen(ms_libevent_hub *a, const char *host, int port,
                           const ms_stream_wrap *tls, int *bound_port) {
  if (!a || !host)
    return MS_ERR_INVALID_ARG;
  return ms_drv_hub_listen(a->x.d, host, port, tls, bound_port);
}

int ms_libevent_hub_port(const ms_libevent_hub *a) {
  return a ? ms_drv_hub_port(a->x.d) : -1;
}

int ms_libevent_hub_cluster(ms_libevent_hub *a, const ms_cluster_config *cfg) {
  return a ? ms_drv_hub_cluster(a->x.d, cfg) : MS_ERR_INVALID_ARG;
}

void ms_libevent_hub_detach(ms_libevent_hub *a) {
  if (a)
    ms_drv_del(a->x.d);
}
