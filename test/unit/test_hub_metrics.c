/* The hub's per-route figures (/metrics, /api/stats): requests counted by
 * target, event and outcome, latency buckets on the hub's clock, and a
 * bounded table however many event names clients invent. */
#include "ms_test.h"
#include "hubsim.h"

typedef struct res {
  int done, err;
} res;

static void on_res(ms_client *c, const ms_response_arg *a, void *ud) {
  res *r = ud;
  (void)c;
  r->done++;
  r->err = a->err;
}

static void h_ok(ms_client *c, ms_reply *r, const ms_request_arg *a,
                 void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_send_str(r, "fine");
}

static void h_fail(ms_client *c, ms_reply *r, const ms_request_arg *a,
                   void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_error(r, "BAD_REQUEST", "no", NULL, 0);
}

static ms_reply *g_held[4];
static int g_nheld;

static void h_hold(ms_client *c, ms_reply *r, const ms_request_arg *a,
                   void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_retain(r);
  g_held[g_nheld++] = r;
}

static void h_slow_ok(ms_client *c, ms_reply *r, const ms_request_arg *a,
                      void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_retain(r);
  g_held[g_nheld++] = r;
}

static int has(const ms_buf *b, const char *needle) {
  if (!b->data)
    return 0;
  char *copy = malloc(b->len + 1);
  memcpy(copy, b->data, b->len);
  copy[b->len] = 0;
  int found = strstr(copy, needle) != NULL;
  if (!found)
    fprintf(stderr, "# missing: %s\n", needle);
  free(copy);
  return found;
}

static void requests_counted_by_target_event_and_outcome(void) {
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.hub_id = "hub-metrics";
  cfg.heartbeat_ms = 1000000;
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *caller = sim_client_new("caller", 0);
  ms_client *svc = sim_client_new("svc", 0);
  ms_client_on(svc, "ok", h_ok, NULL);
  ms_client_on(svc, "fail", h_fail, NULL);
  ms_client_on(svc, "hold", h_hold, NULL);
  ms_client_on(svc, "slow", h_slow_ok, NULL);
  sim_add(&s, caller);
  int si = sim_add(&s, svc);
  sim_pump(&s);
  g_nheld = 0;

  res r[8];
  memset(r, 0, sizeof r);
  ms_request_opts o;
  memset(&o, 0, sizeof o);
  o.timeout_ms = 100;
  ms_client_request(caller, "svc", "ok", NULL, 0, NULL, on_res, &r[0], NULL);
  ms_client_request(caller, "svc", "ok", NULL, 0, NULL, on_res, &r[1], NULL);
  ms_client_request(caller, "svc", "fail", NULL, 0, NULL, on_res, &r[2], NULL);
  ms_client_request(caller, "svc", "hold", NULL, 0, &o, on_res, &r[3], NULL);
  ms_client_request(caller, "svc", "slow", NULL, 0, NULL, on_res, &r[4], NULL);
  sim_advance(&s, 1);
  CHECK_EQ_INT(g_nheld, 2);
  /* "slow" is answered 300 ms later; "hold" times out at 100 ms. */
  sim_advance(&s, 300);
  ms_reply_send_str(g_held[1], "late but in time"); /* drops the handle */
  sim_advance(&s, 1);
  CHECK_EQ_INT(r[3].err, MS_ERR_REQUEST_TIMEOUT);
  CHECK_EQ_INT(r[4].err, 0);
  ms_reply_release(g_held[0]);
  /* One more held, then the service goes away: disconnected. */
  ms_client_request(caller, "svc", "hold", NULL, 0, NULL, on_res, &r[5], NULL);
  sim_advance(&s, 1);
  CHECK_EQ_INT(g_nheld, 3);
  sim_drop(&s, si);
  sim_advance(&s, 1);
  ms_reply_release(g_held[2]);
  CHECK_EQ_INT(r[5].err, MS_ERR_TARGET_DISCONNECTED);

  ms_buf b;
  memset(&b, 0, sizeof b);
  CHECK_EQ_INT(ms_hub_metrics_text(s.hub, &b), 0);
  CHECK(has(&b, "microstream_requests_total{target=\"svc\",event=\"ok\",outcome=\"ok\"} 2\n"));
  CHECK(has(&b, "microstream_requests_total{target=\"svc\",event=\"fail\",outcome=\"error\"} 1\n"));
  CHECK(has(&b, "microstream_requests_total{target=\"svc\",event=\"hold\",outcome=\"timeout\"} 1\n"));
  CHECK(has(&b, "microstream_requests_total{target=\"svc\",event=\"hold\",outcome=\"disconnected\"} 1\n"));
  CHECK(has(&b, "microstream_requests_total{target=\"svc\",event=\"slow\",outcome=\"ok\"} 1\n"));
  /* Latency on the hub's clock: "ok" within 1 ms, "slow" about 300 ms. */
  CHECK(has(&b, "microstream_request_duration_seconds_bucket{target=\"svc\",event=\"ok\",le=\"0.001\"} 2\n"));
  CHECK(has(&b, "microstream_request_duration_seconds_bucket{target=\"svc\",event=\"slow\",le=\"0.25\"} 0\n"));
  CHECK(has(&b, "microstream_request_duration_seconds_bucket{target=\"svc\",event=\"slow\",le=\"0.5\"} 1\n"));
  CHECK(has(&b, "microstream_request_duration_seconds_bucket{target=\"svc\",event=\"slow\",le=\"+Inf\"} 1\n"));
  CHECK(has(&b, "microstream_request_duration_seconds_count{target=\"svc\",event=\"fail\"} 1\n"));
  CHECK(has(&b, "microstream_connections_by_protocol{protocol=\"microstream.v1\"}"));
  CHECK(has(&b, "microstream_build_info{version=\"" MS_VERSION_STRING "\"} 1\n"));
  ms_buf_free(&b);

  memset(&b, 0, sizeof b);
  CHECK_EQ_INT(ms_hub_stats_json(s.hub, &b), 0);
  CHECK(has(&b, "{\"target\":\"svc\",\"event\":\"ok\",\"ok\":2,\"error\":0,"
                "\"timeout\":0,\"disconnected\":0,\"cancelled\":0,"
                "\"latency_sum_ms\":"));
  CHECK(has(&b, "{\"target\":\"svc\",\"event\":\"hold\",\"ok\":0,\"error\":0,"
                "\"timeout\":1,\"disconnected\":1,"));
  CHECK(has(&b, "\"bucket_le_ms\":[1,2,5,10,25,50,100,250,500,1000,2500,5000,10000]"));
  ms_buf_free(&b);
  sim_free(&s);
}

