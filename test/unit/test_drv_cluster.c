/* The cluster driver's bounded queues, fed scripted Redis replies through
 * its entry point without a driver (ms_rcl_fuzz_new / ms_rcl_fuzz_feed):
 * the records kept while Redis is away (the oldest dropped past the
 * bound, counted in /metrics) and the live records held while the
 * history is read (the newest refused past the bound). */
#include "ms_test.h"

#include <stdlib.h>

#include "ms_drv_cluster.h"
#include "ms_hub_int.h"

#define OUTBOX_RECORDS 10000 /* as in ms_drv_cluster.c */
#define SYNC_HOLD 20000

/* One chunk: op 1 the subscriber connection, op 14 the command
 * connection (one more reply awaited, taking anything but an error). */
static void feed(ms_rcl *rc, unsigned op, const char *resp, size_t n) {
  static uint8_t buf[3 + 65535];
  if (n > 65535)
    return;
  buf[0] = (uint8_t)op;
  buf[1] = (uint8_t)(n >> 8);
  buf[2] = (uint8_t)n;
  memcpy(buf + 3, resp, n);
  ms_rcl_fuzz_feed(rc, buf, n + 3);
}

/* The subscriber connection's two SUBSCRIBE confirmations: the history
 * read starts, live records are held meanwhile. */
static void subscribed(ms_rcl *rc) {
  static const char acks[] =
      "*3\r\n$9\r\nsubscribe\r\n$3\r\nme!\r\n:1\r\n"
      "*3\r\n$9\r\nsubscribe\r\n$3\r\nall\r\n:2\r\n";
  feed(rc, 1, acks, sizeof acks - 1);
}

/* Live log-stream messages for seqs from..to, in chunks: holes
 * ("J<stream><first> <last>", one seq each) up to holes_to, records from
 * another hub ("R<stream><seq> x") after. */
static void feed_live(ms_rcl *rc, int from, int to, int holes_to) {
  static char chunk[65000];
  size_t n = 0;
  for (int seq = from; seq <= to; seq++) {
    char msg[40], one[120];
    int k = seq <= holes_to ? snprintf(msg, sizeof msg, "J0%d %d", seq, seq)
                            : snprintf(msg, sizeof msg, "R0%d x", seq);
    int m = snprintf(one, sizeof one,
                     "*3\r\n$7\r\nmessage\r\n$15\r\nmicrostream:all\r\n"
                     "$%d\r\n%s\r\n",
                     k, msg);
    if (n + (size_t)m > sizeof chunk) {
      feed(rc, 1, chunk, n);
      n = 0;
    }
    memcpy(chunk + n, one, (size_t)m);
    n += (size_t)m;
  }
  feed(rc, 1, chunk, n);
}

static ms_hub *hub_new(void) {
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  hc.hub_id = "hub-q";
  ms_hub *h = NULL;
  return ms_hub_new(&h, &hc, NULL, NULL) == 0 ? h : NULL;
}

static int metric_is(ms_hub *h, const char *line) {
  ms_buf b = {0};
  int found = ms_hub_metrics_text(h, &b) == 0 && b.data &&
              strstr(b.data, line) != NULL;
  ms_buf_free(&b);
  return found;
}

static void outbox_keeps_the_newest_records_and_counts_the_dropped(void) {
  ms_hub *h = hub_new();
  CHECK(h != NULL);
  ms_rcl *rc = ms_rcl_fuzz_new(h);
  CHECK(rc != NULL);
  static const char gone[] = "-ERR gone\r\n"; /* the subscriber refused */
  feed(rc, 1, gone, sizeof gone - 1);
  ms_cluster_stats st;
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.up, 0);
  for (int i = 0; i < OUTBOX_RECORDS + 5; i++) {
    char rec[16];
    int n = snprintf(rec, sizeof rec, "r%d", i);
    CHECK_EQ_INT(h->cl.publish(h->cl_ctx, MS_CLUSTER_LOGS,
                               (const uint8_t *)rec, (size_t)n),
                 0);
  }
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_dropped, 5);
  CHECK(metric_is(h, "\nmicrostream_cluster_records_dropped_total 5\n"));
  /* Back: what was kept leaves in one append. */
  static const char ok[] = "+OK\r\n";
  feed(rc, 14, ok, sizeof ok - 1);
  ms_rcl_flush(rc);
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.up, 1);
  CHECK_EQ_INT(st.records_out, OUTBOX_RECORDS);
  CHECK_EQ_INT(st.records_dropped, 5);
  ms_rcl_del(rc);
  ms_hub_del(h);
}

