/* The POSIX event loop: timers, deferred calls, fd watches; URL parsing. */
#include "ms_test.h"

#include <microstream/ms_posix.h>

#include <unistd.h>

/* ---- timers ------------------------------------------------------------- */

typedef struct order_rec {
  int seen[8];
  int n;
} order_rec;

static order_rec g_order;

static void record_timer(ms_loop *loop, ms_timer *t, void *ud) {
  (void)loop;
  (void)t;
  g_order.seen[g_order.n++] = (int)(intptr_t)ud;
}

static void timers_fire_in_deadline_order(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  memset(&g_order, 0, sizeof(g_order));
  CHECK_EQ_INT(ms_loop_timer_start(loop, 30, 0, record_timer, (void *)3, NULL), 0);
  CHECK_EQ_INT(ms_loop_timer_start(loop, 10, 0, record_timer, (void *)1, NULL), 0);
  CHECK_EQ_INT(ms_loop_timer_start(loop, 20, 0, record_timer, (void *)2, NULL), 0);
  /* Same deadline: first started fires first. */
  CHECK_EQ_INT(ms_loop_timer_start(loop, 20, 0, record_timer, (void *)4, NULL), 0);
  int64_t t0 = ms_loop_now(loop); /* the clock the delays count from */
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  CHECK(ms_now_ms() - t0 >= 30);
  CHECK_EQ_INT(g_order.n, 4);
  CHECK_EQ_INT(g_order.seen[0], 1);
  CHECK_EQ_INT(g_order.seen[1], 2);
  CHECK_EQ_INT(g_order.seen[2], 4);
  CHECK_EQ_INT(g_order.seen[3], 3);
  ms_loop_del(loop);
}

typedef struct repeat_rec {
  int fired;
  int stop_at;
  int64_t times[8];
} repeat_rec;

static void repeat_cb(ms_loop *loop, ms_timer *t, void *ud) {
  repeat_rec *r = ud;
  r->times[r->fired++] = ms_loop_now(loop);
  if (r->fired == r->stop_at)
    ms_timer_stop(t); /* its own handle, from inside the callback */
}

static void repeating_timer_stops_itself(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  repeat_rec r;
  memset(&r, 0, sizeof(r));
  r.stop_at = 3;
  ms_timer *t;
  ms_loop_run_once(loop, 0); /* refresh the cached clock */
  int64_t t0 = ms_loop_now(loop);
  CHECK_EQ_INT(ms_loop_timer_start(loop, 5, 5, repeat_cb, &r, &t), 0);
  /* run returns once nothing is armed: the timer stopped itself. */
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  CHECK_EQ_INT(r.fired, 3);
  /* Fixed rate: the n-th run is not before t0 + 5n. */
  for (int i = 0; i < 3; i++)
    CHECK(r.times[i] >= t0 + 5 * (i + 1));
  ms_loop_del(loop);
}

static void stop_loop_cb(ms_loop *loop, ms_timer *t, void *ud) {
  (void)t;
  int *n = ud;
  if (++*n % 2 == 0)
    ms_loop_stop(loop);
}

static void loop_stop_from_callback_returns_run(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  int n = 0;
  ms_timer *t;
  CHECK_EQ_INT(ms_loop_timer_start(loop, 1, 1, stop_loop_cb, &n, &t), 0);
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  CHECK_EQ_INT(n, 2);
  /* The loop can run again after a stop. */
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  CHECK_EQ_INT(n, 4);
  ms_timer_stop(t);
  ms_loop_del(loop);
}

static void count_cb(ms_loop *loop, ms_timer *t, void *ud) {
  (void)loop;
  (void)t;
  ++*(int *)ud;
}

static void oneshot_handle_stays_valid_after_firing(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  int n = 0;
  ms_timer *t;
  CHECK_EQ_INT(ms_loop_timer_start(loop, 0, 0, count_cb, &n, &t), 0);
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  CHECK_EQ_INT(n, 1);
  ms_timer_stop(t); /* no use-after-free: the handle is the caller's */
  ms_loop_del(loop);
}

