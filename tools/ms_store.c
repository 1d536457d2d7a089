/* ms_store: the hub's SQLite log store. See ms_store.h. */
#include "ms_store.h"

#include <microstream/ms_codec.h>

#include <msgpack.h>
#include <sqlite3.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Rows removed per retention statement: small enough that one DELETE
 * finishes in milliseconds, so a flush never stalls the loop for long. */
#define RETAIN_CHUNK 5000
/* Chunks per flush when retention is due; the rest waits for the next
 * flush (which runs it again without the one-second wait). */
#define RETAIN_CHUNKS_PER_FLUSH 4

typedef struct pending_rec {
  uint64_t seq;
  int64_t ts_us;
  int64_t level;
  size_t hub_id_len, service_len, message_len, fields_len;
  char data[]; /* hub_id, service, message, fields (no separators) */
} pending_rec;

struct ms_store {
  sqlite3 *db;
  sqlite3_stmt *ins;
  sqlite3_stmt *del_age;
  sqlite3_stmt *del_rows;
  sqlite3_stmt *zone_put; /* records_zones upsert */
  sqlite3_stmt *zone_prev, *zone_next;
  int has_zones;
  ms_store_options opt;
  pending_rec **batch;
  size_t nbatch;
  size_t batch_bytes;
  uint64_t rows, written, dropped, deleted, flush_errors;
  uint64_t unmarked;      /* dropped since the last gap marker row */
  int has_fts;            /* records_fts (trigram index for contains) */
  int64_t fts_upto;       /* ids up to this one are in it */
  int64_t last_retain_ms; /* monotonic; 0: never ran */
  int retain_more;        /* the last pass stopped with rows left to trim */
};

/* The time index of since/until: for each zone of 4096 consecutive ids
 * the smallest and largest ts_us stored in it (marker rows, which every
 * query shows, widen their zone to everything). A query bounded in time
 * skips the zones whose range misses its bounds, reading one small row
 * per zone instead of 4096 records; timestamps need not increase with
 * ids (clients stamp their own). The ranges only ever widen (retention
 * leaves them as they were): a zone may be visited for nothing, never
 * skipped wrongly. Older files get the table filled on open. */
#define ZONE_SHIFT 12 /* as "id >> 12" below */
static const char zones_sql[] =
    "CREATE TABLE records_zones (zone INTEGER PRIMARY KEY,"
    " min_ts INTEGER NOT NULL, max_ts INTEGER NOT NULL);"
    "INSERT INTO records_zones SELECT id >> 12,"
    " CASE WHEN MIN(level) <= 0 THEN -9223372036854775808 ELSE MIN(ts_us) END,"
    " CASE WHEN MIN(level) <= 0 THEN 9223372036854775807 ELSE MAX(ts_us) END"
    " FROM records GROUP BY id >> 12;";

static int setup_zones(sqlite3 *db) {
  sqlite3_stmt *s = NULL;
  int have = 0;
  if (sqlite3_prepare_v2(
          db, "SELECT 1 FROM sqlite_master WHERE name='records_zones'", -1,
          &s, NULL) != SQLITE_OK)
    return 0;
  have = sqlite3_step(s) == SQLITE_ROW;
  sqlite3_finalize(s);
  if (have)
    return 1;
  if (sqlite3_exec(db, "SAVEPOINT zones", NULL, NULL, NULL) != SQLITE_OK)
    return 0;
  if (sqlite3_exec(db, zones_sql, NULL, NULL, NULL) != SQLITE_OK) {
    sqlite3_exec(db, "ROLLBACK TO zones; RELEASE zones", NULL, NULL, NULL);
    return 0;
  }
  return sqlite3_exec(db, "RELEASE zones", NULL, NULL, NULL) == SQLITE_OK;
}

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS records ("
    " id INTEGER PRIMARY KEY,"
    " hub_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " ts_us INTEGER NOT NULL,"
    " level INTEGER NOT NULL,"
    " service TEXT NOT NULL,"
    " message TEXT NOT NULL,"
    " fields TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX IF NOT EXISTS records_ts ON records(ts_us);"
    "CREATE INDEX IF NOT EXISTS records_service_ts ON records(service, ts_us);"
    "CREATE INDEX IF NOT EXISTS records_level_ts ON records(level, ts_us);";

/* A trigram index of the messages' first FTS_CHARS characters: `contains`
 * looks up candidates in it instead of reading every row (longer messages,
 * and rows not indexed yet, are read as they are). Rows are indexed in
 * the background, a bounded number at a time (ms_store_index), never on
 * the write path: indexing costs as much as writing, and a flood must not
 * be slowed by it. records_fts_state.upto: every id up to it is indexed. */
#define FTS_CHARS "1024"
static const char fts_sql[] =
    "CREATE VIRTUAL TABLE records_fts USING fts5(message, content='',"
    " tokenize='trigram');"
    "CREATE TABLE records_fts_state (upto INTEGER NOT NULL);"
    "INSERT INTO records_fts_state VALUES (0);"
    "CREATE TRIGGER IF NOT EXISTS records_fts_del AFTER DELETE ON records"
    " WHEN old.id <= (SELECT upto FROM records_fts_state) BEGIN"
    " INSERT INTO records_fts(records_fts, rowid, message)"
    " VALUES ('delete', old.id, substr(old.message, 1, " FTS_CHARS ")); END;";

/* FTS5 with the trigram tokenizer, if this SQLite has it (Debian's does):
 * created on first open (indexing what is there), used when present. */
static int setup_fts(sqlite3 *db) {
  sqlite3_stmt *s = NULL;
  int have = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT 1 FROM sqlite_master WHERE name='records_fts'",
                         -1, &s, NULL) == SQLITE_OK) {
    have = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
  }
  if (have)
    return 1;
  if (sqlite3_exec(db, "SAVEPOINT fts", NULL, NULL, NULL) != SQLITE_OK)
    return 0;
  if (sqlite3_exec(db, fts_sql, NULL, NULL, NULL) != SQLITE_OK) {
    sqlite3_exec(db, "ROLLBACK TO fts; RELEASE fts", NULL, NULL, NULL);
    return 0;
  }
  return sqlite3_exec(db, "RELEASE fts", NULL, NULL, NULL) == SQLITE_OK;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_us(const ms_store *st) {
  if (st->opt.wallclock_us)
    return st->opt.wallclock_us(st->opt.clock_user_data);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t err_size, const char *fmt, ...) {
  if (!err || err_size == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_size, fmt, ap);
  va_end(ap);
}

void ms_store_options_init(ms_store_options *o) {
  memset(o, 0, sizeof *o);
  o->batch_max = 10000;
  o->batch_max_bytes = (size_t)32 << 20;
}

/* ---- open / close ------------------------------------------------------ */

