/* The conformance suite's view of an event loop: conformance.c is built
 * once per backend (backend_<loop>.c), so every loop integration is held
 * to the same behaviours. */
#ifndef MS_CONFORMANCE_H
#define MS_CONFORMANCE_H

#include <microstream/ms_cluster.h>
#include <microstream/ms_posix.h>

typedef struct conf_backend {
  const char *name;
  void *(*loop_new)(void);
  /* Returns 0 when the loop had nothing of ours left on it. */
  int (*loop_free)(void *loop);
  /* One iteration, waiting at most timeout_ms. */
  void (*run_once)(void *loop, int timeout_ms);
  int (*client_attach)(void **out, void *loop, ms_client *c,
                       const char *url);
  void (*client_detach)(void *a);
  int (*hub_attach)(void **out, void *loop, ms_hub *h, const char *host,
                    int port);
  int (*hub_port)(void *a);
  void (*hub_detach)(void *a);
  /* The adapter's bounded flush (ms_*_client_flush). */
  int (*client_flush)(void *a, int64_t timeout_ms);
  /* Another listener, TLS when tls is given. */
  int (*hub_listen)(void *a, const char *host, int port,
                    const ms_stream_wrap *tls, int *bound);
  /* The adapter's ms_*_hub_cluster. */
  int (*hub_cluster)(void *a, const ms_cluster_config *cfg);
} conf_backend;

extern const conf_backend conf_backend_impl;

#endif