/* Holes ("J<stream><first> <last>") move the hub's seq without a record:
 * the seq the hub reaches says how many were held. */
static void held_records_stop_at_the_bound_the_newest_refused(void) {
  ms_hub *h = hub_new();
  CHECK(h != NULL);
  ms_rcl *rc = ms_rcl_fuzz_new(h);
  CHECK(rc != NULL);
  subscribed(rc); /* the history read starts, live records are held */
  feed_live(rc, 1, SYNC_HOLD + 5, SYNC_HOLD + 5);
  CHECK_EQ_INT(ms_hub_cluster_last_seq(h, MS_CLUSTER_LOGS), 0);
  /* Floor and history (empty) for each stream; then the held ones. */
  static const char hist[] = ":1\r\n*0\r\n:1\r\n*0\r\n+OK\r\n";
  feed(rc, 14, hist, sizeof hist - 1);
  /* The refused seqs are passed over, not taken for lost records. */
  CHECK_EQ_INT(ms_hub_cluster_last_seq(h, MS_CLUSTER_LOGS), SYNC_HOLD + 5);
  ms_cluster_stats st;
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_unshown, 0); /* holes are no loss */
  /* Live again: the next one goes straight through. */
  feed_live(rc, 20010, 20010, 20010);
  CHECK_EQ_INT(ms_hub_cluster_last_seq(h, MS_CLUSTER_LOGS), 20010);
  ms_rcl_del(rc);
  ms_hub_del(h);
}

/* Records refused past the bound are told: once the history is in, the
 * subscribers get a gap marker for those newer than what was shown, and
 * /metrics counts them. Refused holes are no loss and are not counted. */
static void refused_held_records_are_told_as_a_gap(void) {
  ms_hub *h = hub_new();
  CHECK(h != NULL);
  ms_rcl *rc = ms_rcl_fuzz_new(h);
  CHECK(rc != NULL);
  subscribed(rc);
  /* SYNC_HOLD holes fill the bound; then 3 holes and 7 records (from
   * another hub) come past it. */
  feed_live(rc, 1, SYNC_HOLD + 10, SYNC_HOLD + 3);
  ms_cluster_stats st;
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_unshown, 0); /* not before the history is in */
  static const char hist[] = ":1\r\n*0\r\n:1\r\n*0\r\n+OK\r\n";
  feed(rc, 14, hist, sizeof hist - 1);
  /* Told once, and their seqs passed over: the next record is no jump
   * (which would be a second gap and restart the history). */
  CHECK_EQ_INT(ms_hub_cluster_last_seq(h, MS_CLUSTER_LOGS), SYNC_HOLD + 10);
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_unshown, 7);
  CHECK(metric_is(h, "\nmicrostream_cluster_records_unshown_total 7\n"));
  feed_live(rc, SYNC_HOLD + 11, SYNC_HOLD + 11, SYNC_HOLD + 11);
  CHECK_EQ_INT(ms_hub_cluster_last_seq(h, MS_CLUSTER_LOGS), SYNC_HOLD + 11);
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_unshown, 7);
  ms_rcl_del(rc);
  ms_hub_del(h);
}

static void publish_n(ms_hub *h, int from, int n) {
  for (int i = from; i < from + n; i++) {
    char rec[16];
    int k = snprintf(rec, sizeof rec, "a%d", i);
    CHECK_EQ_INT(h->cl.publish(h->cl_ctx, MS_CLUSTER_LOGS,
                               (const uint8_t *)rec, (size_t)k),
                 0);
  }
}

/* An append whose answer never came (the connection ended) is sent again
 * on the next connection, once; one that was answered is not; one that
 * Redis refused is counted as lost. */
