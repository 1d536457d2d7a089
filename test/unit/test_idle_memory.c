/* What an idle connection costs the hub engine, counted through the
 * allocator hook: registered services that went quiet (hibernated) and
 * keep heartbeating. The budget guards the README's figure for idle
 * connections without timing anything.
 *
 * Bytes are counted as glibc's malloc spends them: a chunk per allocation
 * of the request plus 8 bytes, rounded up to 16, at least 32. The marginal
 * cost is the difference between 2N and N connections, so what the hub
 * allocates once (streams, tables made on first use) is not counted. The
 * POSIX driver adds its own per-stream struct (drv_stream, ms_driver.c)
 * and the kernel its socket; bench/run.py --phase idle measures the whole
 * process. */
#define SIM_MAX 64
#include "ms_test.h"
#include "hubsim.h"

#include "ms_conn_int.h"
#include "ms_hub_int.h"

/* The engine's part of an idle hub connection, in bytes (measured: 952 on
 * x86-64; see the README's Performance section). */
#define IDLE_CONN_BUDGET 1024

typedef struct counter {
  size_t live;  /* bytes as malloc spends them */
  size_t count; /* live allocations */
} counter;

typedef struct hdr {
  size_t n;
  size_t pad; /* keeps the payload 16-byte aligned */
} hdr;

static size_t chunk(size_t n) {
  size_t c = (n + 8 + 15) & ~(size_t)15;
  return c < 32 ? 32 : c;
}

static void *c_malloc(size_t n, void *ud) {
  counter *k = ud;
  hdr *h = malloc(sizeof *h + n);
  if (!h)
    return NULL;
  h->n = n;
  k->live += chunk(n);
  k->count++;
  return h + 1;
}
static void c_free(void *p, void *ud) {
  counter *k = ud;
  if (!p)
    return;
  hdr *h = (hdr *)p - 1;
  k->live -= chunk(h->n);
  k->count--;
  free(h);
}
static void *c_calloc(size_t m, size_t n, void *ud) {
  if (n && m > SIZE_MAX / n)
    return NULL;
  void *p = c_malloc(m * n, ud);
  if (p)
    memset(p, 0, m * n);
  return p;
}
static void *c_realloc(void *p, size_t n, void *ud) {
  counter *k = ud;
  if (!p)
    return c_malloc(n, ud);
  hdr *h = (hdr *)p - 1;
  size_t old = h->n;
  hdr *g = realloc(h, sizeof *g + n);
  if (!g)
    return NULL;
  k->live -= chunk(old);
  k->live += chunk(n);
  g->n = n;
  return g + 1;
}

static counter g_count;
static const ms_allocator g_alloc = {c_malloc, c_free, c_calloc, c_realloc,
                                     &g_count};

static ms_client *idle_client(int i) {
  char name[32];
  snprintf(name, sizeof name, "idle-service-%03d", i);
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.seed = 11;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return NULL;
  ms_log_set_sink(c, NULL, NULL);
  return c;
}

static size_t connect_more(sim *s, int n) {
  for (int i = 0; i < n; i++)
    sim_add(s, idle_client(s->n));
  sim_pump(s);
  /* Quiet for longer than idle_release_ms: they hibernate. */
  sim_advance(s, 1500);
  return g_count.live;
}

static void sleeping_connection_stays_within_budget(void) {
  CHECK(sizeof(ms_conn) <= 400);
  CHECK(sizeof(struct ms_hub_conn) <= 352);
  memset(&g_count, 0, sizeof g_count);
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.hub_id = "idle-memory";
  cfg.heartbeat_ms = 10000;
  cfg.idle_release_ms = 1000;
  memset(&s, 0, sizeof s);
  s.now = 1000000;
  CHECK_EQ_INT(ms_hub_new(&s.hub, &cfg, NULL, &g_alloc), 0);
  const int n = SIM_MAX / 2;
  size_t first = connect_more(&s, n);
  size_t second = connect_more(&s, n);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.connections, 2 * n);
  CHECK_EQ_INT(st.hibernations, 2 * n);
  for (int i = 0; i < s.n; i++) {
    CHECK_EQ_INT(ms_client_get_state(s.cl[i].c), MS_CLIENT_READY);
    CHECK(ms_conn_is_hibernating(s.cl[i].hc->ws));
  }
  size_t per = (second - first) / (size_t)n;
  printf("# idle connection: %zu bytes (budget %d)\n", per,
         IDLE_CONN_BUDGET);
  CHECK(per <= IDLE_CONN_BUDGET);

  /* Heartbeats both ways (the clients' pings, the hub's own when a client
   * is quiet) are answered without waking anyone: the figure holds. */
  sim_advance(&s, 25000);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.connections, 2 * n);
  CHECK_EQ_INT(st.hibernations, 2 * n);
  for (int i = 0; i < s.n; i++) {
    CHECK_EQ_INT(ms_client_get_state(s.cl[i].c), MS_CLIENT_READY);
    CHECK(ms_conn_is_hibernating(s.cl[i].hc->ws));
  }
  CHECK(g_count.live <= second + 64 * 16);
  sim_free(&s);
  CHECK_EQ_INT(g_count.count, 0);
}

static const ms_test_case tests[] = {
    TEST(sleeping_connection_stays_within_budget),
};

MS_TEST_MAIN(tests)
