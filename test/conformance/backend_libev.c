/* Conformance backend: libev. */
#include "conformance.h"

#include <stdlib.h>
#include <ev.h>
#include <microstream/ms_libev.h>

typedef struct evl {
  struct ev_loop *loop;
  ev_timer tick; /* bounds one iteration's wait */
} evl;

static void noop_timer(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)t;
  (void)revents;
}
static void *loop_new(void) {
  evl *l = calloc(1, sizeof *l);
  if (!l)
    return NULL;
  l->loop = ev_loop_new(EVFLAG_AUTO);
  if (!l->loop) {
    free(l);
    return NULL;
  }
  ev_timer_init(&l->tick, noop_timer, 0., 0.);
  return l;
}
static int loop_free(void *p) {
  evl *l = p;
  /* Nothing of ours may keep the loop alive: a NOWAIT pass with no
   * active watcher returns 0. */
  int alive = ev_run(l->loop, EVRUN_NOWAIT);
  ev_loop_destroy(l->loop);
  free(l);
  return alive ? -1 : 0;
}
static void run_once(void *p, int ms) {
  evl *l = p;
  ev_timer_set(&l->tick, ms / 1000.0, 0.);
  ev_timer_start(l->loop, &l->tick);
  ev_run(l->loop, EVRUN_ONCE);
  ev_timer_stop(l->loop, &l->tick);
}
static int client_attach(void **out, void *p, ms_client *c, const char *url) {
  return ms_libev_client_attach((ms_libev_client **)out, ((evl *)p)->loop, c,
                                url);
}
static void client_detach(void *a) { ms_libev_client_detach(a); }
static int hub_attach(void **out, void *p, ms_hub *h, const char *host,
                      int port) {
  return ms_libev_hub_attach((ms_libev_hub **)out, ((evl *)p)->loop, h, host,
                             port);
}
static int hub_port(void *a) { return ms_libev_hub_port(a); }
static void hub_detach(void *a) { ms_libev_hub_detach(a); }

static int client_flush(void *a, int64_t timeout_ms) {
  return ms_libev_client_flush(a, timeout_ms);
}

static int hub_listen(void *a, const char *host, int port,
                      const ms_stream_wrap *tls, int *bound) {
  return ms_libev_hub_listen((ms_libev_hub *)a, host, port, tls, bound);
}

static int hub_cluster(void *a, const ms_cluster_config *cfg) {
  return ms_libev_hub_cluster(a, cfg);
}

const conf_backend conf_backend_impl = {
    "libev",       loop_new,   loop_free, run_once,  client_attach,
    client_detach, hub_attach, hub_port,  hub_detach,
    client_flush, hub_listen, hub_cluster};
