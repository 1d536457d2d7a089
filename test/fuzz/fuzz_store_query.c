/* Fuzz the /api/logs query: the URL query string parser (percent-decoding,
 * names, levels, times, cursors, services), the time parser on its own,
 * and, when a query parses, the stepped scan it starts over a small store
 * (every user value is bound; the contains text becomes an FTS5 phrase).
 * Each answer must end complete or visibly failed. */
#include "ms_internal.h"
#include "ms_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ms_store *g_st;
static char g_path[64];

static void cleanup(void) {
  ms_store_close(g_st);
  g_st = NULL;
  if (g_path[0]) {
    char p[80];
    unlink(g_path);
    snprintf(p, sizeof p, "%s-wal", g_path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", g_path);
    unlink(p);
  }
}

static void add(const char *svc, int64_t ts, int64_t level, const char *msg) {
  static const uint8_t empty_map[] = {0x80};
  static uint64_t seq;
  ms_hub_record r;
  memset(&r, 0, sizeof r);
  r.seq = ++seq;
  r.ts_us = ts;
  r.level = level;
  r.service = svc;
  r.service_len = strlen(svc);
  r.message = msg;
  r.message_len = strlen(msg);
  r.fields = empty_map;
  r.fields_len = 1;
  ms_store_add(g_st, "hub-fuzz", &r);
}

/* A store with a few hundred rows of three services, a gap marker row
 * (the batch overflows once), part of them in the contains index. */
static ms_store *store(void) {
  if (g_st)
    return g_st;
  const char *tmp = getenv("TMPDIR");
  snprintf(g_path, sizeof g_path, "%s/fuzz-store-%ld.db",
           tmp && strlen(tmp) < 30 ? tmp : "/tmp", (long)getpid());
  ms_store_options o;
  ms_store_options_init(&o);
  o.batch_max = 64;
  if (ms_store_open(&g_st, g_path, &o, NULL, 0) != 0) {
    g_path[0] = '\0';
    return NULL;
  }
  atexit(cleanup);
  static const char *const svcs[] = {"api", "db", "web"};
  static const char *const msgs[] = {"GET /x 200", "disk \"full\" %",
                                     "Connection RESET", "a",
                                     "\xc3\xa9t\xc3\xa9 ok"};
  int64_t ts = 1700000000000000;
  for (int i = 0; i < 300; i++) {
    add(svcs[i % 3], ts + i * 1000, 10 + 10 * (i % 4), msgs[i % 5]);
    if (i % 50 == 49)
      ms_store_flush(g_st);
  }
  for (int i = 0; i < 80; i++) /* overflows the batch: a gap row */
    add("api", ts + 400000 + i, 20, "burst");
  ms_store_flush(g_st);
  ms_store_index(g_st, 200);
  return g_st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  /* Exact-size copies: a read past the end is a sanitizer error. */
  char *qs = malloc(size ? size : 1);
  if (qs)
    memset(qs, 0, size ? size : 1);
  char *scratch = malloc(size + 1);
  if (!qs || !scratch) {
    free(qs);
    free(scratch);
    return 0;
  }
  memcpy(qs, data, size);
  int64_t t;
  if (ms_store_parse_time(qs, size, &t) == 0 && size == 0)
    abort(); /* an empty time is not a time */
  ms_store_query q;
  char err[256];
  err[0] = '\0';
  int rv = ms_store_query_parse(&q, qs, size, scratch, err, sizeof err);
  if (rv != 0) {
    if (rv != MS_ERR_INVALID_ARG || err[0] == '\0')
      abort(); /* a refusal always says why */
    goto out;
  }
  if (q.nservices > MS_STORE_MAX_SERVICES || (q.has_after && q.has_before))
    abort();
  for (size_t k = 0; k < q.nservices; k++)
    if (q.services[k] < scratch ||
        q.services[k] + q.service_lens[k] > scratch + size + 1)
      abort();
  if (q.contains && (q.contains < scratch ||
                     q.contains + q.contains_len > scratch + size + 1))
    abort();
  ms_store *st = store();
  if (!st)
    goto out;
  ms_store_scan *sc = NULL;
  if (ms_store_scan_new(st, &q, &sc) != 0)
    goto out;
  ms_buf out;
  memset(&out, 0, sizeof out);
  int r = 0, steps = 0;
  while (r == 0 && steps++ < 100000)
    r = ms_store_scan_step(sc, 64, 4096, &out);
  ms_store_scan_free(sc);
  /* Complete, or ended visibly as an error; JSON either way. */
  if (r == 0 || out.len < 2 || out.data[0] != '{' ||
      out.data[out.len - 1] != '}')
    abort();
  if ((r == 1) != (strstr(out.data, "\"complete\":true") != NULL))
    abort();
  ms_buf_free(&out);
out:
  free(qs);
  free(scratch);
  return 0;
}
