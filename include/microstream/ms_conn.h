/*
 * microstream: the sans-IO WebSocket connection engine (RFC 6455).
 *
 * One ms_conn is one TCP stream, client or server side. It never touches a
 * socket or a clock: bytes go in with ms_conn_feed(), bytes come out with
 * ms_conn_peek()/ms_conn_consume(), time goes in with ms_conn_tick(), and
 * ms_conn_next_deadline() says when it next needs time.
 *
 * Lifecycle: ms_conn_new() -> ms_conn_start() -> feed/peek/consume/tick ...
 * When ms_conn_want_read() and ms_conn_want_write() are both 0 the stream is
 * finished: the transport closes the socket and calls ms_conn_del().
 *
 * Callbacks run only from inside ms_conn_start/feed/tick/eof and may call
 * any ms_conn function on the same object, including ms_conn_del(), which is
 * then deferred until the outermost call returns. Whoever made that call
 * (a transport pumping the connection) must not touch the object after it:
 * the drivers in ms_posix.h let the user detach them first for this.
 */
#ifndef MICROSTREAM_MS_CONN_H
#define MICROSTREAM_MS_CONN_H

#include <microstream/ms_common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_conn ms_conn;

typedef enum ms_conn_role {
  MS_CONN_CLIENT = 0,
  MS_CONN_SERVER = 1
} ms_conn_role;

typedef struct ms_http_header {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} ms_http_header;

/* A parsed HTTP request head. Every pointer points into the connection's
 * input buffer and is valid only during the callback that received it. */
typedef struct ms_http_request {
  const char *method;
  size_t method_len;
  const char *target; /* the request-target as sent: path and query */
  size_t target_len;
  const char *path;
  size_t path_len;
  const char *query; /* after '?', without it; query_len 0 if none */
  size_t query_len;
  int minor_version; /* HTTP/1.x */
  const ms_http_header *headers;
  size_t nheaders;
  /* Server role: the body of a request with Content-Length (at most the
   * connection's max_message; larger is refused with 413), else NULL/0.
   * Chunked bodies are refused with 411. */
  const uint8_t *body;
  size_t body_len;
} ms_http_request;

/* First header named `name` (case-insensitive), or NULL. */
MS_EXTERN const char *ms_http_header_get(const ms_http_request *req,
                                         const char *name, size_t *value_len);

typedef struct ms_conn_config {
  ms_conn_role role;
  size_t max_message;        /* default 1 MiB; larger -> close 1009 */
  size_t max_header_bytes;   /* default 8192; HTTP head limit */
  size_t max_headers;        /* default 64 */
  size_t out_high_water;     /* default 1 MiB: above it want_read is 0 */
  size_t out_low_water;      /* default 256 KiB: reading resumes below */
  int64_t handshake_timeout_ms; /* default 10000: upgrade must finish */
  int64_t close_timeout_ms;  /* default 5000: wait for the peer's close */
  /* A message (all its fragments) must arrive within this many
   * milliseconds of its first frame, else close 1008; default 30000, -1
   * none. And in at most max_fragments frames, else close 1009; default
   * 1024. So a half-sent message holds at most max_message plus a small
   * constant, and not for ever. */
  int64_t message_timeout_ms;
  size_t max_fragments;

  /* Client role. */
  const char *host; /* Host header value, e.g. "127.0.0.1:7400" */
  const char *path; /* request target, default "/ws" */
  const char *origin; /* optional Origin header */
  /* Subprotocols offered, in order of preference; MS_ENC_NONE ends the
   * list. {MS_ENC_NONE} offers none (microstream.v1 assumed). */
  ms_encoding offer[3];

  /* Server role: which subprotocols are accepted (bit 1<<MS_ENC_MSGPACK,
   * 1<<MS_ENC_JSON). Default both. */
  unsigned accept_mask;
} ms_conn_config;

/* Fill cfg with defaults for role. */
MS_EXTERN void ms_conn_config_init(ms_conn_config *cfg, ms_conn_role role);

typedef struct ms_conn_open_arg {
  ms_encoding encoding;            /* negotiated; MS_ENC_MSGPACK if none */
  int subprotocol_echoed;          /* 0 when no subprotocol was agreed */
  const ms_http_request *request;  /* server role: the upgrade request */
} ms_conn_open_arg;

