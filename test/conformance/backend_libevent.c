/* Conformance backend: libevent. */
#include "conformance.h"

#include <stdlib.h>
#include <event2/event.h>
#include <microstream/ms_libevent.h>

typedef struct evtl {
  struct event_base *base;
  struct event *tick; /* bounds one iteration's wait */
} evtl;

static void noop_timer(evutil_socket_t fd, short what, void *ud) {
  (void)fd;
  (void)what;
  (void)ud;
}
static void *loop_new(void) {
  evtl *l = calloc(1, sizeof *l);
  if (!l)
    return NULL;
  l->base = event_base_new();
  l->tick = l->base ? evtimer_new(l->base, noop_timer, NULL) : NULL;
  if (!l->tick) {
    if (l->base)
      event_base_free(l->base);
    free(l);
    return NULL;
  }
  return l;
}
static int loop_free(void *p) {
  evtl *l = p;
  event_free(l->tick);
  /* Every event of ours must be gone once everything is detached. */
  int left = event_base_get_num_events(
      l->base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE);
  event_base_free(l->base);
  free(l);
  return left ? -1 : 0;
}
static void run_once(void *p, int ms) {
  evtl *l = p;
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  evtimer_add(l->tick, &tv);
  event_base_loop(l->base, EVLOOP_ONCE);
  evtimer_del(l->tick);
}
static int client_attach(void **out, void *p, ms_client *c, const char *url) {
  return ms_libevent_client_attach((ms_libevent_client **)out,
                                   ((evtl *)p)->base, c, url);
}
static void client_detach(void *a) { ms_libevent_client_detach(a); }
static int hub_attach(void **out, void *p, ms_hub *h, const char *host,
                      int port) {
  return ms_libevent_hub_attach((ms_libevent_hub **)out, ((evtl *)p)->base, h,
                                host, port);
}
static int hub_port(void *a) { return ms_libevent_hub_port(a); }
static void hub_detach(void *a) { ms_libevent_hub_detach(a); }

static int client_flush(void *a, int64_t timeout_ms) {
  return ms_libevent_client_flush(a, timeout_ms);
}

static int hub_listen(void *a, const char *host, int port,
                      const ms_stream_wrap *tls, int *bound) {
  return ms_libevent_hub_listen((ms_libevent_hub *)a, host, port, tls, bound);
}

static int hub_cluster(void *a, const ms_cluster_config *cfg) {
  return ms_libevent_hub_cluster(a, cfg);
}

const conf_backend conf_backend_impl = {
    "libevent",    loop_new,   loop_free, run_once,  client_attach,
    client_detach, hub_attach, hub_port,  hub_detach,
    client_flush, hub_listen, hub_cluster};
