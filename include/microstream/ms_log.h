/*
 * microstream: structured logs from a client, and subscriptions to the
 * hub's log and presence streams.
 *
 * ms_log() never blocks and never fails the caller's work: a record goes
 * to the local sink (stderr by default) and is shipped to the hub; while
 * the hub is unreachable or the connection is backed up, records wait in a
 * bounded ring (oldest dropped and counted; the count rides along in the
 * next shipped record as the field "_dropped").
 */
#ifndef MICROSTREAM_MS_LOG_H
#define MICROSTREAM_MS_LOG_H

#include <microstream/ms_codec.h>
#include <microstream/ms_common.h>

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Declared by ms_client.h and ms_log.h alike; once, for C99. */
#ifndef MS_CLIENT_TYPEDEF_
#define MS_CLIENT_TYPEDEF_
typedef struct ms_client ms_client;
#endif

/* Parse "debug", "info", "warn", "error", "silent" (or a number). -1 if
 * unknown. */
MS_EXTERN int ms_log_level_parse(const char *s);
/* "debug", "info", "warn", "error", or "level" for others. */
MS_EXTERN const char *ms_log_level_name(int level);

/* Records below `level` are dropped at once (MS_LEVEL_SILENT: all).
 * Default MS_LEVEL_INFO. */
MS_EXTERN void ms_log_set_level(ms_client *c, int level);
MS_EXTERN int ms_log_get_level(const ms_client *c);

/* Local sink: called for every record at or above the level, before it
 * is shipped. fields is a MessagePack map (never NULL). */
typedef void (*ms_log_sink_fn)(ms_client *c, int64_t ts_us, int level,
                               const char *message, const msgpack_object *fields,
                               void *user_data);
/* fn NULL: no local output. The default is none, or what a driver set
 * with ms_log_set_defaults (ms_log_stderr_sink). */
MS_EXTERN void ms_log_set_sink(ms_client *c, ms_log_sink_fn fn,
                               void *user_data);
/* For drivers and programs: the sink and wall clock a client uses while
 * the application has chosen none (ms_log_set_sink, ms_log_set_clock).
 * The library itself writes nowhere and reads no clock: without these a
 * client has no local output and leaves log stamps to the hub. The
 * drivers (ms_posix.h and the loop adapters) install ms_log_stderr_sink
 * and the wall clock. */
MS_EXTERN void ms_log_set_defaults(ms_client *c, ms_log_sink_fn sink,
                                   void *sink_user_data,
                                   int64_t (*wall_us)(void *),
                                   void *clock_user_data);

/* Ring bound for records waiting to be shipped (default 1000). */
MS_EXTERN void ms_log_set_queue(ms_client *c, size_t max_records);
/* Wall clock for record timestamps (µs since the epoch). Without one,
 * records carry ts 0 and the hub stamps its own time on arrival. Transports
 * install one (the POSIX driver does). */
MS_EXTERN void ms_log_set_clock(ms_client *c, int64_t (*wall_us)(void *),
                                void *user_data);

typedef enum ms_field_type {
  MS_FIELD_STR = 0,
  MS_FIELD_INT,
  MS_FIELD_DOUBLE,
  MS_FIELD_BOOL
} ms_field_type;

typedef struct ms_log_field {
  const char *key;
  ms_field_type type;
  const char *s;
  int64_t i;
  double d;
} ms_log_field;

#define MS_FSTR(k, v) {(k), MS_FIELD_STR, (v), 0, 0.0}
#define MS_FINT(k, v) {(k), MS_FIELD_INT, NULL, (v), 0.0}
#define MS_FDBL(k, v) {(k), MS_FIELD_DOUBLE, NULL, 0, (v)}
#define MS_FBOOL(k, v) {(k), MS_FIELD_BOOL, NULL, (v) ? 1 : 0, 0.0}

/* printf-style record. Returns 0, or MS_ERR_LIMIT when below the level
 * (nothing done). The message is cut at 64 KiB. */
