/* The hub's SQLite log store (tools/ms_store.c): batching, flush, queries
 * with every filter, reopen, retention, batch bound, bound parameters. */
#include "ms_store.h"
#include "ms_test.h"

#include <jansson.h>
#include <msgpack.h>

#include <dirent.h>
#include <sqlite3.h>
#include <unistd.h>

/* 2026-11-23T10:00:00Z */
#define T0 (INT64_C(1795428000) * 1000000)

static char tmpdir[512];
static char dbpath[600];

static int make_tmp(void) {
  const char *base = getenv("TMPDIR");
  if (!base || !*base)
    base = "/tmp";
  snprintf(tmpdir, sizeof tmpdir, "%s/ms_store_XXXXXX", base);
  if (!mkdtemp(tmpdir))
    return -1;
  snprintf(dbpath, sizeof dbpath, "%s/logs.db", tmpdir);
  return 0;
}

static void rm_tmp(void) {
  DIR *d = opendir(tmpdir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
        continue;
      char p[1200];
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(tmpdir);
}

/* Adds one record whose fields are {"k": k}. */
static int add(ms_store *st, uint64_t seq, int64_t ts, int64_t level,
               const char *service, const char *message, int64_t k) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  msgpack_pack_str_with_body(&pk, "k", 1);
  msgpack_pack_int64(&pk, k);
  ms_hub_record r;
  memset(&r, 0, sizeof r);
  r.seq = seq;
  r.ts_us = ts;
  r.level = level;
  r.service = service;
  r.service_len = strlen(service);
  r.message = message;
  r.message_len = strlen(message);
  r.fields = (const uint8_t *)sb.data;
  r.fields_len = sb.size;
  int rv = ms_store_add(st, "hub-1", &r);
  msgpack_sbuffer_destroy(&sb);
  return rv;
}

/* Runs a query given as a URL query string; returns the parsed answer
 * (caller json_decref) or NULL. */
static json_t *query(ms_store *st, const char *qs) {
  ms_store_query q;
  char *scratch = malloc(strlen(qs) + 1);
  char err[128];
  json_t *j = NULL;
  if (ms_store_query_parse(&q, qs, strlen(qs), scratch, err, sizeof err) ==
      0) {
    ms_buf out;
    memset(&out, 0, sizeof out);
    if (ms_store_query_json(st, &q, &out) == 0)
      j = json_loadb(out.data, out.len, 0, NULL);
    ms_buf_free(&out);
  }
  free(scratch);
  return j;
}

static size_t count_of(json_t *j) {
  json_t *c = json_object_get(j, "count");
  json_t *r = json_object_get(j, "records");
  if (!json_is_integer(c) || !json_is_array(r) ||
      (size_t)json_integer_value(c) != json_array_size(r))
    return (size_t)-1;
  return json_array_size(r);
}

static const char *rec_str(json_t *j, size_t i, const char *key) {
  return json_string_value(
      json_object_get(json_array_get(json_object_get(j, "records"), i), key));
}

static long long rec_int(json_t *j, size_t i, const char *key) {
  return json_integer_value(
      json_object_get(json_array_get(json_object_get(j, "records"), i), key));
}

/* The messages of the answer joined by ',' ("" if none). */
static const char *messages(json_t *j) {
  static char buf[1024];
  buf[0] = '\0';
  size_t n = count_of(j);
  if (n == (size_t)-1)
    return "(bad answer)";
  for (size_t i = 0; i < n; i++) {
    if (i)
      strncat(buf, ",", sizeof buf - strlen(buf) - 1);
    const char *m = rec_str(j, i, "message");
    strncat(buf, m ? m : "(null)", sizeof buf - strlen(buf) - 1);
  }
  return buf;
}

static ms_store *open_store(const ms_store_options *o) {
  ms_store *st = NULL;
  char err[256];
  if (ms_store_open(&st, dbpath, o, err, sizeof err) != 0)
    printf("# open: %s\n", err);
  return st;
}

/* Answer of a query, as the joined messages; frees the answer. */
static const char *q_msgs(ms_store *st, const char *qs) {
  json_t *j = query(st, qs);
  const char *m = j ? messages(j) : "(query failed)";
  json_decref(j);
  return m;
}

