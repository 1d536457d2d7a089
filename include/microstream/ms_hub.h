/*
 * microstream: the hub engine.
 *
 * Sans-IO: the transport accepts a stream and calls ms_hub_accept(), feeds
 * each connection's bytes with ms_hub_conn_feed(), and writes what
 * ms_hub_conn_peek() shows. Because routing makes output appear on other
 * connections than the one fed, the hub keeps a list of connections with
 * new output or a changed state: after feeding and ticking, the transport
 * drains it with ms_hub_next_dirty() and flushes each (one write per
 * connection per loop iteration). A connection whose want_read and
 * want_write are both 0 is finished: the transport closes the stream and
 * calls ms_hub_conn_release().
 */
#ifndef MICROSTREAM_MS_HUB_H
#define MICROSTREAM_MS_HUB_H

#include <microstream/ms_common.h>
#include <microstream/ms_conn.h>
#include <microstream/ms_token.h>
#include <microstream/ms_transport.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_hub ms_hub;
typedef struct ms_hub_conn ms_hub_conn;

/* One kept log record, as handed to ms_hub_config.on_record (for a
 * store). Pointers are valid during the call only. */
typedef struct ms_hub_record {
  uint64_t seq;
  int64_t ts_us;
  int64_t level;
  const char *service;
  size_t service_len;
  const char *message;
  size_t message_len;
  const uint8_t *fields; /* MessagePack map */
  size_t fields_len;
} ms_hub_record;

struct ms_buf;

