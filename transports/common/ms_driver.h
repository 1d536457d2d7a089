/*
 * microstream: the loop-agnostic driver core (internal, not installed).
 *
 * Everything a loop integration must do for a client or a hub (open and
 * reopen the TCP stream, pump bytes through the engine's ops, watch for
 * backpressure, keep one timer at the engine's next deadline, coalesce the
 * engine's wakeups into one deferred flush, drain the hub's dirty list,
 * accept streams) lives here once. A loop only supplies ms_drv_hooks and
 * calls back ms_drv_io_ready / ms_drv_timer_fired / ms_drv_run_deferred.
 * The built-in POSIX loop and the libuv, libev and libevent adapters are
 * thin layers over it, so they cannot drift apart.
 */
#ifndef MS_DRIVER_H
#define MS_DRIVER_H

#include <microstream/ms_cluster.h>
#include <microstream/ms_posix.h>

enum { MS_DRV_READ = 1, MS_DRV_WRITE = 2 };

typedef struct ms_drv ms_drv;

/* One watched descriptor. The adapter may keep its watcher in `watcher`
 * (created on the first io_watch, released by io_close). */
typedef struct ms_drv_io {
  int fd;
  unsigned watched; /* events currently asked of the adapter */
  void *watcher;    /* the adapter's handle, NULL until the first watch */
  ms_drv *d;
  void (*ready)(struct ms_drv_io *io, unsigned events);
} ms_drv_io;

typedef struct ms_drv_hooks {
  /* Watch io->fd for `events` (MS_DRV_READ | MS_DRV_WRITE; 0 = pause) and
   * call ms_drv_io_ready(io, ...) when ready. The core calls it only when
   * the set changes, but a repeat must be harmless. Returns 0 or < 0. */
  int (*io_watch)(void *ctx, ms_drv_io *io, unsigned events);
  /* Stop watching and free io->watcher (if any). Called before the fd is
   * closed; no ms_drv_io_ready(io) may follow. */
  void (*io_close)(void *ctx, ms_drv_io *io);
  /* Arm the driver's single timer at absolute time `at` (now() clock), or
   * cancel it for MS_NO_DEADLINE. The timer fires once:
   * ms_drv_timer_fired(). */
  void (*timer)(void *ctx, int64_t at);
  /* Arrange one call of ms_drv_run_deferred() soon, after the callbacks
   * now running, without blocking in between. Returns 0 or < 0. */
  int (*defer)(void *ctx);
  /* Monotonic milliseconds. */
  int64_t (*now)(void *ctx);
  /* The core is done: stop the timer and the deferred call and free the
   * adapter's state. Called exactly once, after ms_drv_del(), when no core
   * frame is on the stack any more. Must not call into the core. */
  void (*release)(void *ctx);
} ms_drv_hooks;

/* Attach a client (connects to url from the loop, not from here). On
 * failure nothing was called and the adapter frees its own state. */
int ms_drv_client_new(ms_drv **out, ms_client *c, const char *url,
                      const ms_drv_hooks *hooks, void *ctx);
/* The client, or NULL once detached. */
ms_client *ms_drv_client(const ms_drv *d);

/* Deliver what the client still holds before the program stops: runs the
 * loop through run_once(ctx, max_ms) (one bounded iteration of the
 * adapter's loop) until no log record is queued and no output waits, or
 * timeout_ms passes. The driver stays valid across the call even if it is
 * detached from a callback meanwhile. Returns 0, MS_ERR_TIMEOUT,
 * MS_ERR_CLOSED (detached meanwhile) or MS_ERR_INVALID_ARG. */
int ms_drv_client_flush(ms_drv *d, int64_t timeout_ms,
                        void (*run_once)(void *ctx, int64_t max_ms));

/* Install the OS random source (ms_posix_random) unless one is set. */
void ms_drv_default_random(void);

/* Attach a hub listening on host:port (0 = any free port); host NULL:
 * no listener yet (add them with ms_drv_hub_listen). */
int ms_drv_hub_new(ms_drv **out, ms_hub *h, const char *host, int port,
                   const ms_drv_hooks *hooks, void *ctx);
/* Another listener on the same hub (at most MS_DRV_MAX_LISTENERS); tls
 * (may be NULL: plain) wraps every stream it accepts. *bound (may be
 * NULL) gets the port. */
#define MS_DRV_MAX_LISTENERS 8
int ms_drv_hub_listen(ms_drv *d, const char *host, int port,
                      const ms_stream_wrap *tls, int *bound);
/* The first listener's port, -1 if none. */
int ms_drv_hub_port(const ms_drv *d);
void ms_drv_hub_stop_listening(ms_drv *d);
size_t ms_drv_hub_streams(const ms_drv *d);

/* Join a cluster through Redis (hub drivers; MS_ERR_STATE in a build
 * without hiredis). Leave: say goodbye and give back names (before a
 * clean exit); pending: commands still to be answered. */
int ms_drv_hub_cluster(ms_drv *d, const ms_cluster_config *cfg);
void ms_drv_hub_cluster_leave(ms_drv *d);
size_t ms_drv_hub_cluster_pending(const ms_drv *d);
int ms_drv_hub_cluster_stats(const ms_drv *d, ms_cluster_stats *st);

/* Detach: never touches the engine again, closes the sockets, and calls
 * hooks->release once, now or when the outermost core call returns (so it
 * is safe from inside any engine callback). A hub's connections are left
 * to ms_hub_del(). NULL is a no-op, and so is a second call from inside
 * the same callback (before the release); after the release the handle
 * is gone. */
void ms_drv_del(ms_drv *d);

/* From the adapter's callbacks. */
void ms_drv_io_ready(ms_drv_io *io, unsigned events);
void ms_drv_timer_fired(ms_drv *d);
void ms_drv_run_deferred(ms_drv *d);

/* A c-ares channel whose sockets are reported to cb(data, ...) (c-ares's
 * sock_state_cb), for every resolver on the drivers' loops: 0,
 * MS_ERR_NOMEM or MS_ERR_ADDRESS (*channel is then NULL). */
struct ares_channeldata;
int ms_drv_ares_channel(struct ares_channeldata **channel,
                        void (*cb)(void *data, int fd, int readable,
                                   int writable),
                        void *data);

#endif