int ms_store_open(ms_store **pst, const char *path, const ms_store_options *opt,
                  char *err, size_t err_size) {
  *pst = NULL;
  ms_store *st = calloc(1, sizeof *st);
  if (!st) {
    set_err(err, err_size, "out of memory");
    return MS_ERR_NOMEM;
  }
  if (opt)
    st->opt = *opt;
  else
    ms_store_options_init(&st->opt);
  if (st->opt.batch_max == 0)
    st->opt.batch_max = 10000;
  if (st->opt.batch_max_bytes == 0)
    st->opt.batch_max_bytes = (size_t)32 << 20;
  st->batch = calloc(st->opt.batch_max, sizeof *st->batch);
  if (!st->batch) {
    free(st);
    set_err(err, err_size, "out of memory");
    return MS_ERR_NOMEM;
  }

  const char *what = "open";
  int rc = sqlite3_open_v2(path, &st->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  /* A reader (the CLI, a backup) must not make the hub's writes fail, but
   * the loop must not wait long either: a short busy wait, then the flush
   * fails and the batch is retried. */
  sqlite3_busy_timeout(st->db, 50);
  what = "journal mode";
  sqlite3_stmt *s = NULL;
  rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
      const char *mode = (const char *)sqlite3_column_text(s, 0);
      rc = mode && !strcmp(mode, "wal") ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(s);
  }
  if (rc != SQLITE_OK)
    goto fail;
  /* WAL + NORMAL: a crash of the machine may lose the last transactions,
   * never corrupts the file; a crash of the hub loses nothing committed. */
  what = "schema";
  rc = sqlite3_exec(st->db, "PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(st->db, schema_sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  st->has_fts = setup_fts(st->db);
  what = "time index";
  if (!setup_zones(st->db)) {
    rc = SQLITE_ERROR;
    goto fail;
  }
  st->has_zones = 1;
  if (st->has_fts) {
    rc = sqlite3_prepare_v2(st->db, "SELECT upto FROM records_fts_state", -1,
                            &s, NULL);
    if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
      st->fts_upto = sqlite3_column_int64(s, 0);
    else
      st->has_fts = 0;
    sqlite3_finalize(s);
    rc = SQLITE_OK;
  }
  what = "prepare";
  rc = sqlite3_prepare_v3(st->db,
                          "INSERT INTO records (hub_id, seq, ts_us, level, "
                          "service, message, fields) VALUES (?,?,?,?,?,?,?)",
                          -1, SQLITE_PREPARE_PERSISTENT, &st->ins, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v3(
        st->db,
        "DELETE FROM records WHERE id IN (SELECT id FROM records WHERE "
        "ts_us < ?1 ORDER BY ts_us, id LIMIT ?2)",
        -1, SQLITE_PREPARE_PERSISTENT, &st->del_age, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v3(st->db,
                            "DELETE FROM records WHERE id IN (SELECT id FROM "
                            "records ORDER BY ts_us, id LIMIT ?1)",
                            -1, SQLITE_PREPARE_PERSISTENT, &st->del_rows, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v3(
        st->db,
        "INSERT INTO records_zones (zone, min_ts, max_ts) VALUES (?1, ?2, ?3)"
        " ON CONFLICT(zone) DO UPDATE SET min_ts = min(min_ts, ?2),"
        " max_ts = max(max_ts, ?3)",
        -1, SQLITE_PREPARE_PERSISTENT, &st->zone_put, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v3(
        st->db,
        "SELECT zone FROM records_zones WHERE zone BETWEEN ?1 AND ?2 AND"
        " max_ts >= ?3 AND min_ts <= ?4 ORDER BY zone DESC LIMIT 1",
        -1, SQLITE_PREPARE_PERSISTENT, &st->zone_prev, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v3(
        st->db,
        "SELECT zone FROM records_zones WHERE zone BETWEEN ?1 AND ?2 AND"
        " max_ts >= ?3 AND min_ts <= ?4 ORDER BY zone LIMIT 1",
        -1, SQLITE_PREPARE_PERSISTENT, &st->zone_next, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  /* Row count kept in memory: COUNT(*) walks the whole index, too slow to
   * run on every retention pass of a million-row table. */
  what = "count";
  rc = sqlite3_prepare_v2(st->db, "SELECT COUNT(*) FROM records", -1, &s,
                          NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
      st->rows = (uint64_t)sqlite3_column_int64(s, 0);
      rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
  }
  if (rc != SQLITE_OK)
    goto fail;
  *pst = st;
  return 0;

fail:
  set_err(err, err_size, "%s: %s: %s", path, what,
          st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
  sqlite3_finalize(st->ins);
  sqlite3_finalize(st->del_age);
  sqlite3_finalize(st->del_rows);
  sqlite3_finalize(st->zone_put);
  sqlite3_finalize(st->zone_prev);
  sqlite3_finalize(st->zone_next);
  sqlite3_close(st->db);
  free(st->batch);
  free(st);
  return rc == SQLITE_NOMEM ? MS_ERR_NOMEM : MS_ERR_IO;
}

static void batch_clear(ms_store *st) {
  for (size_t i = 0; i < st->nbatch; i++)
    free(st->batch[i]);
  st->nbatch = 0;
  st->batch_bytes = 0;
}

void ms_store_close(ms_store *st) {
  if (!st)
    return;
  ms_store_flush(st);
  /* What a failed last flush left cannot be kept anywhere. */
  st->dropped += st->nbatch;
  batch_clear(st);
  sqlite3_finalize(st->ins);
  sqlite3_finalize(st->del_age);
  sqlite3_finalize(st->del_rows);
  sqlite3_finalize(st->zone_put);
  sqlite3_finalize(st->zone_prev);
  sqlite3_finalize(st->zone_next);
  sqlite3_close(st->db);
  free(st->batch);
  free(st);
}

/* ---- writing ----------------------------------------------------------- */

int ms_store_add(ms_store *st, const char *hub_id, const ms_hub_record *rec) {
  if (!hub_id)
    hub_id = "";
  size_t hl = strlen(hub_id);
  size_t n = hl + rec->service_len + rec->message_len + rec->fields_len;
  if (st->nbatch >= st->opt.batch_max ||
      st->batch_bytes + n > st->opt.batch_max_bytes) {
    st->dropped++;
    st->unmarked++;
    return MS_ERR_LIMIT;
  }
  pending_rec *p = malloc(sizeof *p + n);
  if (!p) {
    st->dropped++;
    st->unmarked++;
    return MS_ERR_NOMEM;
  }
  p->seq = rec->seq;
  p->ts_us = rec->ts_us;
  p->level = rec->level;
  p->hub_id_len = hl;
  p->service_len = rec->service_len;
  p->message_len = rec->message_len;
  p->fields_len = rec->fields_len;
  char *d = p->data;
  memcpy(d, hub_id, hl);
  d += hl;
  if (rec->service_len)
    memcpy(d, rec->service, rec->service_len);
  d += rec->service_len;
  if (rec->message_len)
    memcpy(d, rec->message, rec->message_len);
  d += rec->message_len;
  if (rec->fields_len)
    memcpy(d, rec->fields, rec->fields_len);
  st->batch[st->nbatch++] = p;
  st->batch_bytes += n;
  return 0;
}

size_t ms_store_pending(const ms_store *st) { return st->nbatch; }

size_t ms_store_pending_bytes(const ms_store *st) { return st->batch_bytes; }

/* Records that could not be kept leave a marker row where they would have
 * been, so a reader of the store sees the gap. */
static int insert_marker(ms_store *st) {
  char fields[64];
  int n = snprintf(fields, sizeof fields, "{\"missed\":%llu}",
                   (unsigned long long)st->unmarked);
  sqlite3_stmt *s = st->ins;
  sqlite3_reset(s);
  sqlite3_bind_text(s, 1, "", 0, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, 0);
  sqlite3_bind_int64(s, 3, wall_us(st));
  sqlite3_bind_int64(s, 4, 0);
  sqlite3_bind_text(s, 5, "", 0, SQLITE_STATIC);
  sqlite3_bind_text(s, 6, "gap", 3, SQLITE_STATIC);
  sqlite3_bind_text(s, 7, fields, n, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_DONE ? 0 : MS_ERR_IO;
}

static int insert_one(ms_store *st, const pending_rec *p, msgpack_sbuffer *js) {
  const char *d = p->data;
  const char *service = d + p->hub_id_len;
  const char *message = service + p->service_len;
  const uint8_t *fields = (const uint8_t *)(message + p->message_len);
  js->size = 0;
  /* Fields that do not convert (the hub already checked them, so this is
   * defensive) become an empty object rather than losing the record. */
  if (p->fields_len == 0 ||
      ms_msgpack_bytes_to_json(fields, p->fields_len, js) != 0 ||
      js->size == 0 || js->data[0] != '{') {
    js->size = 0;
    msgpack_sbuffer_write(js, "{}", 2);
  }
  sqlite3_stmt *s = st->ins;
  sqlite3_reset(s);
  sqlite3_bind_text(s, 1, d, (int)p->hub_id_len, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)p->seq);
  sqlite3_bind_int64(s, 3, p->ts_us);
  sqlite3_bind_int64(s, 4, p->level);
  sqlite3_bind_text(s, 5, service, (int)p->service_len, SQLITE_STATIC);
  sqlite3_bind_text(s, 6, message, (int)p->message_len, SQLITE_STATIC);
  sqlite3_bind_text(s, 7, js->data ? js->data : "{}", (int)js->size,
                    SQLITE_STATIC);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc == SQLITE_DONE ? 0 : MS_ERR_IO;
}

/* The time range of the zone rows of one flush are going into. */
typedef struct zone_acc {
  int open;
  int64_t zone, lo, hi;
} zone_acc;

static int zone_write(ms_store *st, zone_acc *z) {
  if (!z->open)
    return 0;
  z->open = 0;
  sqlite3_stmt *s = st->zone_put;
  sqlite3_reset(s);
  sqlite3_bind_int64(s, 1, z->zone);
  sqlite3_bind_int64(s, 2, z->lo);
  sqlite3_bind_int64(s, 3, z->hi);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  return rc == SQLITE_DONE ? 0 : MS_ERR_IO;
}

/* The row just inserted covers [lo, hi] of time. */
static int zone_note(ms_store *st, zone_acc *z, int64_t lo, int64_t hi) {
  int64_t zone = sqlite3_last_insert_rowid(st->db) >> ZONE_SHIFT;
  if (z->open && z->zone == zone) {
    if (lo < z->lo)
      z->lo = lo;
    if (hi > z->hi)
      z->hi = hi;
    return 0;
  }
  int rv = zone_write(st, z);
  z->open = 1;
  z->zone = zone;
  z->lo = lo;
  z->hi = hi;
  return rv;
}

/* One chunk of retention. Returns the rows removed, or -1 on error. */
static int64_t retain_chunk(ms_store *st) {
  int64_t removed = 0;
  if (st->opt.max_age_s > 0) {
    int64_t cutoff = wall_us(st) - st->opt.max_age_s * 1000000;
    sqlite3_bind_int64(st->del_age, 1, cutoff);
    sqlite3_bind_int64(st->del_age, 2, RETAIN_CHUNK);
    int rc = sqlite3_step(st->del_age);
    sqlite3_reset(st->del_age);
    if (rc != SQLITE_DONE)
      return -1;
    removed += sqlite3_changes(st->db);
  }
  st->rows = st->rows > (uint64_t)removed ? st->rows - (uint64_t)removed : 0;
  if (st->opt.max_rows > 0 && removed < RETAIN_CHUNK &&
      st->rows > (uint64_t)st->opt.max_rows) {
    uint64_t excess = st->rows - (uint64_t)st->opt.max_rows;
    int64_t n = RETAIN_CHUNK - removed;
    if (excess < (uint64_t)n)
      n = (int64_t)excess;
    sqlite3_bind_int64(st->del_rows, 1, n);
    int rc = sqlite3_step(st->del_rows);
    sqlite3_reset(st->del_rows);
    if (rc != SQLITE_DONE)
      return -1;
    int64_t c = sqlite3_changes(st->db);
    removed += c;
    st->rows = st->rows > (uint64_t)c ? st->rows - (uint64_t)c : 0;
  }
  st->deleted += (uint64_t)removed;
  return removed;
}

/* Zones wholly below the oldest id left describe nothing any more. */
static int retain_zones(ms_store *st) {
  return sqlite3_exec(st->db,
                      "DELETE FROM records_zones WHERE zone < coalesce("
                      "(SELECT MIN(id) FROM records) >> 12,"
                      " 9223372036854775807)",
                      NULL, NULL, NULL) == SQLITE_OK
             ? 0
             : MS_ERR_IO;
}

/* Up to max_chunks chunks; sets retain_more if a chunk came back full. */
static int retain(ms_store *st, int max_chunks) {
  st->retain_more = 0;
  int64_t total = 0;
  for (int i = 0; max_chunks <= 0 || i < max_chunks; i++) {
    int64_t n = retain_chunk(st);
    if (n < 0)
      return MS_ERR_IO;
    total += n;
    if (n < RETAIN_CHUNK)
      return total ? retain_zones(st) : 0;
  }
  st->retain_more = 1;
  return retain_zones(st);
}

int ms_store_retain(ms_store *st) {
  st->last_retain_ms = mono_ms();
  return retain(st, 0);
}

void ms_store_set_retention(ms_store *st, int64_t max_age_s,
                            int64_t max_rows) {
  st->opt.max_age_s = max_age_s > 0 ? max_age_s : 0;
  st->opt.max_rows = max_rows > 0 ? max_rows : 0;
  st->last_retain_ms = 0; /* the next flush applies it */
}

int ms_store_flush(ms_store *st) {
  int rv = 0;
  if (st->nbatch > 0 || st->unmarked > 0) {
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
        SQLITE_OK) {
      st->flush_errors++;
      return MS_ERR_IO;
    }
    msgpack_sbuffer js;
    msgpack_sbuffer_init(&js);
    /* The marker goes after the batch: the records it stands for were
     * dropped because this batch was full, so they came after it. */
    int marked = st->unmarked > 0;
    zone_acc z = {0, 0, 0, 0};
    for (size_t i = 0; i < st->nbatch && rv == 0; i++) {
      rv = insert_one(st, st->batch[i], &js);
      if (rv == 0)
        rv = zone_note(st, &z, st->batch[i]->ts_us, st->batch[i]->ts_us);
    }
    if (marked && rv == 0)
      rv = insert_marker(st);
    if (marked && rv == 0)
      rv = zone_note(st, &z, INT64_MIN, INT64_MAX); /* shown always */
    if (rv == 0)
      rv = zone_write(st, &z);
    msgpack_sbuffer_destroy(&js);
    if (rv == 0 &&
        sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
      rv = MS_ERR_IO;
    if (rv != 0) {
      /* Keep the batch: the next flush retries it whole. */
      sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
      st->flush_errors++;
      return rv;
    }
    st->written += st->nbatch;
    st->rows += st->nbatch + (size_t)marked;
    if (marked)
      st->unmarked = 0;
    batch_clear(st);
  }
  if (st->opt.max_age_s > 0 || st->opt.max_rows > 0) {
    int64_t now = mono_ms();
    if (st->retain_more || st->last_retain_ms == 0 ||
        now - st->last_retain_ms >= 1000) {
      st->last_retain_ms = now;
      rv = retain(st, RETAIN_CHUNKS_PER_FLUSH);
    }
  }
  return rv;
}

int ms_store_index(ms_store *st, int rows) {
  if (!st->has_fts || rows <= 0)
    return 0;
  if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return MS_ERR_IO;
  sqlite3_stmt *s = NULL;
  int64_t upto = st->fts_upto;
  int rc = sqlite3_prepare_v2(
      st->db,
      "INSERT INTO records_fts(rowid, message) SELECT id, substr(message, 1, "
      FTS_CHARS ") FROM records WHERE id > ?1 ORDER BY id LIMIT ?2",
      -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(s, 1, upto);
    sqlite3_bind_int64(s, 2, rows);
    rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(s);
  s = NULL;
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(
        st->db,
        "UPDATE records_fts_state SET upto = (SELECT COALESCE(MAX(id), ?1) "
        "FROM (SELECT id FROM records WHERE id > ?1 ORDER BY id LIMIT ?2))"
        " RETURNING upto",
        -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(s, 1, upto);
    sqlite3_bind_int64(s, 2, rows);
    if (sqlite3_step(s) == SQLITE_ROW)
      upto = sqlite3_column_int64(s, 0);
    else
      rc = SQLITE_ERROR;
  }
  sqlite3_finalize(s);
  if (rc == SQLITE_OK &&
      sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) {
    st->fts_upto = upto;
    return 0;
  }
  sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
  return MS_ERR_IO;
}

void ms_store_get_stats(const ms_store *st, ms_store_stats *s) {
  s->rows = st->rows;
  s->written = st->written;
  s->dropped = st->dropped;
  s->deleted = st->deleted;
  s->flush_errors = st->flush_errors;
  s->pending = st->nbatch;
}

/* ---- query parameters -------------------------------------------------- */

void ms_store_query_init(ms_store_query *q) { memset(q, 0, sizeof *q); }

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decodes s[0..len) into out; returns the decoded length or -1. */
static long pct_decode(const char *s, size_t len, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '+') {
      out[o++] = ' ';
    } else if (s[i] == '%') {
      if (i + 2 >= len)
        return -1;
      int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
      if (h < 0 || l < 0)
        return -1;
      out[o++] = (char)(h * 16 + l);
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  return (long)o;
}

static int parse_int(const char *s, size_t len, int64_t *out) {
  size_t i = 0;
  int neg = 0;
  if (len > 0 && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    i = 1;
  }
  if (i == len)
    return -1;
  uint64_t v = 0;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > ((uint64_t)INT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = neg ? -(int64_t)v : (int64_t)v;
  return 0;
}

/* Fixed-width decimal field of n digits at s[*i]. */
static int digits(const char *s, size_t len, size_t *i, int n, int *out) {
  int v = 0;
  for (int k = 0; k < n; k++) {
    if (*i >= len || s[*i] < '0' || s[*i] > '9')
      return -1;
    v = v * 10 + (s[*i] - '0');
    (*i)++;
  }
  *out = v;
  return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m) {
  static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
    return 29;
  return dm[m - 1];
}

int ms_store_parse_time(const char *s, size_t len, int64_t *out_us) {
  size_t i = 0;
  int all_digits = len > 0;
  for (size_t k = 0; k < len; k++)
    if (!((s[k] >= '0' && s[k] <= '9') || (k == 0 && s[k] == '-' && len > 1)))
      all_digits = 0;
  if (all_digits)
    return parse_int(s, len, out_us) == 0 ? 0 : MS_ERR_INVALID_ARG;

  int y, mo, d, h = 0, mi = 0, sec = 0;
  int64_t frac_us = 0, off_s = 0;
  if (digits(s, len, &i, 4, &y) || i >= len || s[i++] != '-' ||
      digits(s, len, &i, 2, &mo) || i >= len || s[i++] != '-' ||
      digits(s, len, &i, 2, &d))
    return MS_ERR_INVALID_ARG;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
    return MS_ERR_INVALID_ARG;
  if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
    i++;
    if (digits(s, len, &i, 2, &h) || i >= len || s[i++] != ':' ||
        digits(s, len, &i, 2, &mi))
      return MS_ERR_INVALID_ARG;
    if (i < len && s[i] == ':') {
      i++;
      if (digits(s, len, &i, 2, &sec))
        return MS_ERR_INVALID_ARG;
      if (i < len && (s[i] == '.' || s[i] == ',')) {
        i++;
        int nd = 0;
        int64_t scale = 100000;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
          if (nd < 6) {
            frac_us += (s[i] - '0') * scale;
            scale /= 10;
          }
          nd++;
          i++;
        }
        if (nd == 0 || nd > 9)
          return MS_ERR_INVALID_ARG;
      }
    }
    if (h > 23 || mi > 59 || sec > 60)
      return MS_ERR_INVALID_ARG;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
      i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
      int sign = s[i++] == '-' ? -1 : 1;
      int oh, om;
      if (digits(s, len, &i, 2, &oh))
        return MS_ERR_INVALID_ARG;
      if (i < len && s[i] == ':')
        i++;
      if (digits(s, len, &i, 2, &om) || oh > 23 || om > 59)
        return MS_ERR_INVALID_ARG;
      off_s = sign * (oh * 3600 + om * 60);
    }
  }
  if (i != len)
    return MS_ERR_INVALID_ARG;
  int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
                 off_s;
  *out_us = secs * 1000000 + frac_us;
  return 0;
}

static int parse_level_value(const char *v, size_t n, int64_t *out) {
  static const struct {
    const char *name;
    int64_t level;
  } names[] = {{"debug", MS_LEVEL_DEBUG},
               {"info", MS_LEVEL_INFO},
               {"warn", MS_LEVEL_WARN},
               {"error", MS_LEVEL_ERROR}};
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
    if (strlen(names[k].name) == n && !memcmp(names[k].name, v, n)) {
      *out = names[k].level;
      return 0;
    }
  return parse_int(v, n, out);
}

static int name_is(const char *name, size_t n, const char *lit) {
  return strlen(lit) == n && !memcmp(name, lit, n);
}

int ms_store_query_parse(ms_store_query *q, const char *qs, size_t len,
                         char *scratch, char *err, size_t err_size) {
  ms_store_query_init(q);
  size_t o = 0;
  size_t i = 0;
  while (i < len) {
    size_t end = i;
    while (end < len && qs[end] != '&')
      end++;
    size_t eq = i;
    while (eq < end && qs[eq] != '=')
      eq++;
    char *name = scratch + o;
    long nl = pct_decode(qs + i, eq - i, name);
    if (nl < 0) {
      set_err(err, err_size, "bad percent-encoding in a parameter name");
      return MS_ERR_INVALID_ARG;
    }
    /* The name needs no NUL (compared by length): with one NUL per value
     * the output never exceeds len + 1. */
    o += (size_t)nl;
    char *val = scratch + o;
    long vl = 0;
    if (eq < end) {
      vl = pct_decode(qs + eq + 1, end - eq - 1, val);
      if (vl < 0) {
        set_err(err, err_size, "bad percent-encoding in '%.*s'", (int)nl,
                name);
        return MS_ERR_INVALID_ARG;
      }
    }
    o += (size_t)vl;
    scratch[o++] = '\0';
    i = end + 1;
    size_t n = (size_t)nl, v = (size_t)vl;
    static const char *const known[] = {"service", "services", "min_level",
                                        "contains", "since", "until",
                                        "limit", "after", "before"};
    int is_known = n == 0; /* empty pairs ("a=1&&b=2") are nothing */
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
      is_known |= name_is(name, n, known[k]);
    if (!is_known) {
      set_err(err, err_size,
              "unknown parameter '%.*s' (service, services, min_level, "
              "contains, since, until, after, before, limit)",
              (int)(n > 40 ? 40 : n), name);
      return MS_ERR_INVALID_ARG;
    }
    /* An empty value means "no filter": forms send every field. */
    if (v == 0)
      continue;
    if (name_is(name, n, "service") || name_is(name, n, "services")) {
      /* services=a,b,c; service= may repeat. */
      size_t a = 0;
      while (a <= v) {
        size_t b = a;
        while (b < v && (name_is(name, n, "service") || val[b] != ','))
          b++;
        if (b > a) {
          if (q->nservices == MS_STORE_MAX_SERVICES) {
            set_err(err, err_size, "at most %d services",
                    MS_STORE_MAX_SERVICES);
            return MS_ERR_INVALID_ARG;
          }
          q->services[q->nservices] = val + a;
          q->service_lens[q->nservices++] = b - a;
        }
        a = b + 1;
      }
    } else if (name_is(name, n, "after") || name_is(name, n, "before")) {
      int64_t id;
      if (parse_int(val, v, &id) != 0 || id < 0) {
        set_err(err, err_size,
                "bad %.*s: a record id (a non-negative integer) expected",
                (int)n, name);
        return MS_ERR_INVALID_ARG;
      }
      if (name[0] == 'a') {
        q->has_after = 1;
        q->after_id = id;
      } else {
        q->has_before = 1;
        q->before_id = id;
      }
      if (q->has_after && q->has_before) {
        set_err(err, err_size, "after and before cannot be combined");
        return MS_ERR_INVALID_ARG;
      }
    } else if (name_is(name, n, "min_level")) {
      if (parse_level_value(val, v, &q->min_level) != 0) {
        set_err(err, err_size, "bad min_level");
        return MS_ERR_INVALID_ARG;
      }
      q->has_min_level = 1;
    } else if (name_is(name, n, "contains")) {
      q->contains = val;
      q->contains_len = v;
    } else if (name_is(name, n, "since")) {
      if (ms_store_parse_time(val, v, &q->since_us) != 0) {
        set_err(err, err_size,
                "bad since: microseconds or ISO 8601 time expected");
        return MS_ERR_INVALID_ARG;
      }
      q->has_since = 1;
    } else if (name_is(name, n, "until")) {
      if (ms_store_parse_time(val, v, &q->until_us) != 0) {
        set_err(err, err_size,
                "bad until: microseconds or ISO 8601 time expected");
        return MS_ERR_INVALID_ARG;
      }
      q->has_until = 1;
    } else if (name_is(name, n, "limit")) {
      int64_t lim;
      if (parse_int(val, v, &lim) != 0 || lim < 1) {
        set_err(err, err_size, "bad limit: a positive integer expected");
        return MS_ERR_INVALID_ARG;
      }
      q->limit = lim > MS_STORE_MAX_LIMIT ? MS_STORE_MAX_LIMIT : (size_t)lim;
    }
  }
  return 0;
}

/* ---- JSON output ------------------------------------------------------- */

static int buf_reserve(ms_buf *b, size_t extra) {
  if (!b->mem)
    b->mem = ms_default_allocator();
  if (b->cap - b->len > extra)
    return 0;
  size_t need = b->len + extra + 1;
  if (need < extra)
    return MS_ERR_NOMEM;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > SIZE_MAX / 2)
      return MS_ERR_NOMEM;
    cap *= 2;
  }
  char *p = b->mem->realloc(b->data, cap, b->mem->user_data);
  if (!p)
    return MS_ERR_NOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

static int buf_add(ms_buf *b, const char *s, size_t n) {
  if (buf_reserve(b, n))
    return MS_ERR_NOMEM;
  if (n)
    memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static int buf_str(ms_buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

static int buf_int(ms_buf *b, long long v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%lld", v);
  return buf_add(b, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
    min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  unsigned cp = c & (0x3f >> (len - 1));
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[k] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

/* A JSON string. The table may hold bytes that are not UTF-8 (it is a file
 * anyone can write); they become U+FFFD so the answer stays valid JSON. */
static int buf_json_str(ms_buf *b, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  if (buf_add(b, "\"", 1))
    return MS_ERR_NOMEM;
  size_t i = 0;
  while (i < n) {
    size_t run = i;
    while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' &&
           u[run] != '\\')
      run++;
    if (run > i && buf_add(b, s + i, run - i))
      return MS_ERR_NOMEM;
    i = run;
    if (i >= n)
      break;
    unsigned c = u[i];
    char esc[8];
    int rv;
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      rv = buf_add(b, esc, 2);
      i++;
    } else if (c < 0x20) {
      switch (c) {
      case '\n': rv = buf_add(b, "\\n", 2); break;
      case '\r': rv = buf_add(b, "\\r", 2); break;
      case '\t': rv = buf_add(b, "\\t", 2); break;
      default:
        snprintf(esc, sizeof esc, "\\u%04x", c);
        rv = buf_add(b, esc, 6);
      }
      i++;
    } else {
      size_t l = utf8_seq(u + i, n - i);
      if (l == 0) {
        rv = buf_add(b, "\xef\xbf\xbd", 3);
        i++;
      } else {
        rv = buf_add(b, s + i, l);
        i += l;
      }
    }
    if (rv)
      return MS_ERR_NOMEM;
  }
  return buf_add(b, "\"", 1);
}

static int buf_time(ms_buf *b, int64_t ts_us) {
  int64_t secs = ts_us / 1000000, rem = ts_us % 1000000;
  if (rem < 0) {
    rem += 1000000;
    secs--;
  }
  time_t t = (time_t)secs;
  struct tm tm;
  if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
    return buf_str(b, "null");
  char tmp[40];
  int n = snprintf(tmp, sizeof tmp, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                   tm.tm_min, tm.tm_sec, (int)(rem / 1000));
  return buf_add(b, tmp, (size_t)n);
}

/* ---- query ------------------------------------------------------------- */

/* Rows (ids) one step examines: a few milliseconds of work at most, so a
 * query over the whole table is spread over many loop turns. */
#define SCAN_WINDOW 4096

enum { PH_FIND = 0, PH_EMIT = 1, PH_DONE = 2 };

struct ms_store_scan {
  ms_store *st;
  ms_store_query q;
  char *strings;          /* copies of q's strings */
  sqlite3_stmt *find;     /* ids only, newest first (finding the start) */
  sqlite3_stmt *emit;     /* rows, oldest first */
  int phase;
  int backward;           /* no cursor or before: the newest `limit` */
  int64_t lo_id, hi_id;   /* the ids the answer may come from */
  int64_t pos;            /* FIND: next window ends here; EMIT: after it */
  size_t want;            /* FIND: matches still to find */
  size_t limit, count;
  int exhausted;          /* FIND reached lo_id: nothing older */
  int64_t start_id;       /* EMIT starts here (backward) */
  int64_t last_id;        /* last row emitted or passed over (forward) */
  int started;            /* the answer's head is written */
};

/* The WHERE clause of both statements: an id window, then the filter
 * (marker rows pass whatever the filter says). Values are bound. The unary
 * + keeps the planner on the id range: an index on service or time would
 * make each window read every row of that service. */
static int build_sql(const ms_store_scan *sc, int ids_only, int desc,
                     char *sql, size_t size) {
  const ms_store_query *q = &sc->q;
  size_t sl = 0;
#define SQL_ADD(lit)                                  \
  do {                                                \
    size_t l_ = strlen(lit);                          \
    if (sl + l_ >= size)                              \
      return MS_ERR_INTERNAL;                         \
    memcpy(sql + sl, lit, l_);                        \
    sl += l_;                                         \
  } while (0)
  SQL_ADD(ids_only ? "SELECT id FROM records"
                   : "SELECT id, hub_id, seq, ts_us, level, service, "
                     "message, fields FROM records");
  SQL_ADD(" WHERE id >= ?1 AND id <= ?2 AND (level = 0 OR (1");
  if (q->nservices > 0) {
    SQL_ADD(" AND +service IN (?3");
    for (size_t k = 1; k < q->nservices; k++)
      SQL_ADD(",?3");
    SQL_ADD(")");
  }
  if (q->has_min_level)
    SQL_ADD(" AND +level >= ?4");
  if (q->contains && q->contains_len > 0) {
    /* ASCII case-insensitive substring, exactly; the trigram index (which
     * folds case too) narrows the rows to look at when the text is long
     * enough to have trigrams. */
    SQL_ADD(" AND instr(lower(message), lower(?5)) > 0");
    if (sc->st->has_fts && q->contains_len >= 3)
      SQL_ADD(" AND (id IN (SELECT rowid FROM records_fts WHERE records_fts"
              " MATCH ?6 AND rowid >= ?1 AND rowid <= ?2) OR id > ?100 OR"
              " length(message) > " FTS_CHARS ")");
  }
  if (q->has_since)
    SQL_ADD(" AND +ts_us >= ?7");
  if (q->has_until)
    SQL_ADD(" AND +ts_us <= ?8");
  SQL_ADD(desc ? ")) ORDER BY id DESC" : ")) ORDER BY id");
#undef SQL_ADD
  sql[sl] = '\0';
  return 0;
}

/* Numbered parameters: ?3 repeats would bind one value, so services are
 * bound by position after the fixed ones. */
static int prepare(ms_store_scan *sc, int ids_only, int desc,
                   sqlite3_stmt **out) {
  char sql[2048];
  int rv = build_sql(sc, ids_only, desc, sql, sizeof sql);
  if (rv)
    return rv;
  /* Give each service its own parameter number: ?3 ... */
  char sql2[4096];
  size_t o = 0;
  int next = 9;
  for (const char *p = sql; *p; p++) {
    if (p[0] == '?' && p[1] == '3' && (p[2] < '0' || p[2] > '9')) {
      o += (size_t)snprintf(sql2 + o, sizeof sql2 - o, "?%d", next++);
      p++;
    } else if (o + 1 < sizeof sql2) {
      sql2[o++] = *p;
    }
  }
  sql2[o] = '\0';
  if (sqlite3_prepare_v2(sc->st->db, sql2, -1, out, NULL) != SQLITE_OK)
    return MS_ERR_IO;
  const ms_store_query *q = &sc->q;
  for (size_t k = 0; k < q->nservices; k++)
    sqlite3_bind_text(*out, 9 + (int)k, q->services[k],
                      (int)q->service_lens[k], SQLITE_STATIC);
  if (q->has_min_level)
    sqlite3_bind_int64(*out, 4, q->min_level);
  if (q->contains && q->contains_len > 0) {
    sqlite3_bind_text(*out, 5, q->contains, (int)q->contains_len,
                      SQLITE_STATIC);
    if (sc->st->has_fts && q->contains_len >= 3) {
      /* One FTS5 phrase: the text in double quotes, quotes doubled. */
      char *ph = sc->strings + sc->q.contains_len + 1;
      size_t n = 0;
      ph[n++] = '"';
      for (size_t i = 0; i < q->contains_len; i++) {
        if (q->contains[i] == '"')
          ph[n++] = '"';
        ph[n++] = q->contains[i];
      }
      ph[n++] = '"';
      sqlite3_bind_text(*out, 6, ph, (int)n, SQLITE_STATIC);
      sqlite3_bind_int64(*out, 100, sc->st->fts_upto); /* not indexed yet */
    }
  }
  if (q->has_since)
    sqlite3_bind_int64(*out, 7, q->since_us);
  if (q->has_until)
    sqlite3_bind_int64(*out, 8, q->until_us);
  return 0;
}

static int id_bound(ms_store *st, const char *sql, int64_t *out) {
  sqlite3_stmt *s = NULL;
  if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
    return MS_ERR_IO;
  int rc = sqlite3_step(s);
  *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
  sqlite3_finalize(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : MS_ERR_IO;
}

void ms_store_scan_free(ms_store_scan *sc) {
  if (!sc)
    return;
  sqlite3_finalize(sc->find);
  sqlite3_finalize(sc->emit);
  free(sc->strings);
  free(sc);
}

int ms_store_scan_new(ms_store *st, const ms_store_query *q,
                      ms_store_scan **out) {
  *out = NULL;
  ms_store_scan *sc = calloc(1, sizeof *sc);
  if (!sc)
    return MS_ERR_NOMEM;
  sc->st = st;
  sc->q = *q;
  /* Copies: the contains text, room for its FTS phrase, the services. */
  size_t need = 2 * q->contains_len + 4;
  for (size_t k = 0; k < q->nservices; k++)
    need += q->service_lens[k] + 1;
  sc->strings = malloc(q->contains_len + 1 + need);
  if (!sc->strings) {
    free(sc);
    return MS_ERR_NOMEM;
  }
  char *w = sc->strings;
  if (q->contains && q->contains_len)
    memcpy(w, q->contains, q->contains_len);
  sc->q.contains = q->contains ? w : NULL;
  w += q->contains_len + 1 + 2 * q->contains_len + 4;
  for (size_t k = 0; k < q->nservices; k++) {
    memcpy(w, q->services[k], q->service_lens[k]);
    sc->q.services[k] = w;
    w += q->service_lens[k] + 1;
  }
  sc->limit = q->limit == 0 ? MS_STORE_DEFAULT_LIMIT : q->limit;
  if (sc->limit > MS_STORE_MAX_LIMIT)
    sc->limit = MS_STORE_MAX_LIMIT;
  /* The answer covers the rows there are now: later ones wait for the
   * next page. */
  int rv = id_bound(st, "SELECT MIN(id) FROM records", &sc->lo_id);
  if (rv == 0)
    rv = id_bound(st, "SELECT MAX(id) FROM records", &sc->hi_id);
  if (rv == 0 && q->has_after && q->after_id + 1 > sc->lo_id)
    sc->lo_id = q->after_id + 1;
  if (rv == 0 && q->has_before && q->before_id - 1 < sc->hi_id)
    sc->hi_id = q->before_id - 1;
  if (rv == 0)
    rv = prepare(sc, 1, 1, &sc->find);
  if (rv == 0)
    rv = prepare(sc, 0, 0, &sc->emit);
  if (rv) {
    ms_store_scan_free(sc);
    return rv;
  }
  sc->backward = !q->has_after;
  sc->last_id = q->has_after ? q->after_id : 0;
  if (sc->lo_id > sc->hi_id || sc->hi_id <= 0) {
    sc->phase = PH_DONE; /* nothing to look at */
    sc->exhausted = 1;
  } else if (sc->backward) {
    sc->phase = PH_FIND;
    sc->pos = sc->hi_id;
    sc->want = sc->limit;
  } else {
    sc->phase = PH_EMIT;
    sc->start_id = sc->lo_id;
    sc->pos = sc->lo_id;
  }
  *out = sc;
  return 0;
}

static int emit_row(ms_buf *out, sqlite3_stmt *s, size_t count) {
  int rv = 0;
  if (count > 0)
    rv = buf_add(out, ",", 1);
  int64_t ts = sqlite3_column_int64(s, 3);
  const char *hub = (const char *)sqlite3_column_text(s, 1);
  size_t hub_len = (size_t)sqlite3_column_bytes(s, 1);
  if (rv == 0) rv = buf_str(out, "{\"id\":");
  if (rv == 0) rv = buf_int(out, sqlite3_column_int64(s, 0));
  if (rv == 0) rv = buf_str(out, ",\"seq\":");
  if (rv == 0) rv = buf_int(out, sqlite3_column_int64(s, 2));
  if (rv == 0) rv = buf_str(out, ",\"hub_id\":");
  if (rv == 0) rv = buf_json_str(out, hub ? hub : "", hub ? hub_len : 0);
  if (rv == 0) rv = buf_str(out, ",\"ts_us\":");
  if (rv == 0) rv = buf_int(out, ts);
  if (rv == 0) rv = buf_str(out, ",\"time\":");
  if (rv == 0) rv = buf_time(out, ts);
  if (rv == 0) rv = buf_str(out, ",\"level\":");
  if (rv == 0) rv = buf_int(out, sqlite3_column_int64(s, 4));
  const char *svc = (const char *)sqlite3_column_text(s, 5);
  size_t svc_len = (size_t)sqlite3_column_bytes(s, 5);
  if (rv == 0) rv = buf_str(out, ",\"service\":");
  if (rv == 0) rv = buf_json_str(out, svc ? svc : "", svc ? svc_len : 0);
  const char *msg = (const char *)sqlite3_column_text(s, 6);
  size_t msg_len = (size_t)sqlite3_column_bytes(s, 6);
  if (rv == 0) rv = buf_str(out, ",\"message\":");
  if (rv == 0) rv = buf_json_str(out, msg ? msg : "", msg ? msg_len : 0);
  /* fields was written by us as JSON text from the converter. */
  const char *f = (const char *)sqlite3_column_text(s, 7);
  size_t f_len = (size_t)sqlite3_column_bytes(s, 7);
  if (rv == 0) rv = buf_str(out, ",\"fields\":");
  if (rv == 0)
    rv = f && f_len > 0 && f[0] == '{' ? buf_add(out, f, f_len)
                                       : buf_str(out, "{}");
  if (rv == 0) rv = buf_add(out, "}", 1);
  return rv;
}

/* since/until: the nearest zone at or below pos (backward), or at or
 * above it (forward), within the answer's ids, whose time range meets the
 * bounds; -1 if there is none. */
static int zone_seek(ms_store_scan *sc, int backward, int64_t *zone) {
  sqlite3_stmt *s = backward ? sc->st->zone_prev : sc->st->zone_next;
  sqlite3_reset(s);
  sqlite3_bind_int64(s, 1, (backward ? sc->lo_id : sc->pos) >> ZONE_SHIFT);
  sqlite3_bind_int64(s, 2, (backward ? sc->pos : sc->hi_id) >> ZONE_SHIFT);
  sqlite3_bind_int64(s, 3, sc->q.has_since ? sc->q.since_us : INT64_MIN);
  sqlite3_bind_int64(s, 4, sc->q.has_until ? sc->q.until_us : INT64_MAX);
  int rc = sqlite3_step(s);
  *zone = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_reset(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : MS_ERR_IO;
}

static int timed(const ms_store_scan *sc) {
  return sc->st->has_zones && (sc->q.has_since || sc->q.has_until);
}

/* FIND: one window back from pos, counting matches. */
static int find_step(ms_store_scan *sc, size_t rows) {
  if (timed(sc)) {
    int64_t z;
    if (zone_seek(sc, 1, &z))
      return MS_ERR_IO;
    if (z < 0) {
      sc->start_id = sc->lo_id; /* fewer than limit: all of them */
      sc->exhausted = 1;
      sc->phase = PH_EMIT;
      sc->pos = sc->start_id;
      return 0;
    }
    int64_t top = ((z + 1) << ZONE_SHIFT) - 1;
    if (top < sc->pos)
      sc->pos = top;
  }
  int64_t hi = sc->pos;
  int64_t lo = hi - (int64_t)rows + 1;
  if (lo < sc->lo_id)
    lo = sc->lo_id;
  sqlite3_stmt *s = sc->find;
  sqlite3_reset(s);
  sqlite3_bind_int64(s, 1, lo);
  sqlite3_bind_int64(s, 2, hi);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (--sc->want == 0) {
      sc->start_id = sqlite3_column_int64(s, 0);
      sc->exhausted = 0;
      break;
    }
  }
  sqlite3_reset(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return MS_ERR_IO;
  if (sc->want > 0) {
    if (lo <= sc->lo_id) {
      sc->start_id = sc->lo_id; /* fewer than limit: all of them */
      sc->exhausted = 1;
    } else {
      sc->pos = lo - 1;
      return 0;
    }
  }
  /* Whether anything older matches is not known: the next page says. */
  sc->phase = PH_EMIT;
  sc->pos = sc->start_id;
  return 0;
}

/* EMIT: one window forward from pos, until limit or `bytes`. */
static int emit_step(ms_store_scan *sc, size_t rows, size_t bytes,
                     ms_buf *out) {
  if (timed(sc)) {
    int64_t z;
    if (zone_seek(sc, 0, &z))
      return MS_ERR_IO;
    if (z < 0) {
      sc->phase = PH_DONE; /* nothing more in time */
      if (!sc->backward) {
        sc->last_id = sc->hi_id;
        sc->exhausted = 1;
      }
      return 0;
    }
    int64_t bottom = z << ZONE_SHIFT;
    if (bottom > sc->pos) {
      sc->pos = bottom;
      if (!sc->backward && bottom - 1 > sc->last_id)
        sc->last_id = bottom - 1; /* passed over */
    }
  }
  int64_t lo = sc->pos;
  int64_t hi = lo + (int64_t)rows - 1;
  if (hi > sc->hi_id)
    hi = sc->hi_id;
  sqlite3_stmt *s = sc->emit;
  sqlite3_reset(s);
  sqlite3_bind_int64(s, 1, lo);
  sqlite3_bind_int64(s, 2, hi);
  int rc, rv = 0;
  int stopped = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(s, 0);
    rv = emit_row(out, s, sc->count);
    if (rv)
      break;
    sc->count++;
    sc->last_id = id;
    sc->pos = id + 1;
    if (sc->count >= sc->limit || out->len >= bytes) {
      stopped = 1;
      break;
    }
  }
  sqlite3_reset(s);
  if (rv)
    return rv;
  if (!stopped && rc != SQLITE_DONE)
    return MS_ERR_IO;
  if (sc->count >= sc->limit) {
    sc->phase = PH_DONE;
    if (!sc->backward)
      sc->exhausted = sc->last_id >= sc->hi_id;
    return 0;
  }
  if (!stopped) {
    sc->pos = hi + 1;
    if (!sc->backward)
      sc->last_id = hi; /* passed over: the next page starts after it */
    if (hi >= sc->hi_id) {
      sc->phase = PH_DONE;
      if (!sc->backward)
        sc->exhausted = 1;
    }
  }
  return 0;
}

static int write_tail(ms_store_scan *sc, ms_buf *out, const char *error) {
  int rv = buf_str(out, "],\"count\":");
  if (rv == 0) rv = buf_int(out, (long long)sc->count);
  if (rv == 0) rv = buf_str(out, ",\"next\":");
  if (rv == 0) {
    if (sc->backward && sc->exhausted) {
      rv = buf_str(out, "null");
    } else if (sc->backward) {
      rv = buf_str(out, "{\"before\":");
      if (rv == 0) rv = buf_int(out, sc->start_id);
      if (rv == 0) rv = buf_str(out, "}");
    } else {
      /* Forward: where to go on from, at the end too (to follow). */
      int64_t after = sc->last_id;
      if (sc->q.has_after && after < sc->q.after_id)
        after = sc->q.after_id;
      rv = buf_str(out, "{\"after\":");
      if (rv == 0) rv = buf_int(out, after);
      if (rv == 0) rv = buf_str(out, "}");
    }
  }
  if (rv == 0 && error) {
    rv = buf_str(out, ",\"error\":");
    if (rv == 0) rv = buf_json_str(out, error, strlen(error));
  }
  if (rv == 0)
    rv = buf_str(out, error ? ",\"complete\":false}" : ",\"complete\":true}");
  return rv;
}

int ms_store_scan_step(ms_store_scan *sc, size_t rows, size_t bytes,
                       ms_buf *out) {
  if (rows == 0)
    rows = SCAN_WINDOW;
  int rv = 0;
  if (!sc->started) {
    rv = buf_str(out, "{\"records\":[");
    if (rv)
      return rv;
    sc->started = 1;
  }
  if (sc->phase == PH_FIND)
    rv = find_step(sc, rows);
  else if (sc->phase == PH_EMIT)
    rv = emit_step(sc, rows, bytes, out);
  if (rv) {
    sc->phase = PH_DONE;
    write_tail(sc, out, rv == MS_ERR_NOMEM ? "out of memory"
                                           : "store query failed");
    return rv;
  }
  if (sc->phase != PH_DONE)
    return 0;
  rv = write_tail(sc, out, NULL);
  return rv ? rv : 1;
}

int ms_store_query_json(ms_store *st, const ms_store_query *q, ms_buf *out) {
  ms_store_scan *sc;
  int rv = ms_store_scan_new(st, q, &sc);
  if (rv)
    return rv;
  while ((rv = ms_store_scan_step(sc, 0, SIZE_MAX, out)) == 0)
    ;
  ms_store_scan_free(sc);
  return rv < 0 ? rv : 0;
}