typedef struct ms_hub_config {
  const char *hub_id;          /* NULL: generated per start */
  int64_t heartbeat_ms;        /* liveness interval, default 10000 */
  size_t max_message;          /* default 1 MiB */
  size_t max_pending;          /* requests in flight per connection, 1024 */
  int64_t default_timeout_ms;  /* default 5000 */
  int64_t max_timeout_ms;      /* default 300000 */
  int64_t max_late_ms;         /* default 30000 */
  size_t max_connections;      /* default 100000 */
  size_t out_high_water;       /* per connection, default 1 MiB */
  size_t out_hard_limit;       /* per connection: past it, close 4029;
                                  default 16 MiB */
  int replace_stale;           /* let a new connection replace a stale one */
  /* Access control (PROTOCOL.md "Access control"). With at least one key
   * (keys, or secret: the key for tokens without "kid"), every HELLO needs
   * a JWT HS256 token (ms_token.h) whose sub is the HELLO name: scope
   * "service" to register it, send requests and log, "watch" to
   * subscribe; /api/ paths need a bearer token with "watch". The hub
   * keeps copies of the keys (ms_hub_set_keys replaces them). */
  const uint8_t *secret;
  size_t secret_len;
  const ms_token_key *keys;
  size_t nkeys;
  int64_t token_skew_s;  /* allowed clock difference, default 60 */
  /* Migration: also accept the earlier static tokens, lowercase hex
   * HMAC-SHA256(secret, service) (ms_service_token), as a "service" token
   * for that name that never expires. Default 0. */
  int legacy_tokens;
  /* /metrics needs a token too (any scope). Default 0: open. */
  int metrics_need_token;
  /* Browser requests (those with an Origin header) to /ws and /api/ are
   * refused with 403 unless Origin is the hub's own (the scheme and Host
   * of the request) or one of these ("*" allows every origin). */
  const char *const *allow_origins;
  size_t nallow_origins;
  /* DNS-rebinding guard for a hub bound to loopback: when set, a request
   * whose Host names anything but localhost, an IP literal or one of
   * allow_hosts is refused with 403. */
  int check_host;
  const char *const *allow_hosts;
  size_t nallow_hosts;
  /* Connections from one address that have not yet completed HELLO
   * (ms_hub_accept_peer): past this many, more are refused (default 64;
   * 0 no limit). */
  size_t max_unauth_per_peer;
  /* Log ring (records kept in memory for history): at most log_ring
   * records (default 10000) and log_ring_bytes bytes (default 64 MiB). */
  size_t log_ring;
  size_t log_ring_bytes;
  /* How far (in records) a subscriber may fall behind the live stream
   * before the oldest it has not seen are dropped for it (gap), default
   * 4096. */
  size_t sub_queue;
  /* Wall clock in microseconds since the Unix epoch. NULL: the hub uses
   * now * 1000 (tests). */
  int64_t (*wallclock_us)(void *user_data);
  /* Optional hook for the hub's own events (connects, refusals ...). */
  void (*on_event)(ms_hub *h, int level, const char *text, void *user_data);
  /* Optional: serve HTTP requests the hub does not serve itself. Return
   * 0 if answered with ms_conn_http_respond(), else the hub answers 404. */
  int (*on_http)(ms_hub *h, ms_conn *c, const ms_http_request *req,
                 void *user_data);
  /* Optional: every log record the hub keeps (after seq and time are
   * stamped), e.g. to write it to a store. Must not block. */
  void (*on_record)(ms_hub *h, const ms_hub_record *rec, void *user_data);
  /* Serve the live log viewer page at "/" (default 1). */
  int serve_viewer;
  /* A connection silent this long gives back its WebSocket buffers
   * (ms_conn_hibernate) until it next has traffic: idle services cost a
   * fraction of the memory. Default 1000; 0 never. */
  int64_t idle_release_ms;
  /* Socket.IO sessions (the endpoint at /socket.io/) open at once, at
   * most; default 10000. */
  size_t sio_max_sessions;
  /* Optional: append the program's own figures (Prometheus text) to
   * /metrics. Return 0 or MS_ERR_NOMEM. */
  int (*on_metrics)(ms_hub *h, struct ms_buf *out, void *user_data);
  /* Subscriptions per connection (default 64) and the bytes their filters
   * may hold in all (default 64 KiB): past either, SUBSCRIBE gets
   * TOO_MANY_SUBSCRIPTIONS. */
  size_t max_subscriptions;
  size_t max_filter_bytes;
  /* New streams from one address (ms_hub_accept_peer) are rate limited
   * by a token bucket that holds conn_burst streams and refills
   * conn_rate a second (defaults 50 and 200; conn_rate 0: no limit).
   * Past it a stream is refused with MS_ERR_LIMIT before anything else
   * happens on it (no TLS handshake is started). Loopback addresses
   * (127.0.0.0/8, ::1) are exempt unless conn_rate_loopback is set: all
   * the clients of a proxy on the same machine share its address. */
  uint32_t conn_rate;
  uint32_t conn_burst;
  int conn_rate_loopback;
} ms_hub_config;

MS_EXTERN void ms_hub_config_init(ms_hub_config *cfg);

/* Returns 0, MS_ERR_NOMEM, or MS_ERR_RANDOM when no random source is
 * installed or it fails (the hub id and hash seeds need one: see
 * ms_set_random). */
MS_EXTERN int ms_hub_new(ms_hub **ph, const ms_hub_config *cfg,
                         void *user_data, const ms_allocator *mem);
/* Frees every connection (the transport must have closed their streams or
 * stop using them). NULL is a no-op. */
MS_EXTERN void ms_hub_del(ms_hub *h);
MS_EXTERN void *ms_hub_user_data(const ms_hub *h);
/* The allocator given to ms_hub_new (the libc one for NULL): the drivers
 * take their memory for this hub (its accepted streams) from it too. */
MS_EXTERN const ms_allocator *ms_hub_allocator(const ms_hub *h);
MS_EXTERN const char *ms_hub_id(const ms_hub *h);

/* ---- Transport side ---------------------------------------------------- */

/* A stream was accepted. `transport_data` is kept for the transport
 * (ms_hub_conn_transport_data). Returns 0, MS_ERR_LIMIT (max_connections:
 * the transport closes the stream), MS_ERR_NOMEM. */
