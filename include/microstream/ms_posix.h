/*
 * microstream: the POSIX transport. Non-blocking TCP sockets (IPv4 and
 * IPv6) and a small built-in event loop (epoll) with timers. The default
 * for the programs and examples; it also lets a user add their own fds and
 * timers to the same loop.
 *
 * Single-threaded: a loop and everything attached to it belong to the
 * thread that runs it.
 */
#ifndef MICROSTREAM_MS_POSIX_H
#define MICROSTREAM_MS_POSIX_H

#include <microstream/ms_client.h>
#include <microstream/ms_common.h>
#include <microstream/ms_conn.h>
#include <microstream/ms_hub.h>
#include <microstream/ms_log.h>
#include <microstream/ms_transport.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Clocks ------------------------------------------------------------ */
MS_EXTERN int64_t ms_now_ms(void);  /* CLOCK_MONOTONIC, milliseconds */
MS_EXTERN int64_t ms_wall_us(void); /* CLOCK_REALTIME, microseconds */

/* ---- The I/O defaults the sans-IO library leaves to its host ---------- */

/* The OS random source (getrandom), an ms_random_fn. ms_loop_new and the
 * drivers install it with ms_set_random when no source is set. */
MS_EXTERN int ms_posix_random(void *buf, size_t len, void *user_data);

/* Writes "time level service: message k=v ..." to stderr, coloured by
 * level when stderr is a terminal and NO_COLOR is unset. The drivers make
 * it a client's default sink (ms_log_set_defaults). */
MS_EXTERN void ms_log_stderr_sink(ms_client *c, int64_t ts_us, int level,
                                  const char *message,
                                  const msgpack_object *fields,
                                  void *user_data);

/* ---- Loop -------------------------------------------------------------- */

typedef struct ms_loop ms_loop;
typedef struct ms_timer ms_timer;

enum { MS_EV_READ = 1, MS_EV_WRITE = 2 };

typedef void (*ms_fd_fn)(ms_loop *loop, int fd, unsigned events,
                         void *user_data);
typedef void (*ms_timer_fn)(ms_loop *loop, ms_timer *t, void *user_data);

MS_EXTERN int ms_loop_new(ms_loop **ploop, const ms_allocator *mem);
/* Timers and watches still registered are dropped. NULL is a no-op. */
MS_EXTERN void ms_loop_del(ms_loop *loop);
/* Run until ms_loop_stop() or until nothing is watched and no timer is
 * armed. Returns 0 or MS_ERR_IO. */
MS_EXTERN int ms_loop_run(ms_loop *loop);
/* One iteration, waiting at most timeout_ms (-1: until something
 * happens). Returns the number of events and timers run, or MS_ERR_IO. */
MS_EXTERN int ms_loop_run_once(ms_loop *loop, int timeout_ms);
MS_EXTERN void ms_loop_stop(ms_loop *loop);
/* Monotonic time cached at the start of the iteration. */
MS_EXTERN int64_t ms_loop_now(const ms_loop *loop);

/* Watch fd for events (MS_EV_READ | MS_EV_WRITE); events 0 stops
 * watching. Calling it again changes the events and callback. */
MS_EXTERN int ms_loop_watch(ms_loop *loop, int fd, unsigned events,
                            ms_fd_fn fn, void *user_data);
/* A timer firing `delay_ms` from now, then every `repeat_ms` if > 0. */
MS_EXTERN int ms_loop_timer_start(ms_loop *loop, int64_t delay_ms,
                                  int64_t repeat_ms, ms_timer_fn fn,
                                  void *user_data, ms_timer **pt);
/* Stop and free a timer (safe from its own callback). NULL is a no-op. */
MS_EXTERN void ms_timer_stop(ms_timer *t);
/* Run fn once at the end of the current (or next) iteration. */
MS_EXTERN int ms_loop_defer(ms_loop *loop, void (*fn)(void *user_data),
                            void *user_data);

/* ---- Sockets ----------------------------------------------------------- */

/* Parse "ws://host:port/path", "wss://..." (or "host:port"); IPv6 hosts
 * in brackets.
 * host gets the name without brackets; path defaults to "/ws". */
typedef struct ms_url {
  char host[256];
  int port;
  char path[512];
  int tls; /* wss:// */
} ms_url;
MS_EXTERN int ms_url_parse(const char *url, ms_url *out);

/* Start a non-blocking connect; *fd_out is ready for writing when the
 * connection completes (check with ms_tcp_connect_result). Sets
 * TCP_NODELAY. Returns 0, MS_ERR_ADDRESS, MS_ERR_IO. An address literal
 * never blocks; a name is looked up with the system's getaddrinfo, which
 * blocks (the client drivers resolve names with c-ares instead). */