typedef struct kill_rec {
  ms_timer *victim;
  int victim_fired;
} kill_rec;

static void killer_cb(ms_loop *loop, ms_timer *t, void *ud) {
  (void)loop;
  (void)t;
  kill_rec *k = ud;
  ms_timer_stop(k->victim);
  k->victim = NULL;
}

static void victim_cb(ms_loop *loop, ms_timer *t, void *ud) {
  (void)loop;
  (void)t;
  ((kill_rec *)ud)->victim_fired = 1;
}

static void timer_stopped_by_earlier_timer_never_fires(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  kill_rec k = {NULL, 0};
  ms_timer *killer;
  CHECK_EQ_INT(ms_loop_timer_start(loop, 5, 0, killer_cb, &k, &killer), 0);
  CHECK_EQ_INT(ms_loop_timer_start(loop, 5, 0, victim_cb, &k, &k.victim), 0);
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  CHECK_EQ_INT(k.victim_fired, 0);
  CHECK(k.victim == NULL);
  ms_timer_stop(killer);
  ms_loop_del(loop);
}

static void loop_del_frees_armed_timers(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  int n = 0;
  CHECK_EQ_INT(ms_loop_timer_start(loop, 100000, 0, count_cb, &n, NULL), 0);
  CHECK_EQ_INT(ms_loop_timer_start(loop, 100000, 5, count_cb, &n, NULL), 0);
  CHECK_EQ_INT(ms_loop_run_once(loop, 0), 0);
  CHECK_EQ_INT(n, 0);
  ms_loop_del(loop); /* LeakSanitizer checks these were freed */
  ms_loop_del(NULL);
}

/* ---- deferred calls ------------------------------------------------------ */

typedef struct defer_rec {
  ms_loop *loop;
  int first, second;
} defer_rec;

static void defer_second(void *ud) { ((defer_rec *)ud)->second++; }

static void defer_first(void *ud) {
  defer_rec *d = ud;
  d->first++;
  ms_loop_defer(d->loop, defer_second, d);
}

static void defer_runs_once_per_call_and_chains_to_next_iteration(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  defer_rec d = {loop, 0, 0};
  CHECK_EQ_INT(ms_loop_defer(loop, defer_first, &d), 0);
  /* A pending deferred call makes the wait non-blocking. */
  int64_t t0 = ms_now_ms();
  CHECK_EQ_INT(ms_loop_run_once(loop, 5000), 1);
  CHECK(ms_now_ms() - t0 < 1000);
  CHECK_EQ_INT(d.first, 1);
  CHECK_EQ_INT(d.second, 0); /* queued during the run: next iteration */
  CHECK_EQ_INT(ms_loop_run_once(loop, 5000), 1);
  CHECK_EQ_INT(d.second, 1);
  CHECK_EQ_INT(ms_loop_run_once(loop, 0), 0);
  CHECK_EQ_INT(d.first, 1);
  ms_loop_del(loop);
}

/* ---- watches ------------------------------------------------------------- */

typedef struct pipe_rec {
  int fds[2];
  char got[16];
  size_t ngot;
  int writable;
} pipe_rec;

static void pipe_readable(ms_loop *loop, int fd, unsigned events, void *ud) {
  pipe_rec *p = ud;
  CHECK(events & MS_EV_READ);
  ptrdiff_t n = read(fd, p->got + p->ngot, sizeof(p->got) - p->ngot);
  if (n > 0)
    p->ngot += (size_t)n;
  if (p->ngot >= 3)
    ms_loop_watch(loop, fd, 0, NULL, NULL); /* unwatch itself */
}

static void pipe_writer(ms_loop *loop, ms_timer *t, void *ud) {
  (void)loop;
  (void)t;
  pipe_rec *p = ud;
  CHECK_EQ_INT(write(p->fds[1], "abc", 3), 3);
}