MS_EXTERN int ms_hub_accept(ms_hub *h, ms_hub_conn **pc, void *transport_data,
                            int64_t now);
/* The same for a stream from `peer` (an address as text, e.g.
 * "192.0.2.1"; NULL: unknown): counted against max_unauth_per_peer until
 * its HELLO is accepted, and named in the hub's events about it. Returns
 * MS_ERR_LIMIT too when the peer is over its limit. `secure`: the stream
 * is encrypted (TLS), so the hub's own origin is https://. */
MS_EXTERN int ms_hub_accept_peer(ms_hub *h, ms_hub_conn **pc,
                                 void *transport_data, const char *peer,
                                 int secure, int64_t now);
MS_EXTERN int ms_hub_conn_feed(ms_hub_conn *hc, const uint8_t *data,
                               size_t len, int64_t now);
MS_EXTERN const uint8_t *ms_hub_conn_peek(ms_hub_conn *hc, size_t *len);
MS_EXTERN void ms_hub_conn_consume(ms_hub_conn *hc, size_t n);
MS_EXTERN int ms_hub_conn_want_read(const ms_hub_conn *hc);
MS_EXTERN int ms_hub_conn_want_write(const ms_hub_conn *hc);
/* The transport's own layer under hc (TLS) failed: a handshake that
 * failed or timed out, an alert, plaintext on a TLS port. `why` goes to
 * on_event with the peer's address (a few lines per 10 s at most: a
 * flood cannot flood the log; the lines held back are counted and
 * reported) and is counted in /metrics. Call it before the stream is
 * closed and hc released. */
MS_EXTERN void ms_hub_conn_stream_failed(ms_hub_conn *hc, const char *why);
/* The stream ended or failed. */
MS_EXTERN void ms_hub_conn_eof(ms_hub_conn *hc, int64_t now);
/* The transport closed the stream; the hub frees hc (now or, if inside a
 * hub callback, when it returns). hc must not be used afterwards. */
MS_EXTERN void ms_hub_conn_release(ms_hub_conn *hc);
MS_EXTERN void *ms_hub_conn_transport_data(const ms_hub_conn *hc);
/* The service name registered on hc, or NULL. */
MS_EXTERN const char *ms_hub_conn_service(const ms_hub_conn *hc);

/* Streamed HTTP answers, for on_http: after ms_conn_http_begin(c, ...),
 * the hub paces the rest. `more` is called with done 0 at most once per
 * tick (about once a millisecond) while c's output holds less than 64 KiB,
 * to add a bounded piece with ms_conn_http_write() and, at the end,
 * ms_conn_http_end(). It is called once with done 1 when the answer is
 * over (ended by it, the connection lost, the hub deleted, or no write
 * progress for three heartbeat intervals: then the hub ends the connection,
 * the body visibly cut): free what it holds, and do not use c again. When
 * more() itself ends the answer, the done call follows its return.
 * Returns 0, MS_ERR_STATE (c is not a plain HTTP request of this hub). */
typedef void (*ms_hub_http_more_fn)(ms_hub *h, ms_conn *c, int done,
                                    void *stream_data);
MS_EXTERN int ms_hub_http_stream(ms_hub *h, ms_conn *c,
                                 ms_hub_http_more_fn more, void *stream_data);

/* Next connection with new output or a new state since the last call, or
 * NULL. Each connection appears at most once until it is returned. */
MS_EXTERN ms_hub_conn *ms_hub_next_dirty(ms_hub *h);

MS_EXTERN int ms_hub_tick(ms_hub *h, int64_t now);
MS_EXTERN int64_t ms_hub_next_deadline(const ms_hub *h);

/* Fair share: one ms_hub_conn_feed() call reads at most this many
 * WebSocket messages of the connection. Input past them is held by the
 * connection (its want_read is 0, its want_write 1 so the transport keeps
 * it) until ms_hub_resume_input(), so a client that pipelines a flood
 * cannot hold the loop while others wait (held input also waits while the
 * connection's output is above out_high_water, as new input does). A
 * transport should feed at most
 * MS_HUB_FEED_BYTES per connection per loop turn, and call
 * ms_hub_resume_input() once per turn (an idle, prepare or zero-timeout
 * callback) while it returns 1. Failing that, ms_hub_tick() resumes held
 * input too (the next deadline is then at most a millisecond away). */
