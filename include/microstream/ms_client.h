/*
 * microstream: the client engine (a service on a hub).
 *
 * Sans-IO like ms_conn: the transport opens a stream when
 * ms_client_want_connect() says so, reports it with ms_client_connected(),
 * then feeds bytes, writes ms_client_peek() output, reports the end of the
 * stream with ms_client_disconnected(), and calls ms_client_tick() at
 * ms_client_next_deadline(). One thread per client; every callback runs
 * from inside a call into the client, and may call any client function,
 * including ms_client_del() (deferred to the outermost call).
 *
 * Payloads are MessagePack: pass encoded bytes (build them with a
 * msgpack_packer over a msgpack_sbuffer), read msgpack_object.
 */
#ifndef MICROSTREAM_MS_CLIENT_H
#define MICROSTREAM_MS_CLIENT_H

#include <microstream/ms_common.h>
#include <microstream/ms_transport.h>
#include <microstream/ms_codec.h>
#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Declared by ms_client.h and ms_log.h alike; once, for C99. */
#ifndef MS_CLIENT_TYPEDEF_
#define MS_CLIENT_TYPEDEF_
typedef struct ms_client ms_client;
#endif
typedef struct ms_reply ms_reply;

typedef enum ms_client_state {
  MS_CLIENT_IDLE = 0,      /* waiting to (re)connect */
  MS_CLIENT_CONNECTING,    /* transport asked to connect */
  MS_CLIENT_HANDSHAKE,     /* upgrade / HELLO sent */
  MS_CLIENT_READY,         /* WELCOME received: registered */
  MS_CLIENT_STOPPED        /* will not reconnect (ms_client_stop, fatal
                              refusal with reconnect off) */
} ms_client_state;

/* Passed to on_state. */
typedef struct ms_client_state_arg {
  ms_client_state state;
  int err;             /* why the connection ended: 0, MS_ERR_DUPLICATE_
                          SERVICE_REGISTRATION, MS_ERR_UNAUTHORIZED, ... */
  uint16_t close_code; /* close code received, 0 if none */
  const char *hub_id;  /* READY: the hub's id (NUL-terminated) */
  int64_t retry_in_ms; /* IDLE: when the next attempt is due, -1 if none */
} ms_client_state_arg;

typedef struct ms_credentials {
  char token[512]; /* NUL-terminated; empty = nil */
} ms_credentials;

typedef struct ms_client_config {
  const char *service;       /* required: 1..128 of [A-Za-z0-9._:-] */
  const char *token;         /* optional static token */
  /* Optional: called before each connection attempt for a fresh token;
   * return 0 and fill creds, or an error to skip this attempt. */
  int (*credentials)(ms_client *c, ms_credentials *creds, void *user_data);
  const char *host;          /* Host header, e.g. "127.0.0.1:7400"; the
                                POSIX driver sets it from its URL */
  const char *path;          /* default "/ws" (likewise) */
  const char *instance;      /* HELLO opts.instance, optional */
  ms_encoding encoding;      /* default MS_ENC_MSGPACK */
  int watch;                 /* HELLO opts.watch: do not register name */
  int64_t heartbeat_ms;      /* default 10000 */
  int64_t default_timeout_ms;/* default 5000 */
  int64_t max_late_ms;       /* late window cap, default 30000 */
  size_t max_pending;        /* requests in flight, default 65536 */
  size_t max_message;        /* default 1 MiB */
  int reconnect;             /* default 1 */
  int reconnect_on_duplicate;/* default 0: DUPLICATE stops the client */
  int64_t backoff_min_ms;    /* default 100 */
  int64_t backoff_max_ms;    /* default 10000 */
  uint64_t seed;             /* jitter / id seed; 0 = from getrandom */
  void (*on_state)(ms_client *c, const ms_client_state_arg *arg,
                   void *user_data);
  /* For wss:// URLs: the TLS layer the drivers put under the connection
   * (ms_tls_wrap() from microstream-tls, or your own). A wss:// URL
   * without one is refused (MS_ERR_INVALID_ARG): never plaintext. Must
   * outlive the client's drivers. */
  const ms_stream_wrap *tls;
  /* The DNS servers the drivers ask for host names, as c-ares takes them:
   * "ip[:port],..." ("[ipv6]:port" with a port). NULL: the system's
   * (/etc/resolv.conf). The hosts file is read first either way. Copied. */
  const char *dns_servers;
} ms_client_config;

MS_EXTERN void ms_client_config_init(ms_client_config *cfg);
/* The TLS layer from the config (NULL if none). */
MS_EXTERN const ms_stream_wrap *ms_client_tls(const ms_client *c);
/* The allocator given to ms_client_new (the libc one for NULL): the
 * drivers take their memory for this client from it too. */
MS_EXTERN const ms_allocator *ms_client_allocator(const ms_client *c);
/* dns_servers from the config (NULL if none). */
MS_EXTERN const char *ms_client_dns_servers(const ms_client *c);