typedef struct ms_conn_message_arg {
  int binary; /* 1 binary, 0 text (already validated as UTF-8) */
  const uint8_t *data; /* valid during the callback only */
  size_t len;
} ms_conn_message_arg;

typedef struct ms_conn_close_arg {
  int err;              /* 0 for a clean close handshake, else an ms_err */
  uint16_t code;        /* close code received (or sent on our error);
                           1006 when the stream ended without one */
  const char *reason;   /* NUL-terminated, valid during the callback */
  size_t reason_len;
  int by_peer;          /* 1 if the peer started the close */
  int http_status;      /* server role: status sent to a refused upgrade */
} ms_conn_close_arg;

typedef struct ms_conn_callbacks {
  /* Server role, optional: decide on a valid upgrade request. Return 0 to
   * accept, or an HTTP status (400..599) to refuse it. */
  int (*on_upgrade)(ms_conn *c, const ms_http_request *req, void *user_data);
  /* Server role, optional: a request that is not a WebSocket upgrade.
   * Answer with ms_conn_http_respond(), now or later. If NULL, 404. */
  void (*on_http_request)(ms_conn *c, const ms_http_request *req,
                          void *user_data);
  /* The upgrade completed; messages may be sent. */
  void (*on_open)(ms_conn *c, const ms_conn_open_arg *arg, void *user_data);
  /* One complete message (fragments already joined). */
  void (*on_message)(ms_conn *c, const ms_conn_message_arg *arg,
                     void *user_data);
  /* Optional: a pong frame arrived. */
  void (*on_pong)(ms_conn *c, const uint8_t *data, size_t len,
                  void *user_data);
  /* Called once when the WebSocket (or HTTP exchange) is over: close
   * handshake completed, protocol error, end of stream or timeout. Output
   * may still be pending (the close frame): keep flushing until
   * want_write is 0. Not called for a connection deleted before it. */
  void (*on_close)(ms_conn *c, const ms_conn_close_arg *arg,
                   void *user_data);
} ms_conn_callbacks;

/* Create a connection. cfg and cb are copied (strings in cfg are copied).
 * Returns 0, MS_ERR_INVALID_ARG, MS_ERR_NOMEM, or for a client-role
 * connection MS_ERR_RANDOM (no random source installed, or it failed:
 * masks need one; see ms_set_random). */
MS_EXTERN int ms_conn_new(ms_conn **pconn, const ms_conn_config *cfg,
                          const ms_conn_callbacks *cb, void *user_data,
                          const ms_allocator *mem);

/* Free. NULL is a no-op. Inside a callback the free is deferred. */
MS_EXTERN void ms_conn_del(ms_conn *c);

/* Client: queue the upgrade request. Server: arm the handshake deadline.
 * `now` is a monotonic time in milliseconds used for every deadline. */
MS_EXTERN int ms_conn_start(ms_conn *c, int64_t now);

/* Feed bytes received from the peer. All bytes are consumed (the caller
 * checks ms_conn_want_read() before reading more). Returns 0, or a fatal
 * error (MS_ERR_NOMEM); protocol errors are reported through on_close. */
MS_EXTERN int ms_conn_feed(ms_conn *c, const uint8_t *data, size_t len,
                           int64_t now);

/* The transport saw end of stream or a read/write error. */
MS_EXTERN void ms_conn_eof(ms_conn *c, int64_t now);

/* Output: pointer to the next bytes to send (NULL, *len 0 if none). The
 * pointer is valid until the next call on c. */
MS_EXTERN const uint8_t *ms_conn_peek(ms_conn *c, size_t *len);
/* n bytes of the last peek were written. */
MS_EXTERN void ms_conn_consume(ms_conn *c, size_t n);

MS_EXTERN int ms_conn_want_read(const ms_conn *c);
MS_EXTERN int ms_conn_want_write(const ms_conn *c);

/* Bytes of output not yet consumed (framed and still queued). */
MS_EXTERN size_t ms_conn_out_pending(const ms_conn *c);

/* Run timers due at `now` (handshake and close timeouts). */
MS_EXTERN int ms_conn_tick(ms_conn *c, int64_t now);
MS_EXTERN int64_t ms_conn_next_deadline(const ms_conn *c);

/* Queue one message. The data is copied. Returns 0, MS_ERR_STATE (not open
 * or closing), MS_ERR_TOO_BIG (over max_message), MS_ERR_NOMEM. The caller
 * decides what to do above the high-water mark (ms_conn_out_pending). */