static void add_flush_query(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  /* Added out of time order: answers are in store (id) order. */
  CHECK_EQ_INT(add(st, 2, T0 + 2000, 30, "api", "second \"quoted\"\n", 7), 0);
  CHECK_EQ_INT(add(st, 1, T0 + 1000, 20, "db", "first", 5), 0);
  CHECK_EQ_INT(add(st, 3, T0 + 3123456, 40, "api", "third", -1), 0);
  CHECK_EQ_INT(ms_store_pending(st), 3);
  /* Nothing reaches the file before a flush. */
  CHECK_EQ_STR(q_msgs(st, ""), "");
  CHECK_EQ_INT(ms_store_flush(st), 0);
  CHECK_EQ_INT(ms_store_pending(st), 0);

  json_t *j = query(st, "");
  CHECK(j);
  CHECK_EQ_INT(count_of(j), 3);
  CHECK_EQ_INT(rec_int(j, 0, "seq"), 2);
  CHECK_EQ_INT(rec_int(j, 1, "seq"), 1);
  CHECK(rec_int(j, 1, "id") > rec_int(j, 0, "id"));
  CHECK_EQ_STR(rec_str(j, 1, "hub_id"), "hub-1");
  CHECK_EQ_INT(rec_int(j, 1, "ts_us"), T0 + 1000);
  CHECK_EQ_STR(rec_str(j, 1, "time"), "2026-11-23T10:00:00.001Z");
  CHECK_EQ_INT(rec_int(j, 1, "level"), 20);
  CHECK_EQ_STR(rec_str(j, 1, "service"), "db");
  CHECK_EQ_STR(rec_str(j, 1, "message"), "first");
  json_t *f = json_object_get(json_array_get(json_object_get(j, "records"), 1),
                              "fields");
  CHECK(json_is_object(f));
  CHECK_EQ_INT(json_object_size(f), 1);
  CHECK_EQ_INT(json_integer_value(json_object_get(f, "k")), 5);
  CHECK_EQ_STR(rec_str(j, 0, "message"), "second \"quoted\"\n");
  CHECK(json_is_true(json_object_get(j, "complete")));
  CHECK(json_is_null(json_object_get(j, "next")));
  CHECK_EQ_STR(rec_str(j, 2, "time"), "2026-11-23T10:00:03.123Z");
  CHECK_EQ_INT(rec_int(j, 2, "level"), 40);
  json_decref(j);

  ms_store_stats s;
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.written, 3);
  CHECK_EQ_INT(s.rows, 3);
  CHECK_EQ_INT(s.dropped, 0);
  ms_store_close(st);
  rm_tmp();
}

/* Five services, levels and messages used by the filter tests. */
static ms_store *filter_fixture(void) {
  ms_store *st = open_store(NULL);
  if (!st)
    return NULL;
  add(st, 1, T0 + 0, 10, "api", "m1 100% done", 0);
  add(st, 2, T0 + 1000000, 20, "db", "m2 100 done", 0);
  add(st, 3, T0 + 2000000, 30, "api", "m3 a_b", 0);
  add(st, 4, T0 + 3000000, 40, "auth", "m4 axb", 0);
  add(st, 5, T0 + 4000000, 20, "db", "m5 Done", 0);
  if (ms_store_flush(st) != 0) {
    ms_store_close(st);
    return NULL;
  }
  return st;
}

static void filter_service(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = filter_fixture();
  CHECK(st);
  CHECK_EQ_STR(q_msgs(st, "service=api"), "m1 100% done,m3 a_b");
  CHECK_EQ_STR(q_msgs(st, "service=db&service=auth"),
               "m2 100 done,m4 axb,m5 Done");
  CHECK_EQ_STR(q_msgs(st, "service=nope"), "");
  /* Exact match, not a prefix. */
  CHECK_EQ_STR(q_msgs(st, "service=ap"), "");
  /* An empty value is no filter (forms send every field). */
  CHECK_EQ_STR(q_msgs(st, "service=&min_level=&limit="),
               "m1 100% done,m2 100 done,m3 a_b,m4 axb,m5 Done");
  ms_store_close(st);
  rm_tmp();
}

static void filter_level_contains(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = filter_fixture();
  CHECK(st);
  CHECK_EQ_STR(q_msgs(st, "min_level=30"), "m3 a_b,m4 axb");
  CHECK_EQ_STR(q_msgs(st, "min_level=warn"), "m3 a_b,m4 axb");
  CHECK_EQ_STR(q_msgs(st, "min_level=20&service=db"), "m2 100 done,m5 Done");
  /* % and _ are literal characters, not LIKE wildcards. */
  CHECK_EQ_STR(q_msgs(st, "contains=%25"), "m1 100% done");
  CHECK_EQ_STR(q_msgs(st, "contains=100%25"), "m1 100% done");
  CHECK_EQ_STR(q_msgs(st, "contains=_"), "m3 a_b");
  CHECK_EQ_STR(q_msgs(st, "contains=a_b"), "m3 a_b");
  /* Case-insensitive (ASCII), with or without the trigram index. */
  CHECK_EQ_STR(q_msgs(st, "contains=done"),
               "m1 100% done,m2 100 done,m5 Done");
  CHECK_EQ_STR(q_msgs(st, "contains=DONE"),
               "m1 100% done,m2 100 done,m5 Done");
  CHECK_EQ_STR(q_msgs(st, "contains=Do"), "m1 100% done,m2 100 done,m5 Done");
  CHECK_EQ_STR(q_msgs(st, "contains=m5+done"), "m5 Done");
  CHECK_EQ_STR(q_msgs(st, "contains=100+done"), "m2 100 done");
  ms_store_close(st);
  rm_tmp();
}

