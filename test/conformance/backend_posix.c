/* Conformance backend: the built-in loop (ms_loop + ms_posix_*). */
#include "conformance.h"

static void *loop_new(void) {
  ms_loop *l = NULL;
  return ms_loop_new(&l, NULL) == 0 ? l : NULL;
}
static int loop_free(void *l) {
  ms_loop_del(l);
  return 0;
}
static void run_once(void *l, int ms) { ms_loop_run_once(l, ms); }
static int client_attach(void **out, void *l, ms_client *c, const char *url) {
  return ms_posix_client_new((ms_posix_client **)out, l, c, url);
}
static void client_detach(void *a) { ms_posix_client_del(a); }
static int hub_attach(void **out, void *l, ms_hub *h, const char *host,
                      int port) {
  return ms_posix_hub_new((ms_posix_hub **)out, l, h, host, port);
}
static int hub_port(void *a) { return ms_posix_hub_port(a); }
static void hub_detach(void *a) { ms_posix_hub_del(a); }

static int client_flush(void *a, int64_t timeout_ms) {
  return ms_posix_client_flush(a, timeout_ms);
}

static int hub_listen(void *a, const char *host, int port,
                      const ms_stream_wrap *tls, int *bound) {
  return ms_posix_hub_listen_tls((ms_posix_hub *)a, host, port, tls, bound);
}

static int hub_cluster(void *a, const ms_cluster_config *cfg) {
  return ms_posix_hub_cluster(a, cfg);
}

const conf_backend conf_backend_impl = {
    "posix",       loop_new,   loop_free, run_once,  client_attach,
    client_detach, hub_attach, hub_port,  hub_detach,
    client_flush, hub_listen, hub_cluster};
