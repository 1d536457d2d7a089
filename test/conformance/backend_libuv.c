/* Conformance backend: libuv. */
#include "conformance.h"

#include <stdlib.h>
#include <microstream/ms_libuv.h>

typedef struct uvl {
  uv_loop_t loop;
  uv_timer_t tick; /* bounds one iteration's wait */
} uvl;

static void *loop_new(void) {
  uvl *l = calloc(1, sizeof *l);
  if (!l || uv_loop_init(&l->loop) < 0) {
    free(l);
    return NULL;
  }
  uv_timer_init(&l->loop, &l->tick);
  return l;
}
static void noop_timer(uv_timer_t *t) { (void)t; }
static int loop_free(void *p) {
  uvl *l = p;
  uv_close((uv_handle_t *)&l->tick, NULL);
  /* The adapters' handles close asynchronously: a few passes run their
   * close callbacks. Anything still open after that is a leak. */
  int rv = -1;
  for (int i = 0; i < 10 && rv != 0; i++) {
    uv_run(&l->loop, UV_RUN_NOWAIT);
    rv = uv_loop_close(&l->loop);
  }
  if (rv == 0)
    free(l);
  return rv;
}
static void run_once(void *p, int ms) {
  uvl *l = p;
  uv_timer_start(&l->tick, noop_timer, (uint64_t)ms, 0);
  uv_run(&l->loop, UV_RUN_ONCE);
  uv_timer_stop(&l->tick);
}
static int client_attach(void **out, void *p, ms_client *c, const char *url) {
  return ms_libuv_client_attach((ms_libuv_client **)out, &((uvl *)p)->loop, c,
                                url);
}
static void client_detach(void *a) { ms_libuv_client_detach(a); }
static int hub_attach(void **out, void *p, ms_hub *h, const char *host,
                      int port) {
  return ms_libuv_hub_attach((ms_libuv_hub **)out, &((uvl *)p)->loop, h, host,
                             port);
}
static int hub_port(void *a) { return ms_libuv_hub_port(a); }
static void hub_detach(void *a) { ms_libuv_hub_detach(a); }

static int client_flush(void *a, int64_t timeout_ms) {
  return ms_libuv_client_flush(a, timeout_ms);
}

static int hub_listen(void *a, const char *host, int port,
                      const ms_stream_wrap *tls, int *bound) {
  return ms_libuv_hub_listen((ms_libuv_hub *)a, host, port, tls, bound);
}

static int hub_cluster(void *a, const ms_cluster_config *cfg) {
  return ms_libuv_hub_cluster(a, cfg);
}

const conf_backend conf_backend_impl = {
    "libuv",       loop_new,   loop_free, run_once,  client_attach,
    client_detach, hub_attach, hub_port,  hub_detach,
    client_flush, hub_listen, hub_cluster};