static void filter_time(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = filter_fixture();
  CHECK(st);
  char qs[128];
  snprintf(qs, sizeof qs, "since=%lld", (long long)(T0 + 1000000));
  CHECK_EQ_STR(q_msgs(st, qs), "m2 100 done,m3 a_b,m4 axb,m5 Done");
  snprintf(qs, sizeof qs, "since=%lld&until=%lld", (long long)(T0 + 1000000),
           (long long)(T0 + 2999999));
  CHECK_EQ_STR(q_msgs(st, qs), "m2 100 done,m3 a_b");
  CHECK_EQ_STR(q_msgs(st, "since=2026-11-23T10:00:02Z"),
               "m3 a_b,m4 axb,m5 Done");
  CHECK_EQ_STR(q_msgs(st, "since=2026-11-23T10%3A00%3A01Z&until=2026-11-23T10:"
                          "00:03.000Z"),
               "m2 100 done,m3 a_b,m4 axb");
  /* The same instant with an offset. */
  CHECK_EQ_STR(q_msgs(st, "until=2026-11-23T11:00:00%2B01:00"),
               "m1 100% done");
  CHECK_EQ_STR(q_msgs(st, "until=2026-11-23T09:59:59Z"), "");
  ms_store_close(st);
  rm_tmp();
}