MS_EXTERN int ms_client_new(ms_client **pc, const ms_client_config *cfg,
                            void *user_data, const ms_allocator *mem);
/* Every request still pending gets its callback once with MS_ERR_CANCELLED
 * (even when deleted from inside a callback). NULL is a no-op. */
MS_EXTERN void ms_client_del(ms_client *c);

MS_EXTERN void *ms_client_user_data(const ms_client *c);
MS_EXTERN ms_client_state ms_client_get_state(const ms_client *c);
MS_EXTERN const char *ms_client_service(const ms_client *c);

/* ---- Handlers ---------------------------------------------------------- */

typedef struct ms_request_arg {
  uint64_t id;             /* the hub's id for this request */
  const char *source;      /* requester's service name (NUL-terminated) */
  const char *event;       /* NUL-terminated */
  const msgpack_object *data;
  int64_t timeout_ms;      /* time the requester has left */
  int64_t late_ms;         /* the requester's late window, 0 if none */
} ms_request_arg;

/* A handler must eventually answer through `reply` with
 * ms_reply_send() / ms_reply_error(), now or later. To answer later, call
 * ms_reply_retain() before returning; ms_reply_release() without an answer
 * sends INTERNAL_SERVER_ERROR. A handler that returns without answering
 * and without retaining has its request answered INTERNAL_SERVER_ERROR. */
typedef void (*ms_handler_fn)(ms_client *c, ms_reply *reply,
                              const ms_request_arg *arg, void *user_data);

/* Register (or replace) the handler for `event`. fn NULL removes it.
 * Returns 0, MS_ERR_INVALID_ARG, MS_ERR_NOMEM. */
MS_EXTERN int ms_client_on(ms_client *c, const char *event, ms_handler_fn fn,
                           void *user_data);

MS_EXTERN void ms_reply_retain(ms_reply *r);
/* Answer with MessagePack bytes (data NULL/len 0 -> nil). The handle is
 * released (a retained handle needs no ms_reply_release afterwards).
 * Returns 0, MS_ERR_STATE (already answered), MS_ERR_CLOSED (the request
 * was cancelled or the connection dropped: the answer is discarded),
 * MS_ERR_PAYLOAD_TOO_LARGE (larger than the hub's max_message on the
 * wire: the requester gets PAYLOAD_TOO_LARGE instead). */
MS_EXTERN int ms_reply_send(ms_reply *r, const uint8_t *data, size_t len);
/* Answer with a C string as a MessagePack str. */
MS_EXTERN int ms_reply_send_str(ms_reply *r, const char *s);
/* Answer with an error code (a standard or application code string),
 * message and optional MessagePack error_data. */
MS_EXTERN int ms_reply_error(ms_reply *r, const char *code,
                             const char *message, const uint8_t *error_data,
                             size_t len);
/* Drop a retained handle; unanswered -> INTERNAL_SERVER_ERROR. */
MS_EXTERN void ms_reply_release(ms_reply *r);
/* Non-zero once the requester cancelled or the connection dropped. */
MS_EXTERN int ms_reply_cancelled(const ms_reply *r);
MS_EXTERN ms_client *ms_reply_client(const ms_reply *r);

/* ---- Requests ---------------------------------------------------------- */

typedef struct ms_response_arg {
  uint64_t id;          /* the local id returned by ms_client_request */
  int err;              /* 0: data is the response; else an ms_err:
                           a -4xx code (from the hub or the target),
                           MS_ERR_APPLICATION (see code) */
  const char *code;     /* wire code string, NULL on success */
  const char *message;  /* error message, "" on success */
  const msgpack_object *data; /* response data, or error_data (may be a
                                 nil object, never NULL) */
  int late;             /* 1 in on_late callbacks */
  int64_t elapsed_ms;   /* since the request was sent */
} ms_response_arg;

typedef void (*ms_response_fn)(ms_client *c, const ms_response_arg *arg,
                               void *user_data);

typedef struct ms_request_opts {
  int64_t timeout_ms;    /* 0 = client default */
  int64_t late_ms;       /* 0 = no late responses */
  ms_response_fn on_late;/* late responses within late_ms after timeout */
  void *late_user_data;
} ms_request_opts;

/*
 * Send a request. `data` is MessagePack bytes (NULL/0 -> nil), copied.
 * Exactly one call of `cb` follows, always from a later call into the
 * client (never from inside ms_client_request): the response, an error,
 * MS_ERR_REQUEST_TIMEOUT, MS_ERR_CANCELLED, or MS_ERR_HUB_UNAVAILABLE.
 * Returns 0 and the local id in *id_out (may be NULL), or
 * MS_ERR_INVALID_ARG, MS_ERR_TOO_MANY_PENDING (max_pending requests are in
 * flight or in late windows) or MS_ERR_NOMEM, and then no callback.
 * timeout_ms and late_ms are capped (late_ms at max_late_ms; the hub caps
 * both again).
 */
