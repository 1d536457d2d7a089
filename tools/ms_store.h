/*
 * ms_store: the hub's log store, an embedded SQLite file.
 *
 * The hub hands every kept record to ms_store_add(), which only copies it
 * into a bounded in-memory batch: the routing thread never waits for the
 * disk, and when the batch is full the record is dropped and counted. A
 * timer calls ms_store_flush(), which writes the whole batch in one
 * transaction and applies retention (age and row count) at most once per
 * second, in bounded chunks, so a large backlog of old rows is trimmed over
 * several flushes instead of stalling one.
 *
 * Queries bind every user value as a parameter; the SQL text is made only
 * of fixed fragments (the number of "?" in an IN list is the only thing
 * that varies).
 */
#ifndef MS_STORE_H
#define MS_STORE_H

#include <microstream/ms_hub.h>

#include <stddef.h>
#include <stdint.h>

typedef struct ms_store ms_store;

typedef struct ms_store_options {
  int64_t max_age_s;       /* delete records older than this; 0: no limit */
  int64_t max_rows;        /* keep at most this many; 0: no limit */
  size_t batch_max;        /* records held between flushes (default 10000) */
  size_t batch_max_bytes;  /* bytes held between flushes (default 32 MiB) */
  /* Wall clock in microseconds since the epoch, for retention by age.
   * NULL: the real clock. */
  int64_t (*wallclock_us)(void *user_data);
  void *clock_user_data;
} ms_store_options;

void ms_store_options_init(ms_store_options *o);

/* Opens (creating if needed) the database at `path`. opt may be NULL
 * (defaults). On failure *pst is NULL and, if err is non-NULL, a reason is
 * written there (NUL-terminated). Returns 0, MS_ERR_IO or MS_ERR_NOMEM. */
int ms_store_open(ms_store **pst, const char *path, const ms_store_options *opt,
                  char *err, size_t err_size);
/* Flushes what is pending, then closes. NULL is a no-op. */
void ms_store_close(ms_store *st);

/* Copies rec into the batch. Returns 0, or MS_ERR_LIMIT if the batch is
 * full (the record is dropped and counted), or MS_ERR_NOMEM (also counted
 * as dropped). Never touches the disk. */
int ms_store_add(ms_store *st, const char *hub_id, const ms_hub_record *rec);
/* Records waiting for the next flush. */
size_t ms_store_pending(const ms_store *st);
/* Bytes those records hold. */
size_t ms_store_pending_bytes(const ms_store *st);
/* Writes the batch in one transaction, then runs retention if it has not
 * run in the last second. Returns 0 or MS_ERR_IO (the batch is kept for
 * the next try; new records are dropped once it is full). */
int ms_store_flush(ms_store *st);
/* Adds up to `rows` stored records to the `contains` index (records not
 * indexed yet are searched row by row, so this only makes searches
 * faster). 0 or MS_ERR_IO. */
int ms_store_index(ms_store *st, int rows);
/* Changes the retention limits (as max_age_s, max_rows of the options;
 * 0: no limit) while open; the next flush applies them. */
void ms_store_set_retention(ms_store *st, int64_t max_age_s,
                            int64_t max_rows);
/* Runs retention now, to completion (all chunks). For tests and tools. */
int ms_store_retain(ms_store *st);

typedef struct ms_store_stats {
  uint64_t rows;          /* rows in the table now */
  uint64_t written;       /* rows written since open */
  uint64_t dropped;       /* records dropped because the batch was full */
  uint64_t deleted;       /* rows removed by retention since open */
  uint64_t flush_errors;  /* flushes that failed */
  uint64_t pending;       /* records waiting in the batch */
} ms_store_stats;
void ms_store_get_stats(const ms_store *st, ms_store_stats *s);

#define MS_STORE_MAX_SERVICES 64
#define MS_STORE_DEFAULT_LIMIT 100
#define MS_STORE_MAX_LIMIT 10000

typedef struct ms_store_query {
  /* service = one of these (exact). nservices 0: any. */
  const char *services[MS_STORE_MAX_SERVICES];
  size_t service_lens[MS_STORE_MAX_SERVICES];
  size_t nservices;
  int has_min_level;
  int64_t min_level;
  const char *contains; /* substring of the message, literal; NULL: any */
  size_t contains_len;
  int has_since, has_until;
  int64_t since_us, until_us; /* inclusive bounds on ts_us */
  size_t limit;               /* 0: default (100); capped at 10000 */
  /* Cursors (record ids): only records with id > after_id (the oldest
   * first), or with id < before_id (the newest `limit` of them). */
  int has_after, has_before;
  int64_t after_id, before_id;
} ms_store_query;

void ms_store_query_init(ms_store_query *q);

/* Parses a URL query string (service= (repeatable), services= (comma
 * separated), min_level=, contains=, since=, until=, after=, before=,
 * limit=; percent-decoded, '+' is a space; an empty value is no filter).
 * Decoded strings are written to `scratch`, which needs at least len + 1
 * bytes and must outlive q. An unknown name, a bad value, or both after
 * and before: MS_ERR_INVALID_ARG with a reason in `err`. */
int ms_store_query_parse(ms_store_query *q, const char *qs, size_t len,
                         char *scratch, char *err, size_t err_size);

/* A time bound: microseconds since the epoch (digits, optional '-'), or ISO
 * 8601 "YYYY-MM-DD[THH:MM[:SS[.frac]]][Z|+HH:MM|-HH:MM]" (no zone: UTC).
 * Returns 0 or MS_ERR_INVALID_ARG. */
int ms_store_parse_time(const char *s, size_t len, int64_t *out_us);

/* An answer to a query, produced a bounded amount at a time so that a
 * query over millions of rows never holds the caller (an event loop) for
 * long nor memory for the whole answer. Rows are in id (store) order,
 * oldest first. Without a cursor or with before: the newest `limit`
 * matching records (older than before_id); with after: the oldest `limit`
 * newer than after_id. Records the store could not keep appear as marker
 * rows (level 0, message "gap", fields {"missed": N}) whatever the filter.
 * The answer is the JSON text
 *   {"records":[{"id":..,"seq":..,"hub_id":..,"ts_us":..,"time":..,
 *     "level":..,"service":..,"message":..,"fields":{..}},...],
 *    "count":N,"next":{"after":ID}|{"before":ID}|null,"complete":true}
 * `next` continues in the same direction (null: nothing older). An error
 * midway ends it with "error":"...","complete":false. */
typedef struct ms_store_scan ms_store_scan;
/* Starts a query (q's strings are copied). Returns 0, MS_ERR_IO or
 * MS_ERR_NOMEM. */
int ms_store_scan_new(ms_store *st, const ms_store_query *q,
                      ms_store_scan **out);
/* Examines at most `rows` rows (at least one window) and appends what it
 * produced to out, stopping early once out holds `bytes`. Returns 0 (call
 * again), 1 (the answer is complete), or a negative error (the error tail
 * was appended). */
int ms_store_scan_step(ms_store_scan *sc, size_t rows, size_t bytes,
                       ms_buf *out);
void ms_store_scan_free(ms_store_scan *sc);

/* The whole answer at once (tests and tools; same text as the scan).
 * Returns 0, MS_ERR_IO or MS_ERR_NOMEM. */
int ms_store_query_json(ms_store *st, const ms_store_query *q, ms_buf *out);

#endif
