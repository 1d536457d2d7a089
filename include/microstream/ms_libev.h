/*
 * microstream: the libev adapter (library microstream-libev). Attaches a
 * client or a hub to the caller's struct ev_loop: one ev_io per socket,
 * one ev_timer at the engine's next deadline, one ev_idle (highest
 * priority, started only when needed) that runs the coalesced flush. No
 * threads.
 *
 * The engine stays the caller's. Detach before ms_client_del() /
 * ms_hub_del(); detaching (and then deleting the engine) is safe from
 * inside any engine callback.
 */
#ifndef MICROSTREAM_MS_LIBEV_H
#define MICROSTREAM_MS_LIBEV_H

#include <microstream/ms_client.h>
#include <microstream/ms_cluster.h>
#include <microstream/ms_hub.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
typedef struct ms_libev_client ms_libev_client;
typedef struct ms_libev_hub ms_libev_hub;

/* Connect c to url ("ws://host:port/path") from the loop, reconnecting as
 * the client says. Returns 0, MS_ERR_INVALID_ARG (wss:// without ms_client_config.tls),
 * MS_ERR_ADDRESS, MS_ERR_NOMEM. */
MS_EXTERN int ms_libev_client_attach(ms_libev_client **out,
                                     struct ev_loop *loop, ms_client *c,
                                     const char *url);
/* Run the loop (bounded iterations, from outside any callback of the loop)
 * until the client has shipped its queued log records and written its
 * output, or timeout_ms passes: call it before stopping, so the last
 * records are not lost. Returns 0, MS_ERR_TIMEOUT, MS_ERR_CLOSED (detached
 * meanwhile) or MS_ERR_INVALID_ARG. */
MS_EXTERN int ms_libev_client_flush(ms_libev_client *a, int64_t timeout_ms);
/* Stop driving the client and close its socket. NULL is a no-op. */
MS_EXTERN void ms_libev_client_detach(ms_libev_client *a);

/* Serve h on host:port (0 = any free port). Returns 0, MS_ERR_ADDRESS,
 * MS_ERR_IO, MS_ERR_NOMEM. */
MS_EXTERN int ms_libev_hub_attach(ms_libev_hub **out, struct ev_loop *loop,
                                  ms_hub *h, const char *host, int port);
/* The port listened on, -1 for NULL. */
MS_EXTERN int ms_libev_hub_port(const ms_libev_hub *a);
/* Join a cluster through Redis (<microstream/ms_cluster.h>; before the
 * first connection). Returns 0, MS_ERR_INVALID_ARG, MS_ERR_STATE (a build
 * without hiredis, or joined already), MS_ERR_NOMEM. */
MS_EXTERN int ms_libev_hub_cluster(ms_libev_hub *a, const ms_cluster_config *cfg);
/* One more listener for the same hub, plain (tls NULL) or TLS (every
 * stream through tls, e.g. ms_tls_wrap() from microstream-tls, which must
 * outlive the adapter). *bound_port (may be NULL) gets its port. Returns
 * 0, MS_ERR_ADDRESS, MS_ERR_IO, MS_ERR_LIMIT, MS_ERR_INVALID_ARG. */
MS_EXTERN int ms_libev_hub_listen(ms_libev_hub *a, const char *host, int port,
                                  const ms_stream_wrap *tls, int *bound_port);
/* Stop listening and close every stream (ms_hub_del() frees the hub's
 * connections). NULL is a no-op. */
MS_EXTERN void ms_libev_hub_detach(ms_libev_hub *a);

#ifdef __cplusplus
}
#endif

#endif