MS_EXTERN int ms_client_request(ms_client *c, const char *target,
                                const char *event, const uint8_t *data,
                                size_t len, const ms_request_opts *opts,
                                ms_response_fn cb, void *user_data,
                                uint64_t *id_out);
/* Cancel: the callback runs once with MS_ERR_CANCELLED (from inside this
 * call) and the hub is told. During a request's late window (its callback
 * already had REQUEST_TIMEOUT) it stops on_late from being called, with no
 * callback. Returns 0 or MS_ERR_NOT_FOUND. */
MS_EXTERN int ms_client_cancel(ms_client *c, uint64_t id);

/* Requests in flight (not counting late windows). */
MS_EXTERN size_t ms_client_pending(const ms_client *c);

typedef struct ms_client_stats {
  uint64_t requests_sent, responses, errors, timeouts, late_delivered,
      late_dropped, unknown_dropped, reconnects, handled;
} ms_client_stats;
MS_EXTERN void ms_client_get_stats(const ms_client *c, ms_client_stats *st);

/* ---- Raw messages (logs, subscriptions: see ms_log.h) ------------------ */

/* Queue one encoded protocol message (MessagePack array bytes) to the hub,
 * converted to JSON when that encoding is in use. MS_ERR_STATE when not
 * READY. */
MS_EXTERN int ms_client_send_raw(ms_client *c, const uint8_t *msg,
                                 size_t len);
/* Optional: messages of types the client does not handle itself
 * (RECORD, PRESENCE, ERROR for a sub_id ...). */
typedef void (*ms_client_msg_fn)(ms_client *c, const ms_msg *msg,
                                 void *user_data);
MS_EXTERN void ms_client_on_message(ms_client *c, ms_client_msg_fn fn,
                                    void *user_data);

/* ---- Transport side ---------------------------------------------------- */

/* Where the next connection goes: the Host header value ("host:port") and
 * the request path. Transports that take a URL set this from it (the POSIX
 * driver does). Copied; takes effect at the next connection. Returns 0,
 * MS_ERR_INVALID_ARG or MS_ERR_NOMEM. */
MS_EXTERN int ms_client_set_endpoint(ms_client *c, const char *host,
                                     const char *path);

/* Stop: close the connection (1000) and do not reconnect. Pending
 * requests end with MS_ERR_HUB_UNAVAILABLE when the stream ends. */
MS_EXTERN void ms_client_stop(ms_client *c, int64_t now);
/* (Re)start after a stop or a fatal refusal. */
MS_EXTERN void ms_client_start(ms_client *c, int64_t now);

/* Non-zero when the transport should open a new stream now. */
MS_EXTERN int ms_client_want_connect(const ms_client *c, int64_t now);
/* The transport is about to connect (state CONNECTING). */
MS_EXTERN void ms_client_connecting(ms_client *c, int64_t now);
/* The stream is established: the upgrade request is queued. Returns 0,
 * MS_ERR_STATE, MS_ERR_NOMEM or MS_ERR_RANDOM (no random source installed,
 * or it failed; see ms_set_random): then report the stream as ended. */
MS_EXTERN int ms_client_connected(ms_client *c, int64_t now);
/* The stream ended or could not be opened. Requests in flight end with
 * MS_ERR_HUB_UNAVAILABLE; a reconnect is scheduled with backoff. */
MS_EXTERN void ms_client_disconnected(ms_client *c, int64_t now);
/* The same, saying why (e.g. MS_ERR_TLS); on_state reports err. */
MS_EXTERN void ms_client_disconnected_err(ms_client *c, int64_t now, int err);

MS_EXTERN int ms_client_feed(ms_client *c, const uint8_t *data, size_t len,
                             int64_t now);
MS_EXTERN const uint8_t *ms_client_peek(ms_client *c, size_t *len);
MS_EXTERN void ms_client_consume(ms_client *c, size_t n);
MS_EXTERN int ms_client_want_read(const ms_client *c);
MS_EXTERN int ms_client_want_write(const ms_client *c);
MS_EXTERN int ms_client_tick(ms_client *c, int64_t now);
MS_EXTERN int64_t ms_client_next_deadline(const ms_client *c);

MS_EXTERN extern const ms_engine_ops ms_client_engine_ops;

/* For transports: `fn` is called when the client gets new output or an
 * earlier deadline from a call the transport did not make (a request from
 * the user's own timer, say). The transport should then schedule a write
 * and re-read ms_client_next_deadline(); it must not call into the client
 * from inside fn. One hook per client; fn NULL removes it. */
typedef void (*ms_wakeup_fn)(void *transport_data);
MS_EXTERN void ms_client_set_wakeup(ms_client *c, ms_wakeup_fn fn,
                                    void *transport_data);

#ifdef __cplusplus
}
#endif

#endif