static void limit_newest(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  char m[16];
  for (int i = 0; i < 150; i++) {
    snprintf(m, sizeof m, "r%d", i);
    CHECK_EQ_INT(add(st, (uint64_t)i + 1, T0 + i, 20, "svc", m, i), 0);
  }
  CHECK_EQ_INT(ms_store_flush(st), 0);
  CHECK_EQ_STR(q_msgs(st, "limit=3"), "r147,r148,r149");
  char qs[64];
  snprintf(qs, sizeof qs, "limit=2&until=%lld", (long long)(T0 + 10));
  CHECK_EQ_STR(q_msgs(st, qs), "r9,r10");
  json_t *j = query(st, "");
  CHECK(j);
  /* Default limit 100: the newest hundred. */
  CHECK_EQ_INT(count_of(j), 100);
  CHECK_EQ_STR(rec_str(j, 0, "message"), "r50");
  CHECK_EQ_STR(rec_str(j, 99, "message"), "r149");
  json_decref(j);
  j = query(st, "limit=999999");
  CHECK(j);
  CHECK_EQ_INT(count_of(j), 150);
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

static void reopen_keeps_records(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  CHECK_EQ_INT(add(st, 1, T0, 20, "svc", "kept", 42), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  /* Added but not flushed: close must write it. */
  CHECK_EQ_INT(add(st, 2, T0 + 1, 30, "svc", "kept on close", 43), 0);
  ms_store_close(st);

  st = open_store(NULL);
  CHECK(st);
  ms_store_stats s;
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.rows, 2);
  json_t *j = query(st, "service=svc");
  CHECK(j);
  CHECK_EQ_STR(messages(j), "kept,kept on close");
  CHECK_EQ_INT(rec_int(j, 1, "level"), 30);
  CHECK_EQ_INT(json_integer_value(json_object_get(
                   json_object_get(json_array_get(json_object_get(j, "records"),
                                                  1),
                                   "fields"),
                   "k")),
               43);
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

static void retention_rows(void) {
  CHECK(make_tmp() == 0);
  ms_store_options o;
  ms_store_options_init(&o);
  o.max_rows = 5;
  ms_store *st = open_store(&o);
  CHECK(st);
  char m[16];
  /* Time order differs from insertion order: the oldest by time go. */
  for (int i = 0; i < 12; i++) {
    snprintf(m, sizeof m, "r%d", i);
    int64_t ts = T0 + (i % 2 ? i : 100 + i);
    CHECK_EQ_INT(add(st, (uint64_t)i, ts, 20, "svc", m, i), 0);
  }
  CHECK_EQ_INT(ms_store_flush(st), 0);
  ms_store_stats s;
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.rows, 5);
  CHECK_EQ_INT(s.deleted, 7);
  CHECK_EQ_STR(q_msgs(st, ""), "r2,r4,r6,r8,r10");
  ms_store_close(st);
  rm_tmp();
}

static void retention_rows_chunked(void) {
  CHECK(make_tmp() == 0);
  ms_store_options o;
  ms_store_options_init(&o);
  o.max_rows = 10;
  o.batch_max = 30000;
  ms_store *st = open_store(&o);
  CHECK(st);
  for (int i = 0; i < 30000; i++)
    CHECK_EQ_INT(add(st, (uint64_t)i, T0 + i, 20, "svc", "x", i), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  ms_store_stats s;
  ms_store_get_stats(st, &s);
  /* One flush trims a bounded amount (4 chunks of 5000)... */
  CHECK_EQ_INT(s.deleted, 20000);
  CHECK_EQ_INT(s.rows, 10000);
  /* ...and the next one goes on without waiting a second. */
  CHECK_EQ_INT(ms_store_flush(st), 0);
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.rows, 10);
  CHECK_EQ_INT(s.deleted, 29990);
  json_t *j = query(st, "limit=10000");
  CHECK(j);
  CHECK_EQ_INT(count_of(j), 10);
  CHECK_EQ_INT(rec_int(j, 0, "ts_us"), T0 + 29990);
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

static int64_t fixed_now(void *ud) { return *(int64_t *)ud; }

static void retention_age(void) {
  CHECK(make_tmp() == 0);
  int64_t now = T0;
  ms_store_options o;
  ms_store_options_init(&o);
  o.max_age_s = 3600;
  o.wallclock_us = fixed_now;
  o.clock_user_data = &now;
  ms_store *st = open_store(&o);
  CHECK(st);
  CHECK_EQ_INT(add(st, 1, T0 - INT64_C(7200) * 1000000, 20, "s", "2h", 0), 0);
  CHECK_EQ_INT(add(st, 2, T0 - INT64_C(3601) * 1000000, 20, "s", "1h1s", 0),
               0);
  CHECK_EQ_INT(add(st, 3, T0 - INT64_C(1800) * 1000000, 20, "s", "30m", 0), 0);
  CHECK_EQ_INT(add(st, 4, T0, 20, "s", "now", 0), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  CHECK_EQ_STR(q_msgs(st, ""), "30m,now");
  /* An hour later the 30-minute-old record has aged out too. */
  now += INT64_C(3600) * 1000000;
  CHECK_EQ_INT(ms_store_retain(st), 0);
  CHECK_EQ_STR(q_msgs(st, ""), "now");
  ms_store_stats s;
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.deleted, 3);
  CHECK_EQ_INT(s.rows, 1);
  ms_store_close(st);
  rm_tmp();
}

static void batch_bound(void) {
  CHECK(make_tmp() == 0);
  ms_store_options o;
  ms_store_options_init(&o);
  o.batch_max = 3;
  ms_store *st = open_store(&o);
  CHECK(st);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(add(st, (uint64_t)i, T0 + i, 20, "s", "ok", i), 0);
  CHECK_EQ_INT(add(st, 9, T0 + 9, 20, "s", "dropped", 9), MS_ERR_LIMIT);
  CHECK_EQ_INT(add(st, 10, T0 + 10, 20, "s", "dropped", 10), MS_ERR_LIMIT);
  ms_store_stats s;
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.dropped, 2);
  CHECK_EQ_INT(s.pending, 3);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  /* Room again after the flush. */
  CHECK_EQ_INT(add(st, 11, T0 + 11, 20, "s", "after", 11), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  /* The two dropped records left a marker row where they would have been. */
  CHECK_EQ_STR(q_msgs(st, ""), "ok,ok,ok,gap,after");
  json_t *j = query(st, "service=s");
  CHECK_EQ_INT(rec_int(j, 3, "level"), 0);
  CHECK_EQ_INT(json_integer_value(json_object_get(
                   json_object_get(json_array_get(json_object_get(j, "records"),
                                                  3),
                                   "fields"),
                   "missed")),
               2);
  json_decref(j);
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.written, 4);
  CHECK_EQ_INT(s.dropped, 2);
  ms_store_close(st);

  /* The byte bound drops a record that would not fit. */
  ms_store_options_init(&o);
  o.batch_max_bytes = 64;
  st = open_store(&o);
  CHECK(st);
  CHECK_EQ_INT(add(st, 1, T0, 20, "s", "small", 0), 0);
  char big[80];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_EQ_INT(add(st, 2, T0, 20, "s", big, 0), MS_ERR_LIMIT);
  ms_store_get_stats(st, &s);
  CHECK_EQ_INT(s.dropped, 1);
  ms_store_close(st);
  rm_tmp();
}

static void injection_is_literal(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = filter_fixture();
  CHECK(st);
  CHECK(add(st, 9, T0 + 9000000, 20, "x' OR '1'='1", "q'); DROP TABLE records;--",
            0) == 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  CHECK_EQ_STR(q_msgs(st, "service=api'%20OR%20'1'%3D'1"), "");
  CHECK_EQ_STR(q_msgs(st, "service=x'%20OR%20'1'%3D'1"),
               "q'); DROP TABLE records;--");
  CHECK_EQ_STR(q_msgs(st, "contains=')%3B%20DROP%20TABLE%20records%3B--"),
               "q'); DROP TABLE records;--");
  CHECK_EQ_STR(q_msgs(st, "contains=%22%20OR%201%3D1%20--"), "");
  /* Non-numeric values where numbers go are refused, not spliced. */
  ms_store_query q;
  char scratch[128], err[128];
  const char *bad[] = {"min_level=1%20OR%201%3D1", "limit=1;DROP TABLE records",
                       "since=0)%20OR%20(1=1", "until=x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_EQ_INT(ms_store_query_parse(&q, bad[i], strlen(bad[i]), scratch, err,
                                      sizeof err),
                 MS_ERR_INVALID_ARG);
  /* The table is still there. */
  json_t *j = query(st, "");
  CHECK(j);
  CHECK_EQ_INT(count_of(j), 6);
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

static void query_parse(void) {
  ms_store_query q;
  char scratch[256], err[128];
  const char *qs = "service=a%2Fb&service=c+d&min_level=info&contains=%C3%A9"
                   "&since=5&until=-7&limit=20";
  CHECK_EQ_INT(ms_store_query_parse(&q, qs, strlen(qs), scratch, err,
                                    sizeof err),
               0);
  CHECK_EQ_INT(q.nservices, 2);
  CHECK_MEM(q.services[0], q.service_lens[0], "a/b", 3);
  CHECK_MEM(q.services[1], q.service_lens[1], "c d", 3);
  CHECK(q.has_min_level);
  CHECK_EQ_INT(q.min_level, 20);
  CHECK_MEM(q.contains, q.contains_len, "\xc3\xa9", 2);
  CHECK(q.has_since && q.has_until);
  CHECK_EQ_INT(q.since_us, 5);
  CHECK_EQ_INT(q.until_us, -7);
  CHECK_EQ_INT(q.limit, 20);

  qs = "limit=20000";
  CHECK_EQ_INT(ms_store_query_parse(&q, qs, strlen(qs), scratch, err,
                                    sizeof err),
               0);
  CHECK_EQ_INT(q.limit, MS_STORE_MAX_LIMIT);
  CHECK_EQ_INT(ms_store_query_parse(&q, "", 0, scratch, err, sizeof err), 0);
  CHECK_EQ_INT(q.nservices, 0);
  CHECK(!q.has_min_level && !q.has_since && !q.has_until && !q.contains);

  const char *bad[] = {"limit=0", "limit=-3", "limit=abc", "contains=%zz",
                       "contains=%4", "min_level=loud", "since=2026-13-01",
                       "until=2026-02-30T00:00:00Z", "%g=1", "other=1",
                       "servce=a", "after=1&before=2", "after=x",
                       "before=-1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    if (ms_store_query_parse(&q, bad[i], strlen(bad[i]), scratch, err,
                             sizeof err) != MS_ERR_INVALID_ARG) {
      printf("# accepted: %s\n", bad[i]);
      CHECK(0);
    }
    CHECK(err[0] != '\0');
  }
  /* More services than the IN list takes. */
  char many[1024] = "";
  for (int i = 0; i <= MS_STORE_MAX_SERVICES; i++)
    strcat(many, "service=s&");
  char *sc = malloc(strlen(many) + 1);
  CHECK(sc);
  int rv = ms_store_query_parse(&q, many, strlen(many), sc, err, sizeof err);
  free(sc);
  CHECK_EQ_INT(rv, MS_ERR_INVALID_ARG);
  /* The scratch bound (len + 1) holds for the worst shapes: names without
   * values, empty pairs. Exact-size heap buffers let ASan check it. */
  const char *shapes[] = {"limit", "limit&since&until", "&&", "service=",
                          "service", "services=,a,,", "limit=%31&",
                          "service=a&service=b"};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    sc = malloc(strlen(shapes[i]) + 1);
    CHECK(sc);
    rv = ms_store_query_parse(&q, shapes[i], strlen(shapes[i]), sc, err,
                              sizeof err);
    size_t nsvc = q.nservices;
    int last_is_b = nsvc == 2 && q.service_lens[1] == 1 && q.services[1][0] == 'b';
    free(sc);
    CHECK_EQ_INT(rv, 0);
    if (i == sizeof shapes / sizeof shapes[0] - 1)
      CHECK(last_is_b);
  }
}