static void unanswered_appends_are_sent_again(void) {
  ms_hub *h = hub_new();
  CHECK(h != NULL);
  ms_rcl *rc = ms_rcl_fuzz_new(h);
  CHECK(rc != NULL);
  static const char gone[] = "-ERR gone\r\n"; /* the subscriber ends */
  static const char ok[] = "+OK\r\n";
  ms_cluster_stats st;
  publish_n(h, 0, 3);
  ms_rcl_flush(rc); /* one EVAL, unanswered */
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_out, 3);
  uint64_t cmds = st.redis_commands;
  feed(rc, 1, gone, sizeof gone - 1); /* down: the answer is lost */
  publish_n(h, 3, 2); /* made while down */
  feed(rc, 14, ok, sizeof ok - 1); /* up again */
  ms_rcl_flush(rc);
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_resent, 3);
  CHECK_EQ_INT(st.records_out, 5);
  CHECK_EQ_INT(st.records_dropped, 0);
  CHECK(st.redis_commands >= cmds + 2); /* the old append, the new one */
  CHECK(metric_is(h, "\nmicrostream_cluster_records_resent_total 3\n"));
  /* Both answered now (the script ran them, or skipped the first as
   * run before): nothing is left to send again. */
  static const char two[] = ":-1\r\n:2\r\n";
  feed(rc, 14, two, sizeof two - 1);
  feed(rc, 1, gone, sizeof gone - 1);
  feed(rc, 14, ok, sizeof ok - 1);
  ms_rcl_flush(rc);
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_resent, 3);
  /* Refused by Redis: counted as lost, not sent again. */
  publish_n(h, 5, 4);
  ms_rcl_flush(rc);
  static const char err[] = "-ERR OOM command not allowed\r\n";
  feed(rc, 14, err, sizeof err - 1);
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_dropped, 4);
  feed(rc, 1, gone, sizeof gone - 1);
  feed(rc, 14, ok, sizeof ok - 1);
  ms_rcl_flush(rc);
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_resent, 3);
  /* Unanswered when the driver goes: freed (ASan checks). */
  publish_n(h, 9, 2);
  ms_rcl_flush(rc);
  feed(rc, 1, gone, sizeof gone - 1);
  ms_rcl_del(rc);
  ms_hub_del(h);
}

/* Where `what` is in the commands sent (p, n); -1 when it is not. */
static long sent_at(const char *p, size_t n, const char *what) {
  size_t w = strlen(what);
  for (size_t i = 0; i + w <= n; i++)
    if (memcmp(p + i, what, w) == 0)
      return (long)i;
  return -1;
}

/* Appends of both streams share one numbering: sent again, they go in
 * their first order and before any new one, or the script would skip a
 * number lower than one it has run. */
static void appends_are_sent_again_in_order(void) {
  ms_hub *h = hub_new();
  CHECK(h != NULL);
  ms_rcl *rc = ms_rcl_fuzz_new(h);
  CHECK(rc != NULL);
  static const char gone[] = "-ERR gone\r\n";
  static const char ok[] = "+OK\r\n";
  size_t n = 0;
  (void)ms_rcl_fuzz_sent(rc, &n); /* keep from here */
  publish_n(h, 0, 2);
  static const uint8_t pres[] = {0x90};
  CHECK_EQ_INT(h->cl.publish(h->cl_ctx, MS_CLUSTER_PRESENCE, pres, 1), 0);
  ms_rcl_flush(rc); /* append 1 (logs), append 2 (presence) */
  const char *p = ms_rcl_fuzz_sent(rc, &n);
  CHECK(sent_at(p, n, "$1\r\n0\r\n$0\r\n\r\n$1\r\n1\r\n") >= 0);
  CHECK(sent_at(p, n, "$1\r\n1\r\n$0\r\n\r\n$1\r\n2\r\n") >= 0);
  feed(rc, 1, gone, sizeof gone - 1);
  publish_n(h, 2, 1); /* made while down: shown here, origin hub-q */
  feed(rc, 14, ok, sizeof ok - 1);
  (void)ms_rcl_fuzz_sent(rc, &n); /* what the reconnection sent */
  ms_rcl_flush(rc);
  p = ms_rcl_fuzz_sent(rc, &n);
  long a1 = sent_at(p, n, "$1\r\n0\r\n$0\r\n\r\n$1\r\n1\r\n");
  long a2 = sent_at(p, n, "$1\r\n1\r\n$0\r\n\r\n$1\r\n2\r\n");
  long a3 = sent_at(p, n, "$1\r\n0\r\n$5\r\nhub-q\r\n$1\r\n3\r\n");
  CHECK(a1 >= 0 && a2 > a1 && a3 > a2);
  ms_cluster_stats st;
  ms_rcl_stats(rc, &st);
  CHECK_EQ_INT(st.records_resent, 3);
  ms_rcl_del(rc);
  ms_hub_del(h);
}