MS_EXTERN int ms_conn_send(ms_conn *c, int binary, const uint8_t *data,
                           size_t len);

/* Queue a ping (payload at most 125 bytes). Control frames go ahead of
 * queued messages. */
MS_EXTERN int ms_conn_ping(ms_conn *c, const uint8_t *data, size_t len);

/* Start the close handshake with code and reason (reason at most 123
 * bytes, truncated). No more messages are delivered after this call. */
MS_EXTERN int ms_conn_close(ms_conn *c, uint16_t code, const char *reason);

/* Server role, from on_http_request (now or later): a streamed answer.
 * ms_conn_http_begin() queues the head (Transfer-Encoding: chunked,
 * Connection: close) and lifts the request deadline; each
 * ms_conn_http_write() queues one chunk (nothing for HEAD); watch
 * ms_conn_out_pending() to write only as fast as the peer reads.
 * ms_conn_http_end(c, 1) adds the last chunk; ms_conn_http_end(c, 0) ends
 * without it, so the peer sees an incomplete body (an error midway). The
 * connection is finished when its output is flushed. Return 0,
 * MS_ERR_STATE, MS_ERR_NOMEM (the connection is then failed). */
MS_EXTERN int ms_conn_http_begin(ms_conn *c, int status,
                                 const char *content_type,
                                 const char *extra_headers);
MS_EXTERN int ms_conn_http_write(ms_conn *c, const void *data, size_t len);
MS_EXTERN int ms_conn_http_end(ms_conn *c, int complete);

/* Server role, from on_http_request (now or later): send a complete HTTP/1.1
 * response with Content-Length and "Connection: close"; the connection is
 * finished when it is flushed. `extra_headers` is NULL or "Name: value\r\n"
 * lines. Returns 0, MS_ERR_STATE, MS_ERR_NOMEM. */
MS_EXTERN int ms_conn_http_respond(ms_conn *c, int status,
                                   const char *content_type,
                                   const char *extra_headers,
                                   const void *body, size_t body_len);

/* Server role: as ms_conn_http_respond(), but a request that allows it
 * (HTTP/1.1, no "Connection: close", nothing sent after it) is answered
 * without "Connection: close" and the connection then waits for the next
 * request instead of finishing: no on_close, the handshake timeout is the
 * idle limit, at most MS_CONN_HTTP_MAX_KEEP requests. Otherwise exactly
 * ms_conn_http_respond(). Returns 1 (kept open), 0 (finishing),
 * MS_ERR_STATE, MS_ERR_NOMEM. The request's strings stay valid until the
 * next byte is fed. */
#define MS_CONN_HTTP_MAX_KEEP 1000
MS_EXTERN int ms_conn_http_respond_keep(ms_conn *c, int status,
                                        const char *content_type,
                                        const char *extra_headers,
                                        const void *body, size_t body_len);

/* Release the per-connection WebSocket state (wslay's contexts, several
 * KiB, and the output buffer) while the connection is idle: open, no
 * output pending, no frame or fragmented message half-received. Any later
 * call that needs it recreates it. A server connection needs it only for
 * what is not a whole data, ping or pong frame (and for close): it reads
 * and sends those, and answers pings, without waking; it is not even made
 * before the first such need. For servers holding many quiet connections.
 * Returns 0 (asleep) or MS_ERR_STATE (busy: nothing done). */
MS_EXTERN int ms_conn_hibernate(ms_conn *c);
MS_EXTERN int ms_conn_is_hibernating(const ms_conn *c);

MS_EXTERN int ms_conn_is_open(const ms_conn *c);
MS_EXTERN ms_encoding ms_conn_encoding(const ms_conn *c);
MS_EXTERN ms_conn_role ms_conn_get_role(const ms_conn *c);
MS_EXTERN void *ms_conn_user_data(const ms_conn *c);
MS_EXTERN void ms_conn_set_user_data(ms_conn *c, void *user_data);

/* The RFC 6455 accept value for a Sec-WebSocket-Key: out gets 28 base64
 * characters and a NUL. */
MS_EXTERN void ms_ws_accept_key(const char *key, size_t key_len,
                                char out[29]);

#ifdef __cplusplus
}
#endif

#endif