static void watch_pipe_reads_data_written_later(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  pipe_rec p;
  memset(&p, 0, sizeof(p));
  CHECK_EQ_INT(pipe(p.fds), 0);
  CHECK_EQ_INT(ms_loop_watch(loop, p.fds[0], MS_EV_READ, pipe_readable, &p), 0);
  CHECK_EQ_INT(ms_loop_timer_start(loop, 10, 0, pipe_writer, &p, NULL), 0);
  /* Nothing readable before the timer fires. */
  CHECK_EQ_INT(ms_loop_run_once(loop, 0), 0);
  CHECK_EQ_INT(p.ngot, 0);
  /* Ends by itself: the reader unwatches after 3 bytes. */
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  CHECK_MEM(p.got, p.ngot, "abc", 3);
  close(p.fds[0]);
  close(p.fds[1]);
  ms_loop_del(loop);
}

static void pipe_writable(ms_loop *loop, int fd, unsigned events, void *ud) {
  pipe_rec *p = ud;
  p->writable += (events & MS_EV_WRITE) ? 1 : 0;
  ms_loop_watch(loop, fd, 0, NULL, NULL);
}

static void watch_write_fires_and_events_can_change(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  pipe_rec p;
  memset(&p, 0, sizeof(p));
  CHECK_EQ_INT(pipe(p.fds), 0);
  /* Watch for reading, then switch to writing before anything arrives. */
  CHECK_EQ_INT(ms_loop_watch(loop, p.fds[1], MS_EV_READ, pipe_readable, &p), 0);
  CHECK_EQ_INT(ms_loop_watch(loop, p.fds[1], MS_EV_WRITE, pipe_writable, &p), 0);
  CHECK_EQ_INT(ms_loop_run_once(loop, 1000), 1);
  CHECK_EQ_INT(p.writable, 1);
  CHECK_EQ_INT(ms_loop_run(loop), 0); /* nothing watched any more */
  close(p.fds[0]);
  close(p.fds[1]);
  ms_loop_del(loop);
}

typedef struct pair_rec {
  int a[2], b[2];
  int calls;
} pair_rec;

static void unwatch_other(ms_loop *loop, int fd, unsigned events, void *ud) {
  (void)events;
  pair_rec *r = ud;
  r->calls++;
  int other = fd == r->a[0] ? r->b[0] : r->a[0];
  ms_loop_watch(loop, fd, 0, NULL, NULL);
  ms_loop_watch(loop, other, 0, NULL, NULL);
}

static void watch_removed_by_earlier_callback_is_not_called(void) {
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  pair_rec r;
  memset(&r, 0, sizeof(r));
  CHECK_EQ_INT(pipe(r.a), 0);
  CHECK_EQ_INT(pipe(r.b), 0);
  CHECK_EQ_INT(write(r.a[1], "x", 1), 1);
  CHECK_EQ_INT(write(r.b[1], "y", 1), 1);
  CHECK_EQ_INT(ms_loop_watch(loop, r.a[0], MS_EV_READ, unwatch_other, &r), 0);
  CHECK_EQ_INT(ms_loop_watch(loop, r.b[0], MS_EV_READ, unwatch_other, &r), 0);
  /* Both are ready in the same batch; only the first callback runs. */
  CHECK_EQ_INT(ms_loop_run_once(loop, 1000), 1);
  CHECK_EQ_INT(r.calls, 1);
  CHECK_EQ_INT(ms_loop_run(loop), 0);
  for (int i = 0; i < 2; i++) {
    close(r.a[i]);
    close(r.b[i]);
  }
  ms_loop_del(loop);
}

static void clocks_are_sane(void) {
  int64_t a = ms_now_ms();
  usleep(2000);
  int64_t b = ms_now_ms();
  CHECK(b >= a + 1);
  CHECK(ms_wall_us() > (int64_t)1600000000 * 1000000); /* after 2020 */
  ms_loop *loop;
  CHECK_EQ_INT(ms_loop_new(&loop, NULL), 0);
  int64_t n0 = ms_loop_now(loop);
  usleep(3000);
  CHECK_EQ_INT(ms_loop_now(loop), n0); /* cached, not read per call */
  ms_loop_run_once(loop, 0);
  CHECK(ms_loop_now(loop) >= n0 + 3);
  ms_loop_del(loop);
}