#define MS_HUB_FEED_MESSAGES 256
#define MS_HUB_FEED_BYTES (64 * 1024)
/* The embedder's log store could not keep `missed` records, the last of
 * them with seq `last_seq`: every subscriber of "logs" gets the marker
 * [8, sub_id, last_seq, ts_us, 0, "", "gap", {"missed": N, "store": true}]
 * (whatever its filter: the subscriber itself may have had them live; they
 * are missing from the store's history). Returns 0, MS_ERR_INVALID_ARG
 * (missed 0) or MS_ERR_STATE (a hub deleted from a callback). */
MS_EXTERN int ms_hub_store_gap(ms_hub *h, uint64_t last_seq, uint64_t missed,
                               int64_t now);

/* Gives every connection with held input one more share of it, in turn.
 * Returns 1 while some input is still held (call again on the next loop
 * turn), else 0 (also for a hub deleted from a callback still running). */
MS_EXTERN int ms_hub_resume_input(ms_hub *h, int64_t now);

/* Close every connection with 4050 (PRESENCE down, reason shutdown). */
MS_EXTERN void ms_hub_shutdown(ms_hub *h, int64_t now);

/* Same hook as ms_client_set_wakeup: new output or an earlier deadline
 * from a call the transport did not make. */
typedef void (*ms_hub_wakeup_fn)(void *transport_data);
MS_EXTERN void ms_hub_set_wakeup(ms_hub *h, ms_hub_wakeup_fn fn,
                                 void *transport_data);

MS_EXTERN extern const ms_engine_ops ms_hub_conn_engine_ops;

/* ---- Introspection ----------------------------------------------------- */

typedef struct ms_hub_stats {
  uint64_t connections;      /* open now */
  uint64_t services;         /* registered names now */
  uint64_t accepted_total;
  uint64_t requests_routed;
  uint64_t responses_routed;
  uint64_t late_routed;
  uint64_t late_dropped;     /* answers after the window, or unknown ids */
  uint64_t bytes_in, bytes_out;
  uint64_t log_records;
  uint64_t errors_by_code[16]; /* index: -(err) - 401, for -401..-415 */
  uint64_t pending;          /* requests in flight now */
  uint64_t hibernations;     /* quiet connections that released buffers */
  uint64_t sio_sessions;     /* Socket.IO sessions open now */
  uint64_t log_records_out;    /* log records sent to subscribers */
  uint64_t log_records_missed; /* reported to subscribers as gaps */
  /* Streams refused at accept: over conn_rate, over max_unauth_per_peer,
   * over max_connections. */
  uint64_t refused_rate, refused_unauth, refused_full;
  uint64_t tls_failures;      /* ms_hub_conn_stream_failed, and TLS
                                 handshakes on a plain port */
  uint64_t events_suppressed; /* event lines held back (flood) */
} ms_hub_stats;
MS_EXTERN void ms_hub_get_stats(const ms_hub *h, ms_hub_stats *st);

/* Prometheus text for /metrics, JSON for /healthz and /api/services;
 * appended to a caller-owned growing buffer. Return 0 or MS_ERR_NOMEM. */
typedef struct ms_buf {
  char *data;
  size_t len, cap;
  const ms_allocator *mem;
} ms_buf;
MS_EXTERN int ms_hub_metrics_text(const ms_hub *h, ms_buf *out);
MS_EXTERN int ms_hub_services_json(const ms_hub *h, ms_buf *out);
/* /api/stats: per (target, event) request counts by outcome and latency
 * buckets (PROTOCOL.md "Monitoring endpoints"). */
