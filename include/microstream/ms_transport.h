/*
 * microstream: the transport vtable.
 *
 * A transport is a non-blocking byte stream (a TCP socket, a TLS session,
 * a pipe pair, an in-memory pair). Engines (ms_conn, ms_client, a hub
 * connection) are sans-IO; ms_pump() moves bytes between one engine and
 * one transport, and is all an event loop needs to call when the
 * transport's fd is readable or writable, or after a tick.
 *
 * Contract for implementations:
 *  - read: copy up to len bytes into buf; return the count (> 0), 0 at end
 *    of stream, MS_ERR_WOULDBLOCK when nothing is available now, or another
 *    negative ms_err (MS_ERR_IO) on failure. Never blocks.
 *  - write: write up to len bytes from buf; return the count (>= 0, may be
 *    short), MS_ERR_WOULDBLOCK, or a negative ms_err. Never blocks. The
 *    transport does not keep buf after returning.
 *  - get_fd: the descriptor whose readiness gates read/write, or -1 for a
 *    transport that is driven otherwise (memory pair).
 *  - close: release the stream. Called once; no other call follows.
 *  - None of these may call back into the engine.
 */
#ifndef MICROSTREAM_MS_TRANSPORT_H
#define MICROSTREAM_MS_TRANSPORT_H

#include <microstream/ms_common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_transport_vtable {
  ptrdiff_t (*read)(void *self, uint8_t *buf, size_t len);
  ptrdiff_t (*write)(void *self, const uint8_t *buf, size_t len);
  int (*get_fd)(void *self);
  void (*close)(void *self);
} ms_transport_vtable;

typedef struct ms_transport {
  const ms_transport_vtable *vt;
  void *self;
} ms_transport;

/* The sans-IO face every engine shows to a transport. */
typedef struct ms_engine_ops {
  int (*feed)(void *engine, const uint8_t *data, size_t len, int64_t now);
  const uint8_t *(*peek)(void *engine, size_t *len);
  void (*consume)(void *engine, size_t n);
  int (*want_read)(const void *engine);
  int (*want_write)(const void *engine);
  void (*eof)(void *engine, int64_t now);
  /* Optional (NULL for engines that never free themselves): ms_pump()
   * holds the engine for the whole pump, so that a callback deleting it
   * defers the free until release, which returns 1 when the engine is
   * now gone. Added after the six above: an ops struct initialised
   * without them keeps working. */
  void (*hold)(void *engine);
  int (*release)(void *engine);
} ms_engine_ops;

/*
 * A stream wrapper: a byte-in/byte-out layer (TLS) that a transport puts
 * between its stream and an engine. open() wraps one engine and returns
 * another (driven with wrap->ops), which shows the transport the wrapped
 * bytes and feeds the inner engine the plain ones. The driver core uses
 * it for wss:// and for TLS listeners; a custom transport can too.
 */
typedef struct ms_stream_wrap_vtable {
  /* Wrap inner/inner_engine for one stream. server: the accepting side.
   * peer_name (client side): the host name to verify the peer's
   * certificate against and to send as SNI. Returns 0 and *wrapped, or
   * an ms_err. */
  int (*open)(void *self, int server, const char *peer_name,
              const ms_engine_ops *inner, void *inner_engine,
              void **wrapped);
  /* Free one wrapped stream (never touches the inner engine). */
  void (*close)(void *wrapped);
  /* Non-zero once the wrapper's own handshake is complete. */
  int (*established)(const void *wrapped);
  /* Why the stream failed (for logs), or NULL. */
  const char *(*error)(const void *wrapped);
} ms_stream_wrap_vtable;

typedef struct ms_stream_wrap {
  const ms_stream_wrap_vtable *vt;
  const ms_engine_ops *ops; /* the wrapped engine's ops */
  void *self;
  /* A stream not established this long after it opened is closed
   * (0: no limit from the driver). */
  int64_t handshake_timeout_ms;
} ms_stream_wrap;

/* ms_conn as an engine. ms_client and hub connections have their own
 * (ms_client_engine_ops, ms_hub_conn_engine_ops). */
MS_EXTERN extern const ms_engine_ops ms_conn_engine_ops;

/* Result bits of ms_pump(). */
enum {
  MS_PUMP_DONE = 1,        /* engine wants neither read nor write: close */
  MS_PUMP_WANT_WRITE = 2,  /* output is pending: wait for writability */
  MS_PUMP_WANT_READ = 4,   /* the engine will take more input */
  MS_PUMP_FREED = 8        /* a callback deleted the engine during the
                              pump and it is now freed: close the
                              transport, never touch the engine again */
};

/*
 * Read what the transport has (at most `max_read` bytes in this call, 0 =
 * 256 KiB) while the engine wants input, feeding it; then write the
 * engine's output until it is drained or the transport would block. End of
 * stream or an I/O error is reported to the engine with eof(). Returns a
 * mask of MS_PUMP_* bits (MS_PUMP_FREED alone when the engine was deleted
 * from one of its callbacks), or a fatal ms_err from the engine.
 */
MS_EXTERN int ms_pump(const ms_engine_ops *ops, void *engine,
                      const ms_transport *t, size_t max_read, int64_t now);

/* Only the write half of ms_pump() (after a tick or a send). */
MS_EXTERN int ms_pump_write(const ms_engine_ops *ops, void *engine,
                            const ms_transport *t, int64_t now);

/*
 * Memory transport: a connected pair of in-process byte streams, for
 * tests and fuzzing. Each direction buffers at most `capacity` bytes
 * (writes beyond it are short / MS_ERR_WOULDBLOCK). ms_memory_pair_del()
 * frees both ends; closing one end makes the other read end of stream
 * after the buffered bytes.
 */
typedef struct ms_memory_pair ms_memory_pair;
MS_EXTERN int ms_memory_pair_new(ms_memory_pair **pp, size_t capacity,
                                 ms_transport *a, ms_transport *b,
                                 const ms_allocator *mem);
MS_EXTERN void ms_memory_pair_del(ms_memory_pair *p);
/* Bytes buffered toward end a (0) or b (1). */
MS_EXTERN size_t ms_memory_pair_buffered(const ms_memory_pair *p, int to_b);

#ifdef __cplusplus
}
#endif

#endif