MS_EXTERN int ms_tcp_connect(const char *host, int port, int *fd_out);
MS_EXTERN int ms_tcp_connect_result(int fd); /* 0 or MS_ERR_IO */
/* Listen on host:port (port 0 = any free port; *bound_port gets it).
 * SO_REUSEADDR, non-blocking. host NULL, "" or "*": every address. An
 * address literal never blocks; a name (e.g. "localhost") is looked up
 * once with the system's getaddrinfo, which may block: call it at start,
 * not from a loop that serves others. */
MS_EXTERN int ms_tcp_listen(const char *host, int port, int *fd_out,
                            int *bound_port);

/* A transport over a non-blocking fd (read/write; close closes fd). */
typedef struct ms_fd_stream {
  int fd;
} ms_fd_stream;
MS_EXTERN void ms_fd_transport(ms_fd_stream *s, int fd, ms_transport *t);

/* ---- Drivers: attach an engine to the loop ------------------------------ */

/* A client on a loop: connects to url, reconnects as the client says,
 * pumps bytes, runs its timers. The client stays the caller's; call
 * ms_posix_client_del before ms_client_del. */
typedef struct ms_posix_client ms_posix_client;
MS_EXTERN int ms_posix_client_new(ms_posix_client **pp, ms_loop *loop,
                                  ms_client *c, const char *url);
MS_EXTERN void ms_posix_client_del(ms_posix_client *p);
/* Run the loop until the client's queued log records and output are
 * written and the hub has confirmed it read them (ms_log_sync), or
 * timeout_ms pass (for a clean exit). Returns 0, MS_ERR_TIMEOUT (the hub
 * is away or slow: records still queued, or not confirmed),
 * MS_ERR_CLOSED (the connection ended before the hub confirmed: see
 * ms_log_unconfirmed_lost), MS_ERR_INVALID_ARG. */
MS_EXTERN int ms_posix_client_flush(ms_posix_client *p, int64_t timeout_ms);

/* A hub on a loop, listening on host:port (0 = free port); host NULL:
 * no listener yet. */
typedef struct ms_posix_hub ms_posix_hub;
MS_EXTERN int ms_posix_hub_new(ms_posix_hub **pp, ms_loop *loop, ms_hub *h,
                               const char *host, int port);
/* One more listener for the same hub (up to 8). *bound_port (may be
 * NULL) gets its port. Returns 0, MS_ERR_ADDRESS, MS_ERR_IO, MS_ERR_LIMIT. */
MS_EXTERN int ms_posix_hub_listen(ms_posix_hub *p, const char *host, int port,
                                  int *bound_port);
/* The same for a TLS listener (https:// and wss:// on one port): every
 * stream goes through `tls` (ms_tls_wrap() from microstream-tls), which
 * must outlive the hub driver. */
MS_EXTERN int ms_posix_hub_listen_tls(ms_posix_hub *p, const char *host,
                                      int port, const ms_stream_wrap *tls,
                                      int *bound_port);
/* The first listener's port. */
MS_EXTERN int ms_posix_hub_port(const ms_posix_hub *p);
/* Stop accepting; connections stay until they finish. */
MS_EXTERN void ms_posix_hub_stop_listening(ms_posix_hub *p);
/* Number of streams open now. */
MS_EXTERN size_t ms_posix_hub_streams(const ms_posix_hub *p);
MS_EXTERN void ms_posix_hub_del(ms_posix_hub *p);

/* A plain WebSocket connection (ms_conn) over an fd on the loop: pumps
 * bytes and deadlines until the connection is finished, then closes the
 * fd and calls on_done (where the caller may ms_conn_del). To delete the
 * ms_conn from inside one of its own callbacks instead, call
 * ms_posix_conn_del() first: the driver then stops touching it. */
typedef struct ms_posix_conn ms_posix_conn;
MS_EXTERN int ms_posix_conn_new(ms_posix_conn **pp, ms_loop *loop, int fd,
                                ms_conn *c,
                                void (*on_done)(ms_posix_conn *p, ms_conn *c,
                                                void *user_data),
                                void *user_data);
/* Call after ms_conn_send/close/ping made outside a pump. */
MS_EXTERN void ms_posix_conn_flush(ms_posix_conn *p);
MS_EXTERN void ms_posix_conn_del(ms_posix_conn *p);

#ifdef __cplusplus
}
#endif

#endif