/* The ids of the answer, and its next cursor (kind 'a', 'b' or 0). */
static size_t ids_of(json_t *j, long long *ids, size_t max, char *kind,
                     long long *cursor) {
  size_t n = count_of(j);
  for (size_t i = 0; i < n && i < max; i++)
    ids[i] = rec_int(j, i, "id");
  json_t *nx = json_object_get(j, "next");
  *kind = 0;
  *cursor = 0;
  if (json_object_get(nx, "after")) {
    *kind = 'a';
    *cursor = json_integer_value(json_object_get(nx, "after"));
  } else if (json_object_get(nx, "before")) {
    *kind = 'b';
    *cursor = json_integer_value(json_object_get(nx, "before"));
  }
  return n;
}

static void cursors_page_back_and_forth(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  char msg[32];
  for (int i = 1; i <= 3000; i++) {
    snprintf(msg, sizeof msg, i % 1000 == 0 ? "needle %d" : "hay %d", i);
    CHECK_EQ_INT(add(st, (uint64_t)i, T0 + i, 20, i % 2 ? "odd" : "even", msg,
                     i), 0);
  }
  CHECK_EQ_INT(ms_store_flush(st), 0);
  /* Most rows indexed, the newest not yet: both paths answer. */
  CHECK_EQ_INT(ms_store_index(st, 2500), 0);
  static long long ids[4000];
  char kind;
  long long cur;
  /* No cursor: the newest, oldest first, and where older ones are. */
  json_t *j = query(st, "limit=100");
  CHECK_EQ_INT(ids_of(j, ids, 4000, &kind, &cur), 100);
  CHECK(ids[0] == 2901 && ids[99] == 3000);
  CHECK(kind == 'b' && cur == 2901);
  json_decref(j);
  j = query(st, "limit=100&before=2901");
  CHECK_EQ_INT(ids_of(j, ids, 4000, &kind, &cur), 100);
  CHECK(ids[0] == 2801 && ids[99] == 2900 && kind == 'b' && cur == 2801);
  json_decref(j);
  /* The last page back says there is nothing older. */
  j = query(st, "limit=100&before=51");
  CHECK_EQ_INT(ids_of(j, ids, 4000, &kind, &cur), 50);
  CHECK(ids[0] == 1 && kind == 0);
  json_decref(j);
  /* Forward with a filter across many windows: every match, in order. */
  j = query(st, "after=0&service=even&limit=10000");
  CHECK_EQ_INT(ids_of(j, ids, 4000, &kind, &cur), 1500);
  int ok = 1;
  for (int i = 0; i < 1500; i++)
    ok &= ids[i] == 2 * (i + 1);
  CHECK(ok);
  CHECK(kind == 'a' && cur == 3000);
  json_decref(j);
  j = query(st, "after=1000&limit=2");
  CHECK_EQ_INT(ids_of(j, ids, 4000, &kind, &cur), 2);
  CHECK(ids[0] == 1001 && ids[1] == 1002 && kind == 'a' && cur == 1002);
  json_decref(j);
  /* Rare text, found through the index over the whole table. */
  CHECK_EQ_STR(q_msgs(st, "contains=NEEDLE&limit=10"),
               "needle 1000,needle 2000,needle 3000");
  CHECK_EQ_STR(q_msgs(st, "contains=needle&before=3000"),
               "needle 1000,needle 2000");
  /* Several services, as a list or repeated. */
  j = query(st, "services=odd,even&limit=3");
  CHECK_EQ_INT(count_of(j), 3);
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

static void contains_finds_text_past_the_indexed_part(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  static char longmsg[3001];
  memset(longmsg, 'a', 3000);
  memcpy(longmsg + 2990, "NeedleEnd", 9);
  longmsg[3000] = '\0';
  CHECK_EQ_INT(add(st, 1, T0, 20, "s", longmsg, 0), 0);
  CHECK_EQ_INT(add(st, 2, T0, 20, "s", "short needleend", 0), 0);
  CHECK_EQ_INT(add(st, 3, T0, 20, "s", "nothing", 0), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  CHECK_EQ_INT(ms_store_index(st, 100), 0);
  json_t *j = query(st, "contains=needleend");
  CHECK_EQ_INT(count_of(j), 2);
  CHECK_EQ_STR(rec_str(j, 1, "message"), "short needleend");
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

static void scan_is_bounded_per_step(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  for (int i = 1; i <= 5000; i++)
    CHECK_EQ_INT(add(st, (uint64_t)i, T0 + i, 20, "s", i == 4999 ? "x" : "y",
                     i), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  ms_store_query q;
  char scratch[64], err[64];
  const char *qs = "contains=x&after=0";
  CHECK_EQ_INT(ms_store_query_parse(&q, qs, strlen(qs), scratch, err,
                                    sizeof err), 0);
  ms_store_scan *sc;
  CHECK_EQ_INT(ms_store_scan_new(st, &q, &sc), 0);
  ms_buf out;
  memset(&out, 0, sizeof out);
  int steps = 0, rv;
  /* 100 rows a step: the one match is 50 steps away. */
  while ((rv = ms_store_scan_step(sc, 100, 1 << 20, &out)) == 0)
    steps++;
  CHECK_EQ_INT(rv, 1);
  CHECK_EQ_INT(steps, 49);
  ms_store_scan_free(sc);
  json_error_t je;
  json_t *j = json_loadb(out.data, out.len, 0, &je);
  CHECK(j);
  CHECK_EQ_STR(messages(j), "x");
  json_decref(j);
  ms_buf_free(&out);
  /* A byte bound stops a step after the row that crossed it. */
  qs = "limit=10";
  CHECK_EQ_INT(ms_store_query_parse(&q, qs, strlen(qs), scratch, err,
                                    sizeof err), 0);
  CHECK_EQ_INT(ms_store_scan_new(st, &q, &sc), 0);
  memset(&out, 0, sizeof out);
  steps = 0;
  size_t last = 0;
  int grew_by_one_row = 1;
  while ((rv = ms_store_scan_step(sc, 0, 1, &out)) == 0) {
    steps++;
    grew_by_one_row &= out.len - last < 400;
    last = out.len;
  }
  CHECK_EQ_INT(rv, 1);
  CHECK(steps >= 10 && grew_by_one_row);
  ms_store_scan_free(sc);
  ms_buf_free(&out);
  ms_store_close(st);
  rm_tmp();
}

/* Runs a query step by step, `rows` a step; returns the answer (caller
 * json_decref) and the number of steps it took in *steps. */
static json_t *stepped(ms_store *st, const char *qs, size_t rows, int *steps) {
  ms_store_query q;
  char scratch[256], err[128];
  *steps = 0;
  if (strlen(qs) >= sizeof scratch ||
      ms_store_query_parse(&q, qs, strlen(qs), scratch, err, sizeof err))
    return NULL;
  ms_store_scan *sc;
  if (ms_store_scan_new(st, &q, &sc))
    return NULL;
  ms_buf out;
  memset(&out, 0, sizeof out);
  int rv;
  while ((rv = ms_store_scan_step(sc, rows, 1 << 20, &out)) == 0)
    (*steps)++;
  ms_store_scan_free(sc);
  json_t *j = rv == 1 ? json_loadb(out.data, out.len, 0, NULL) : NULL;
  ms_buf_free(&out);
  return j;
}

/* since/until go through the time index: the zones of ids whose times
 * miss the bounds are skipped, not read (40,000 rows: 10 zones; a scan
 * of every window would take 20 steps of 4096 rows). A record stamped
 * long ago but stored last is still found: times need not follow ids. */
static void since_until_skip_what_is_out_of_time(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  char msg[32];
  for (int i = 1; i <= 40000; i++) {
    snprintf(msg, sizeof msg, "m%d", i);
    CHECK_EQ_INT(add(st, (uint64_t)i, T0 + i * INT64_C(1000), 20, "s", msg, i),
                 0);
    if (i % 5000 == 0)
      CHECK_EQ_INT(ms_store_flush(st), 0);
  }
  CHECK_EQ_INT(add(st, 40001, T0 - 5000, 20, "s", "late-old", 0), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  char qs[160];
  int steps = 0;
  /* The newest first: the oldest 3 by time, and the late one. */
  snprintf(qs, sizeof qs, "until=%lld&limit=1000",
           (long long)(T0 + 3 * 1000));
  json_t *j = stepped(st, qs, 4096, &steps);
  CHECK(j);
  CHECK_EQ_STR(messages(j), "m1,m2,m3,late-old");
  CHECK(json_is_null(json_object_get(j, "next")));
  CHECK(steps <= 6);
  json_decref(j);
  /* Forward from the start: the newest 3 by time. */
  snprintf(qs, sizeof qs, "since=%lld&after=0&limit=1000",
           (long long)(T0 + 39998 * INT64_C(1000)));
  j = stepped(st, qs, 4096, &steps);
  CHECK(j);
  CHECK_EQ_STR(messages(j), "m39998,m39999,m40000");
  CHECK_EQ_INT(json_integer_value(json_object_get(
                   json_object_get(j, "next"), "after")),
               40001);
  CHECK(steps <= 3);
  json_decref(j);
  /* Both bounds, in the middle; nothing at all in a time no row has. */
  snprintf(qs, sizeof qs, "since=%lld&until=%lld",
           (long long)(T0 + 20000 * INT64_C(1000)),
           (long long)(T0 + 20001 * INT64_C(1000)));
  j = stepped(st, qs, 4096, &steps);
  CHECK(j);
  CHECK_EQ_STR(messages(j), "m20000,m20001");
  CHECK(steps <= 4);
  json_decref(j);
  snprintf(qs, sizeof qs, "since=%lld", (long long)(T0 + 50000 * INT64_C(1000)));
  j = stepped(st, qs, 4096, &steps);
  CHECK(j);
  CHECK_EQ_STR(messages(j), "");
  CHECK(steps <= 1);
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

/* A file written before the time index existed (records and its indexes
 * only) opens: the index is built from what is there, answers are the
 * same, gap marker rows still show whatever the bounds, and new rows
 * extend it. */
static void old_schema_file_is_migrated_on_open(void) {
  CHECK(make_tmp() == 0);
  sqlite3 *db = NULL;
  CHECK_EQ_INT(sqlite3_open(dbpath, &db), SQLITE_OK);
  char sql[1024];
  snprintf(sql, sizeof sql,
           "CREATE TABLE records (id INTEGER PRIMARY KEY, hub_id TEXT NOT NULL,"
           " seq INTEGER NOT NULL, ts_us INTEGER NOT NULL, level INTEGER NOT"
           " NULL, service TEXT NOT NULL, message TEXT NOT NULL, fields TEXT"
           " NOT NULL DEFAULT '{}');"
           "CREATE INDEX records_ts ON records(ts_us);"
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
           " WHERE i < 10000) INSERT INTO records (hub_id, seq, ts_us, level,"
           " service, message) SELECT 'hub-old', i, %lld + i * 1000, 20, 's',"
           " 'o' || i FROM n;"
           "INSERT INTO records (hub_id, seq, ts_us, level, service, message,"
           " fields) VALUES ('', 0, %lld, 0, '', 'gap', '{\"missed\":3}');",
           (long long)T0, (long long)T0);
  CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  ms_store *st = open_store(NULL);
  CHECK(st);
  char qs[160];
  int steps = 0;
  snprintf(qs, sizeof qs, "since=%lld&until=%lld",
           (long long)(T0 + 9000 * INT64_C(1000)),
           (long long)(T0 + 9001 * INT64_C(1000)));
  json_t *j = stepped(st, qs, 4096, &steps);
  CHECK(j);
  CHECK_EQ_STR(messages(j), "o9000,o9001,gap");
  json_decref(j);
  snprintf(qs, sizeof qs, "until=%lld", (long long)(T0 + 2 * INT64_C(1000)));
  j = stepped(st, qs, 4096, &steps);
  CHECK(j);
  CHECK_EQ_STR(messages(j), "o1,o2,gap");
  CHECK(steps <= 4);
  json_decref(j);
  CHECK_EQ_INT(add(st, 1, T0 + 20000 * INT64_C(1000), 20, "s", "new", 0), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  snprintf(qs, sizeof qs, "since=%lld", (long long)(T0 + 15000 * INT64_C(1000)));
  CHECK_EQ_STR(q_msgs(st, qs), "gap,new");
  ms_store_close(st);
  /* And the file opens again as it is now. */
  st = open_store(NULL);
  CHECK(st);
  CHECK_EQ_STR(q_msgs(st, qs), "gap,new");
  ms_store_close(st);
  rm_tmp();
}

static void parse_time(void) {
  int64_t t;
  CHECK_EQ_INT(ms_store_parse_time("1795428000000000", 16, &t), 0);
  CHECK_EQ_INT(t, T0);
#define PT(s, v)                                                  \
  do {                                                            \
    CHECK_EQ_INT(ms_store_parse_time(s, strlen(s), &t), 0);       \
    CHECK_EQ_INT(t, v);                                           \
  } while (0)
  PT("2026-11-23T10:00:00Z", T0);
  PT("2026-11-23T10:00:00", T0);
  PT("2026-11-23t10:00z", T0);
  PT("2026-11-23 10:00:00.5Z", T0 + 500000);
  PT("2026-11-23T10:00:00.123456789Z", T0 + 123456);
  PT("2026-11-23T12:30:00+02:30", T0);
  PT("2026-11-23T05:00:00-0500", T0);
  PT("2026-11-23", T0 - INT64_C(36000) * 1000000);
  PT("2024-02-29T23:59:59Z", INT64_C(1709251199) * 1000000);
  PT("1969-12-31T23:59:59Z", -1000000);
  PT("-5", -5);
#undef PT
  const char *bad[] = {"", "2026-11", "2026-11-23T", "2026-11-23T10",
                       "2026-11-23T25:00:00Z", "2026-11-23T10:00:00.Z",
                       "2026-11-23T10:00:00Q", "2023-02-29", "99999999999999999999",
                       "1e6", "--5"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (ms_store_parse_time(bad[i], strlen(bad[i]), &t) != MS_ERR_INVALID_ARG) {
      printf("# accepted: '%s'\n", bad[i]);
      CHECK(0);
    }
  }
}

static void json_escaping(void) {
  CHECK(make_tmp() == 0);
  ms_store *st = open_store(NULL);
  CHECK(st);
  /* Control characters, quotes, backslash, UTF-8, and a stray byte that
   * is not UTF-8 (replaced so the answer stays valid JSON). */
  CHECK_EQ_INT(add(st, 1, T0, 20, "s\\v\"c", "a\x01\tb\\ \xc3\xa9 \xff!", 0), 0);
  CHECK_EQ_INT(ms_store_flush(st), 0);
  json_t *j = query(st, "");
  CHECK(j);
  CHECK_EQ_STR(rec_str(j, 0, "service"), "s\\v\"c");
  CHECK_EQ_STR(rec_str(j, 0, "message"),
               "a\x01\tb\\ \xc3\xa9 \xef\xbf\xbd!");
  json_decref(j);
  ms_store_close(st);
  rm_tmp();
}

static void open_fails_cleanly(void) {
  ms_store *st = (ms_store *)1;
  char err[256] = "";
  CHECK(ms_store_open(&st, "/nonexistent-dir/x/y.db", NULL, err, sizeof err) !=
        0);
  CHECK(st == NULL);
  CHECK(err[0] != '\0');
  ms_store_close(NULL);
}

static const ms_test_case tests[] = {
    TEST(add_flush_query),      TEST(filter_service),
    TEST(filter_level_contains), TEST(filter_time),
    TEST(limit_newest),         TEST(reopen_keeps_records),
    TEST(retention_rows),       TEST(retention_rows_chunked),
    TEST(retention_age),        TEST(batch_bound),
    TEST(injection_is_literal), TEST(query_parse),
    TEST(parse_time),           TEST(json_escaping),
    TEST(cursors_page_back_and_forth), TEST(scan_is_bounded_per_step),
    TEST(contains_finds_text_past_the_indexed_part),
    TEST(open_fails_cleanly),
    TEST(since_until_skip_what_is_out_of_time),
    TEST(old_schema_file_is_migrated_on_open),
};

MS_TEST_MAIN(tests)