MS_EXTERN int ms_hub_stats_json(const ms_hub *h, ms_buf *out);
MS_EXTERN void ms_buf_free(ms_buf *b);
/* Append bytes / printf-formatted text (for on_metrics). 0 or
 * MS_ERR_NOMEM. */
MS_EXTERN int ms_buf_append(ms_buf *b, const void *data, size_t len);
MS_EXTERN int ms_buf_appendf(ms_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Access control ---------------------------------------------------- */

/* Install the wall clock (microseconds since the epoch) that token times
 * are compared with, when the config gave none; the drivers do. */
MS_EXTERN void ms_hub_set_wallclock(ms_hub *h, int64_t (*fn)(void *),
                                    void *user_data);

/* Non-zero when the hub checks tokens (it has a key). */
MS_EXTERN int ms_hub_auth_required(const ms_hub *h);

typedef struct ms_hub_auth {
  unsigned scopes;     /* MS_SCOPE_* granted */
  int64_t expires_at;  /* on the hub's clock (the `now` passed in);
                          MS_NO_DEADLINE when it never expires */
  const char *why;     /* static reason when refused ("expired", ...) */
  char sub[129];
} ms_hub_auth;

/*
 * Check `token` (NULL or empty: none) for a session that wants the scopes
 * in `need` (any one of them suffices; admin always does) under `name`
 * (NULL: any name; else it must equal the token's sub unless the token
 * has admin). For any session kind built on the hub (a WebSocket HELLO,
 * a Socket.IO CONNECT). Without keys: 0 with every scope. Returns 0,
 * MS_ERR_UNAUTHORIZED (no token, bad token), MS_ERR_TOKEN_EXPIRED,
 * MS_ERR_FORBIDDEN (valid, but not for this). Refusals are reported to
 * on_event with `peer`.
 */
MS_EXTERN int ms_hub_authorize(ms_hub *h, const char *token, size_t len,
                               const char *name, size_t name_len,
                               unsigned need, const char *peer, int64_t now,
                               ms_hub_auth *out);

/*
 * The HTTP checks every request to the hub passes, for a transport or
 * session kind that serves its own paths: Host (check_host), Origin, and
 * with keys a token with a scope in `need` (0: none needed) from
 * "Authorization: Bearer" or the query parameter access_token. `secure`:
 * the request came over TLS. Returns 0 or the HTTP status to answer (401,
 * 403; 503 on a hub deleted from a callback still running), with a short
 * reason in *why.
 */
MS_EXTERN int ms_hub_http_guard(ms_hub *h, const ms_http_request *req,
                                unsigned need, int secure, const char *peer,
                                int64_t now, const char **why);

/* Replace the keys (secret rotation while running). Sessions already
 * accepted keep their grant until their token's exp. A key without kid
 * (NULL or "") is also the secret of legacy_tokens from then on (the
 * last one given, as ms_hub_new appends cfg.secret last); without one,
 * legacy tokens are refused. Returns 0 or MS_ERR_NOMEM (the old keys
 * stay). */
MS_EXTERN int ms_hub_set_keys(ms_hub *h, const ms_token_key *keys,
                              size_t nkeys);

/* Replace the allowed origins and hosts (allow_origins, allow_hosts of
 * ms_hub_config) while running; the hub keeps copies, so the caller's
 * strings may be freed. Requests already accepted are not affected.
 * Returns 0, MS_ERR_INVALID_ARG or MS_ERR_NOMEM (the old lists stay). */
MS_EXTERN int ms_hub_set_access_lists(ms_hub *h, const char *const *origins,
                                      size_t norigins,
                                      const char *const *hosts, size_t nhosts);

/* The earlier static token (accepted only with legacy_tokens): lowercase
 * hex HMAC-SHA256(secret, service). out gets 64 chars + NUL. */
MS_EXTERN void ms_service_token(const uint8_t *secret, size_t secret_len,
                                const char *service, char out[65]);

#ifdef __cplusplus
}
#endif

#endif