static long fa_count, fa_at;
static int fa_on;
static int fa_fail(void) { return fa_on && ++fa_count == fa_at; }
static void *fa_malloc(size_t n, void *u) {
  (void)u;
  return fa_fail() ? NULL : malloc(n);
}
static void fa_free(void *p, void *u) {
  (void)u;
  free(p);
}
static void *fa_calloc(size_t k, size_t n, void *u) {
  (void)u;
  return fa_fail() ? NULL : calloc(k, n);
}
static void *fa_realloc(void *p, size_t n, void *u) {
  (void)u;
  return fa_fail() ? NULL : realloc(p, n);
}

/* An allocation failing while the unanswered appends are sent again
 * leaves the rest waiting; the connection ending then must not put them
 * behind one with a higher number (the script would skip the lower). */
static void a_failed_resend_keeps_the_order(void) {
  for (long at = 1; at <= 12; at++) {
    ms_allocator mem = {fa_malloc, fa_free, fa_calloc, fa_realloc, NULL};
    ms_hub_config hc;
    ms_hub_config_init(&hc);
    hc.hub_id = "hub-q";
    ms_hub *h = NULL;
    CHECK_EQ_INT(ms_hub_new(&h, &hc, NULL, &mem), 0);
    ms_rcl *rc = ms_rcl_fuzz_new(h);
    CHECK(rc != NULL);
    static const char gone[] = "-ERR gone\r\n", ok[] = "+OK\r\n";
    size_t n = 0;
    (void)ms_rcl_fuzz_sent(rc, &n);
    publish_n(h, 0, 1);
    static const uint8_t pres[] = {0x90};
    CHECK_EQ_INT(h->cl.publish(h->cl_ctx, MS_CLUSTER_PRESENCE, pres, 1), 0);
    ms_rcl_flush(rc); /* 1 (logs), 2 (presence) */
    feed(rc, 1, gone, sizeof gone - 1);
    feed(rc, 14, ok, sizeof ok - 1);
    fa_count = 0;
    fa_at = at;
    fa_on = 1;
    ms_rcl_flush(rc); /* sent again, an allocation failing on the way */
    fa_on = 0;
    feed(rc, 1, gone, sizeof gone - 1);
    feed(rc, 14, ok, sizeof ok - 1);
    (void)ms_rcl_fuzz_sent(rc, &n);
    ms_rcl_flush(rc);
    const char *p = ms_rcl_fuzz_sent(rc, &n);
    long t1 = sent_at(p, n, "$0\r\n\r\n$1\r\n1\r\n");
    long t2 = sent_at(p, n, "$0\r\n\r\n$1\r\n2\r\n");
    CHECK(t1 >= 0 && t2 > t1);
    ms_rcl_del(rc);
    ms_hub_del(h);
  }
}

static const ms_test_case tests[] = {
    TEST(outbox_keeps_the_newest_records_and_counts_the_dropped),
    TEST(held_records_stop_at_the_bound_the_newest_refused),
    TEST(refused_held_records_are_told_as_a_gap),
    TEST(unanswered_appends_are_sent_again),
    TEST(appends_are_sent_again_in_order),
    TEST(a_failed_resend_keeps_the_order),
};

MS_TEST_MAIN(tests)