static void invented_event_names_share_one_bounded_entry(void) {
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.heartbeat_ms = 1000000;
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *caller = sim_client_new("caller", 0);
  ms_client *svc = sim_client_new("svc", 0);
  sim_add(&s, caller);
  sim_add(&s, svc);
  sim_pump(&s);
  res r;
  memset(&r, 0, sizeof r);
  for (int i = 0; i < 700; i++) {
    char ev[32];
    snprintf(ev, sizeof ev, "e%d", i);
    ms_client_request(caller, "svc", ev, NULL, 0, NULL, on_res, &r, NULL);
    if (i % 50 == 49)
      sim_advance(&s, 1);
  }
  sim_advance(&s, 1);
  CHECK_EQ_INT(r.done, 700);
  ms_buf b;
  memset(&b, 0, sizeof b);
  CHECK_EQ_INT(ms_hub_metrics_text(s.hub, &b), 0);
  /* The service answered EVENT_NOT_FOUND: its own error, counted. */
  CHECK(has(&b, "microstream_requests_total{target=\"svc\",event=\"e0\",outcome=\"error\"} 1\n"));
  CHECK(has(&b, "microstream_requests_total{target=\"svc\",event=\"e511\",outcome=\"error\"} 1\n"));
  CHECK(!strstr(b.data, "event=\"e512\""));
  CHECK(has(&b, "microstream_requests_total{target=\"_other\",event=\"_other\",outcome=\"error\"} 188\n"));
  ms_buf_free(&b);
  sim_free(&s);
}

static const ms_test_case tests[] = {
    TEST(requests_counted_by_target_event_and_outcome),
    TEST(invented_event_names_share_one_bounded_entry),
};

int main(int argc, char **argv) {
  return ms_test_run(tests, sizeof tests / sizeof tests[0], argc, argv);
}