MS_EXTERN int ms_log(ms_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
MS_EXTERN int ms_logv(ms_client *c, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* With key/value fields. */
MS_EXTERN int ms_log_fields(ms_client *c, int level, const ms_log_field *f,
                            size_t n, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* With a message as is (no formatting) and fields as a MessagePack map
 * (NULL/0 = none, at most 256 KiB: MS_ERR_TOO_BIG; not one map:
 * MS_ERR_INVALID_ARG). A record that cannot be shipped (too large for the
 * hub once encoded) is dropped and counted like one pushed out of the
 * ring. */
MS_EXTERN int ms_log_raw(ms_client *c, int level, const char *message,
                         size_t message_len, const uint8_t *fields_mp,
                         size_t fields_len);

#define ms_debug(c, ...) ms_log((c), MS_LEVEL_DEBUG, __VA_ARGS__)
#define ms_info(c, ...) ms_log((c), MS_LEVEL_INFO, __VA_ARGS__)
#define ms_warn(c, ...) ms_log((c), MS_LEVEL_WARN, __VA_ARGS__)
#define ms_error(c, ...) ms_log((c), MS_LEVEL_ERROR, __VA_ARGS__)

/* Records waiting to be shipped, and records dropped so far. */
MS_EXTERN size_t ms_log_queued(const ms_client *c);
MS_EXTERN uint64_t ms_log_dropped(const ms_client *c);

/* Shipping a record hands it to the connection, not to the hub. To know
 * the hub has every record shipped so far, ask it: ms_log_sync() sends a
 * PING behind them (the hub answers in order) and returns 0 (or
 * MS_ERR_STATE when not connected, MS_ERR_NOMEM); ms_log_sync_state()
 * then says 1 (confirmed: also at once when nothing was shipped
 * unconfirmed, and always for a client that never logged), 0 (waiting), MS_ERR_CLOSED (the connection ended first:
 * its records may not have reached the hub) or MS_ERR_STATE (none
 * asked). ms_log_unconfirmed_lost() counts the records shipped on
 * connections that ended before the hub confirmed them: they may or may
 * not have arrived; ms_log_unconfirmed() the records shipped on this
 * connection not confirmed yet. The drivers' *_client_flush() wait for
 * the confirmation. */
MS_EXTERN int ms_log_sync(ms_client *c);
MS_EXTERN int ms_log_sync_state(const ms_client *c);
MS_EXTERN uint64_t ms_log_unconfirmed_lost(const ms_client *c);
MS_EXTERN uint64_t ms_log_unconfirmed(const ms_client *c);

/* ---- Subscriptions ----------------------------------------------------- */

typedef enum ms_record_kind {
  MS_RECORD_LOG = 0,   /* a log record */
  MS_RECORD_UP,        /* presence: a service came up */
  MS_RECORD_DOWN,      /* presence: a service went down */
  MS_RECORD_LIVE,      /* marker: history done, live from here */
  MS_RECORD_GAP        /* marker: `missed` records were lost */
} ms_record_kind;

typedef struct ms_record {
  ms_record_kind kind;
  uint64_t sub_id;
  uint64_t seq;
  int64_t ts_us;
  int64_t level;
  ms_str service;
  ms_str message;
  const msgpack_object *fields; /* fields, or presence detail */
  uint64_t missed;              /* GAP */
  const char *hub_id;
} ms_record;

typedef void (*ms_record_fn)(ms_client *c, const ms_record *rec,
                             void *user_data);

typedef struct ms_subscribe_opts {
  const char *const *services; /* NULL: all */
  size_t n_services;
  int64_t min_level;
  const char *contains;
  uint64_t history; /* the last N kept matching records first */
} ms_subscribe_opts;

/*
 * Follow "logs" or "presence". The subscription lives across reconnects:
 * after a reconnect to the same hub (same hub_id) it resumes after the
 * last seq seen, so nothing is delivered twice and gaps are reported; a
 * different hub_id starts over with `history`. A subscription the hub
 * refuses (ERROR for its sub_id) is dropped, and the refusal is reported
 * through the library's diagnostics (ms_log at error level). Works before
 * the client is connected: SUBSCRIBE goes out once it is. Returns 0 and
 * *sub_id, or MS_ERR_INVALID_ARG / MS_ERR_NOMEM.
 */
MS_EXTERN int ms_client_subscribe(ms_client *c, const char *stream,
                                  const ms_subscribe_opts *opts,
                                  ms_record_fn fn, void *user_data,
                                  uint64_t *sub_id);
MS_EXTERN int ms_client_unsubscribe(ms_client *c, uint64_t sub_id);

#ifdef __cplusplus
}
#endif

#endif