/* ---- URLs ---------------------------------------------------------------- */

static void url_parse_accepts_common_forms(void) {
  ms_url u;
  CHECK_EQ_INT(ms_url_parse("ws://127.0.0.1:7400/ws", &u), 0);
  CHECK_EQ_STR(u.host, "127.0.0.1");
  CHECK_EQ_INT(u.port, 7400);
  CHECK_EQ_STR(u.path, "/ws");
  CHECK_EQ_INT(u.tls, 0);

  CHECK_EQ_INT(ms_url_parse("ws://hub.local:81", &u), 0);
  CHECK_EQ_STR(u.host, "hub.local");
  CHECK_EQ_INT(u.port, 81);
  CHECK_EQ_STR(u.path, "/ws"); /* default path */

  CHECK_EQ_INT(ms_url_parse("localhost:9000", &u), 0);
  CHECK_EQ_STR(u.host, "localhost");
  CHECK_EQ_INT(u.port, 9000);
  CHECK_EQ_STR(u.path, "/ws");

  CHECK_EQ_INT(ms_url_parse("ws://example.org/a/b?x=1", &u), 0);
  CHECK_EQ_STR(u.host, "example.org");
  CHECK_EQ_INT(u.port, 80); /* default port */
  CHECK_EQ_STR(u.path, "/a/b?x=1");

  CHECK_EQ_INT(ms_url_parse("wss://example.org", &u), 0);
  CHECK_EQ_INT(u.tls, 1);
  CHECK_EQ_INT(u.port, 443);

  CHECK_EQ_INT(ms_url_parse("ws://[::1]:7400/hub", &u), 0);
  CHECK_EQ_STR(u.host, "::1");
  CHECK_EQ_INT(u.port, 7400);
  CHECK_EQ_STR(u.path, "/hub");

  CHECK_EQ_INT(ms_url_parse("[fe80::1%25eth0]", &u), 0);
  CHECK_EQ_STR(u.host, "fe80::1%25eth0");
  CHECK_EQ_INT(u.port, 80);
}

static void url_parse_rejects_bad_input(void) {
  ms_url u;
  CHECK(ms_url_parse("http://x:1/", &u) < 0);     /* other scheme */
  CHECK(ms_url_parse("ws://:80/", &u) < 0);       /* no host */
  CHECK(ms_url_parse("ws://h:99999/", &u) < 0);   /* port range */
  CHECK(ms_url_parse("ws://h:12x/", &u) < 0);     /* junk port */
  CHECK(ms_url_parse("ws://h:/", &u) < 0);        /* empty port */
  CHECK(ms_url_parse("ws://[::1/", &u) < 0);      /* open bracket */
  CHECK(ms_url_parse("ws://[::1]x/", &u) < 0);    /* junk after ] */
  CHECK(ms_url_parse(NULL, &u) < 0);
  char big[400];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  CHECK(ms_url_parse(big, &u) < 0); /* host longer than the field */
}

static const ms_test_case tests[] = {
    TEST(timers_fire_in_deadline_order),
    TEST(repeating_timer_stops_itself),
    TEST(loop_stop_from_callback_returns_run),
    TEST(oneshot_handle_stays_valid_after_firing),
    TEST(timer_stopped_by_earlier_timer_never_fires),
    TEST(loop_del_frees_armed_timers),
    TEST(defer_runs_once_per_call_and_chains_to_next_iteration),
    TEST(watch_pipe_reads_data_written_later),
    TEST(watch_write_fires_and_events_can_change),
    TEST(watch_removed_by_earlier_callback_is_not_called),
    TEST(clocks_are_sane),
    TEST(url_parse_accepts_common_forms),
    TEST(url_parse_rejects_bad_input),
};
MS_TEST_MAIN(tests)
