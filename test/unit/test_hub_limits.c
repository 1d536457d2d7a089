/* Bounds and their error paths, hub and client together on a fake clock:
 * messages that only outgrow max_message once they are JSON, requesters
 * that stop reading while their requests time out, logs too large to
 * ship, absurd timeouts. */
#include "ms_test.h"
#include "hubsim.h"

static ms_client *client_enc(const char *name, ms_encoding enc) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.encoding = enc;
  cfg.seed = 7;
  cfg.backoff_min_ms = 10;
  cfg.backoff_max_ms = 50;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return NULL;
  ms_log_set_sink(c, NULL, NULL);
  return c;
}

typedef struct res {
  int done, err;
  char code[64];
} res;

static void on_res(ms_client *c, const ms_response_arg *a, void *ud) {
  res *r = ud;
  (void)c;
  r->done++;
  r->err = a->err;
  snprintf(r->code, sizeof r->code, "%s", a->code ? a->code : "");
}

static size_t g_bin_len;
static int g_reply_rv;

/* Answers with g_bin_len bytes of bin: base64 in JSON, a third larger. */
static void h_big(ms_client *c, ms_reply *r, const ms_request_arg *a,
                  void *ud) {
  (void)c, (void)a, (void)ud;
  char *blob = calloc(1, g_bin_len);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_bin_with_body(&pk, blob, g_bin_len);
  g_reply_rv = ms_reply_send(r, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  free(blob);
}

static void h_small(ms_client *c, ms_reply *r, const ms_request_arg *a,
                    void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_send_str(r, "ok");
}

static void small_hub(ms_hub_config *cfg) {
  ms_hub_config_init(cfg);
  cfg->hub_id = "hub-limits";
  cfg->heartbeat_ms = 1000000;
  cfg->max_message = 4096;
}

static void answer_too_large_once_json_gets_PAYLOAD_TOO_LARGE(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *j = client_enc("json-caller", MS_ENC_JSON);
  ms_client *m = client_enc("mp-service", MS_ENC_MSGPACK);
  ms_client_on(m, "big", h_big, NULL);
  sim_add(&s, j);
  sim_add(&s, m);
  sim_pump(&s);
  g_bin_len = 3500; /* fits as MessagePack, not as base64 JSON */
  res r = {0, 0, ""};
  ms_client_request(j, "mp-service", "big", NULL, 0, NULL, on_res, &r, NULL);
  sim_advance(&s, 1);
  CHECK_EQ_INT(g_reply_rv, 0);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.err, MS_ERR_PAYLOAD_TOO_LARGE);
  CHECK_EQ_INT(ms_client_get_state(j), MS_CLIENT_READY);
  sim_free(&s);
}

static void reply_too_large_once_json_tells_both_sides(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = client_enc("mp-caller", MS_ENC_MSGPACK);
  ms_client *j = client_enc("json-service", MS_ENC_JSON);
  ms_client_on(j, "big", h_big, NULL);
  sim_add(&s, a);
  sim_add(&s, j);
  sim_pump(&s);
  g_bin_len = 3500;
  g_reply_rv = 0;
  res r = {0, 0, ""};
  ms_client_request(a, "json-service", "big", NULL, 0, NULL, on_res, &r, NULL);
  sim_advance(&s, 1);
  CHECK_EQ_INT(g_reply_rv, MS_ERR_PAYLOAD_TOO_LARGE);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.err, MS_ERR_PAYLOAD_TOO_LARGE);
  /* The service was not disconnected for sending too much. */
  CHECK_EQ_INT(ms_client_get_state(j), MS_CLIENT_READY);
  sim_free(&s);
}

static void requester_that_stops_reading_is_closed_4029_and_others_go_on(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  cfg.out_high_water = 4096;
  cfg.out_hard_limit = 16384;
  sim_init(&s, &cfg);
  ms_client *a = client_enc("stalled", MS_ENC_MSGPACK);
  ms_client *b = client_enc("server", MS_ENC_MSGPACK);
  ms_client *c = client_enc("healthy", MS_ENC_MSGPACK);
  ms_client_on(b, "big", h_big, NULL);
  ms_client_on(b, "small", h_small, NULL);
  int ai = sim_add(&s, a);
  sim_add(&s, b);
  sim_add(&s, c);
  sim_pump(&s);
  s.cl[ai].stalled = 1;
  g_bin_len = 3000;
  res rs[40];
  memset(rs, 0, sizeof rs);
  ms_request_opts o = {0};
  for (int i = 0; i < 40; i++) {
    /* Answers fill its buffer; the rest time out onto the full buffer. */
    o.timeout_ms = 50 + i;
    o.late_ms = i % 2 ? 100 : 0;
    o.on_late = i % 2 ? on_res : NULL;
    o.late_user_data = &rs[i];
    ms_client_request(a, "server", i < 8 ? "big" : "never", NULL, 0, &o,
                      on_res, &rs[i], NULL);
  }
  sim_advance(&s, 500);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK(st.pending == 0);
  /* Someone else is served all along. */
  res rc = {0, 0, ""};
  ms_client_request(c, "server", "small", NULL, 0, NULL, on_res, &rc, NULL);
  sim_advance(&s, 10);
  CHECK_EQ_INT(rc.done, 1);
  CHECK_EQ_INT(rc.err, 0);
  /* The stalled one was cut off as a slow consumer: once it reads again
   * it sees the close and its requests end, each exactly once. */
  s.cl[ai].stalled = 0;
  sim_advance(&s, 200);
  for (int i = 0; i < 40; i++)
    CHECK(rs[i].done >= 1 && rs[i].done <= 2);
  sim_free(&s);
}

static void log_too_large_to_ship_is_dropped_and_later_ones_flow(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = client_enc("logger", MS_ENC_MSGPACK);
  ms_log_set_level(a, MS_LEVEL_DEBUG);
  sim_add(&s, a);
  sim_pump(&s);
  char *big = malloc(10000);
  memset(big, 'x', 9999);
  big[9999] = '\0';
  CHECK_EQ_INT(ms_info(a, "%s", big), 0);
  for (int i = 0; i < 5; i++)
    ms_info(a, "small %d", i);
  sim_pump(&s);
  CHECK_EQ_INT(ms_log_queued(a), 0);
  CHECK_EQ_INT(ms_log_dropped(a), 1);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records, 5);
  /* Fields beyond the bound are refused outright. */
  size_t n = 300 * 1024;
  uint8_t *f = calloc(1, n + 16);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  msgpack_pack_str_with_body(&pk, "k", 1);
  msgpack_pack_bin_with_body(&pk, f, n);
  CHECK_EQ_INT(ms_log_raw(a, MS_LEVEL_INFO, "m", 1, (const uint8_t *)sb.data,
                          sb.size),
               MS_ERR_TOO_BIG);
  msgpack_sbuffer_destroy(&sb);
  free(f);
  free(big);
  sim_free(&s);
}

static void absurd_timeout_is_capped_not_overflowed(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  cfg.max_timeout_ms = 2000;
  cfg.default_timeout_ms = 1000;
  sim_init(&s, &cfg);
  ms_client *a = client_enc("a", MS_ENC_MSGPACK);
  ms_client *b = client_enc("b", MS_ENC_MSGPACK);
  ms_client_on(b, "slow", h_small, NULL);
  sim_add(&s, a);
  sim_add(&s, b);
  sim_pump(&s);
  res r = {0, 0, ""};
  ms_request_opts o = {0};
  o.timeout_ms = INT64_MAX;
  o.late_ms = INT64_MAX;
  o.on_late = on_res;
  o.late_user_data = &r;
  s.cl[1].stalled = 1; /* b never sees the request */
  ms_client_request(a, "b", "slow", NULL, 0, &o, on_res, &r, NULL);
  sim_advance(&s, 1);
  CHECK_EQ_INT(r.done, 0); /* not timed out at once */
  sim_advance(&s, 2100); /* the hub's cap applies */
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.err, MS_ERR_REQUEST_TIMEOUT);
  sim_free(&s);
}

static void cancel_in_late_window_stops_on_late(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = client_enc("a", MS_ENC_MSGPACK);
  ms_client *b = client_enc("b", MS_ENC_MSGPACK);
  ms_client_on(b, "slow", h_small, NULL);
  sim_add(&s, a);
  sim_add(&s, b);
  sim_pump(&s);
  s.cl[1].stalled = 1; /* b's answer will come late */
  res r = {0, 0, ""}, late = {0, 0, ""};
  ms_request_opts o = {0};
  o.timeout_ms = 100;
  o.late_ms = 1000;
  o.on_late = on_res;
  o.late_user_data = &late;
  uint64_t id = 0;
  ms_client_request(a, "b", "slow", NULL, 0, &o, on_res, &r, &id);
  sim_advance(&s, 150);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.err, MS_ERR_REQUEST_TIMEOUT);
  CHECK_EQ_INT(ms_client_cancel(a, id), 0);
  s.cl[1].stalled = 0;
  sim_advance(&s, 100);
  CHECK_EQ_INT(late.done, 0);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(ms_client_cancel(a, id), MS_ERR_NOT_FOUND);
  sim_free(&s);
}

static void quiet_connections_release_buffers_and_still_work(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  cfg.heartbeat_ms = 10000;
  cfg.idle_release_ms = 500;
  sim_init(&s, &cfg);
  ms_client *a = client_enc("a", MS_ENC_MSGPACK);
  ms_client *b = client_enc("b", MS_ENC_JSON);
  ms_client_on(b, "small", h_small, NULL);
  sim_add(&s, a);
  sim_add(&s, b);
  sim_pump(&s);
  sim_advance(&s, 600);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.hibernations, 2);
  /* Requests both ways work while they sleep: whole frames are read and
   * answered without waking them. */
  for (int i = 0; i < 3; i++) {
    res r = {0, 0, ""};
    ms_client_request(a, "b", "small", NULL, 0, NULL, on_res, &r, NULL);
    sim_advance(&s, 1);
    CHECK_EQ_INT(r.done, 1);
    CHECK_EQ_INT(r.err, 0);
    sim_advance(&s, 700); /* and quiet again */
  }
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.hibernations, 2); /* never woken, so never put back */
  /* Heartbeats keep working across sleep: nobody is dropped. */
  sim_advance(&s, 60000);
  CHECK_EQ_INT(ms_client_get_state(a), MS_CLIENT_READY);
  CHECK_EQ_INT(ms_client_get_state(b), MS_CLIENT_READY);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.services, 2);
  sim_free(&s);
}

/* Shutdown makes every connection dirty; releasing them in any order
 * (here the middle one first) leaves a consistent dirty list. */
static void release_while_dirty_keeps_the_dirty_list_consistent(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  sim_init(&s, &cfg);
  ms_client *c[3];
  for (int i = 0; i < 3; i++) {
    char name[8];
    snprintf(name, sizeof name, "s%d", i);
    c[i] = client_enc(name, MS_ENC_MSGPACK);
    sim_add(&s, c[i]);
  }
  sim_pump(&s);
  while (ms_hub_next_dirty(s.hub))
    ;
  ms_hub_shutdown(s.hub, s.now);
  int order[3] = {1, 2, 0};
  for (int k = 0; k < 3; k++) {
    sim_client *sc = &s.cl[order[k]];
    ms_hub_conn_release(sc->hc);
    sc->hc = NULL;
    sc->connected = 0;
    ms_client_disconnected(sc->c, s.now);
  }
  CHECK(ms_hub_next_dirty(s.hub) == NULL);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.connections, 0);
  CHECK_EQ_INT(st.services, 0);
  sim_free(&s);
}

typedef struct closes {
  int n;
  uint16_t code;
} closes;

static void on_state_close(ms_client *c, const ms_client_state_arg *a,
                           void *ud) {
  closes *k = ud;
  (void)c;
  if (a->close_code) {
    k->n++;
    k->code = a->close_code;
  }
}

typedef struct count_recs {
  int logs, gaps;
} count_recs;

static void count_rec(ms_client *c, const ms_record *r, void *ud) {
  count_recs *n = ud;
  (void)c;
  n->logs += r->kind == MS_RECORD_LOG;
  n->gaps += r->kind == MS_RECORD_GAP;
}

/* The liveness rule of PROTOCOL.md: a subscriber that says nothing at all
 * (its pongs never arrive) but keeps taking a flood, its socket buffer
 * filling and draining again, is reading and so alive: it is not closed
 * for silence (4008) however long the flood lasts. Once the flood stops,
 * nothing proves it alive any more: then three intervals of silence close
 * it with 4008. */
static void silent_subscriber_reading_a_flood_is_not_closed_4008(void) {
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  cfg.heartbeat_ms = 1000;
  cfg.max_message = 1u << 20;
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *a = client_enc("flood", MS_ENC_MSGPACK);
  closes k = {0, 0};
  ms_client_config wc;
  ms_client_config_init(&wc);
  wc.service = "reader";
  wc.watch = 1;
  wc.seed = 7;
  wc.reconnect = 0;
  wc.on_state = on_state_close;
  ms_client *w = NULL;
  CHECK_EQ_INT(ms_client_new(&w, &wc, &k, NULL), 0);
  ms_log_set_sink(w, NULL, NULL);
  sim_add(&s, a);
  int wi = sim_add(&s, w);
  count_recs got = {0, 0};
  ms_client_subscribe(w, "logs", NULL, count_rec, &got, NULL);
  sim_pump(&s);
  CHECK_EQ_INT(ms_client_get_state(w), MS_CLIENT_READY);
  s.cl[wi].muted = 1;
  s.cl[wi].drip = 512;
  /* Ten intervals of flood: 40 records of ~80 bytes every 50 ms. */
  int sent = 0;
  for (int step = 0; step < 200; step++) {
    for (int i = 0; i < 40; i++, sent++)
      ms_info(a, "flood record %06d ..................................", sent);
    sim_advance(&s, 50);
  }
  CHECK_EQ_INT(k.n, 0);
  CHECK_EQ_INT(ms_client_get_state(w), MS_CLIENT_READY);
  CHECK_EQ_INT(got.logs, sent);
  CHECK_EQ_INT(got.gaps, 0);
  /* Flood over: silence now counts. */
  sim_advance(&s, 2500);
  CHECK_EQ_INT(k.n, 0);
  sim_advance(&s, 1000);
  CHECK_EQ_INT(k.n, 1);
  CHECK_EQ_INT(k.code, 4008);
  sim_free(&s);
}

/* The feed budget: one feed of a pipelined flood reads MS_HUB_FEED_MESSAGES
 * messages and holds the rest (the connection neither reads nor counts as
 * finished meanwhile); each ms_hub_resume_input() reads one more share, so
 * another connection fed in between is served at once; ms_hub_tick() does
 * the same for transports that only tick. Nothing is lost. */
static void pipelined_input_is_read_a_share_at_a_time(void) {
  enum { N = 2000 };
  const int share = MS_HUB_FEED_MESSAGES;
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *fl = client_enc("flooder", MS_ENC_MSGPACK);
  ms_client *by = client_enc("bystander", MS_ENC_MSGPACK);
  ms_client *sv = client_enc("server", MS_ENC_MSGPACK);
  ms_client_on(sv, "small", h_small, NULL);
  int fi = sim_add(&s, fl);
  int bi = sim_add(&s, by);
  sim_add(&s, sv);
  sim_pump(&s);
  ms_log_set_level(fl, MS_LEVEL_INFO);
  ms_log_set_queue(fl, N);
  for (int i = 0; i < N; i++)
    ms_info(fl, "r%d", i);
  size_t len = 0;
  const uint8_t *p = ms_client_peek(fl, &len);
  ms_hub_conn *fh = s.cl[fi].hc;
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  uint64_t base = st.log_records;
  ms_hub_conn_feed(fh, p, len, s.now);
  ms_client_consume(fl, len);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records - base, share);
  CHECK_EQ_INT(ms_hub_conn_want_read(fh), 0);
  CHECK_EQ_INT(ms_hub_conn_want_write(fh), 1);
  CHECK(ms_hub_next_deadline(s.hub) <= s.now + 1);
  /* The bystander's request is read and routed at once, mid-flood. */
  res r = {0, 0, ""};
  ms_client_request(by, "server", "small", NULL, 0, NULL, on_res, &r, NULL);
  p = ms_client_peek(by, &len);
  ms_hub_conn_feed(s.cl[bi].hc, p, len, s.now);
  ms_client_consume(by, len);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.requests_routed, 1);
  CHECK_EQ_INT(st.log_records - base, share);
  /* One more share per resume, and per tick. */
  CHECK_EQ_INT(ms_hub_resume_input(s.hub, s.now), 1);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records - base, 2 * share);
  CHECK_EQ_INT(ms_hub_tick(s.hub, s.now + 1), 0);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records - base, 3 * share);
  sim_pump(&s);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records - base, N);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(ms_hub_conn_want_read(fh), 1);
  CHECK_EQ_INT(ms_hub_resume_input(s.hub, s.now), 0);
  sim_free(&s);
}

/* Held input waits while the connection's own output is backed up (the
 * backpressure that stops reading new input applies to it too), and no
 * turn is spent on it meanwhile; once the peer reads again it goes on,
 * and every request is answered. */
static void held_input_waits_for_backed_up_output(void) {
  enum { N = 2000 };
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  cfg.out_high_water = 4096;
  cfg.out_hard_limit = 1u << 20;
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *a = client_enc("asker", MS_ENC_MSGPACK);
  int ai = sim_add(&s, a);
  sim_pump(&s);
  res r[N];
  memset(r, 0, sizeof r);
  for (int i = 0; i < N; i++) /* each answered TARGET_SERVICE_NOT_FOUND */
    ms_client_request(a, "nobody", "x", NULL, 0, NULL, on_res, &r[i], NULL);
  s.cl[ai].stalled = 1;
  size_t len = 0;
  const uint8_t *p = ms_client_peek(a, &len);
  ms_hub_conn_feed(s.cl[ai].hc, p, len, s.now);
  ms_client_consume(a, len);
  ms_hub_stats st0, st;
  ms_hub_get_stats(s.hub, &st0);
  uint64_t errors0 = 0;
  for (size_t k = 0; k < sizeof st0.errors_by_code / sizeof st0.errors_by_code[0];
       k++)
    errors0 += st0.errors_by_code[k];
  CHECK(errors0 > 0 && errors0 < N); /* a share or two, then the mark */
  /* Output above the mark: resuming reads nothing, and says so. */
  CHECK_EQ_INT(ms_hub_resume_input(s.hub, s.now), 0);
  CHECK_EQ_INT(ms_hub_resume_input(s.hub, s.now), 0);
  ms_hub_get_stats(s.hub, &st);
  CHECK(memcmp(st.errors_by_code, st0.errors_by_code,
               sizeof st.errors_by_code) == 0);
  CHECK(ms_hub_next_deadline(s.hub) > s.now + 1);
  CHECK_EQ_INT(ms_hub_conn_want_read(s.cl[ai].hc), 0);
  CHECK_EQ_INT(ms_hub_conn_want_write(s.cl[ai].hc), 1);
  /* The peer reads again: the rest is read and answered. */
  s.cl[ai].stalled = 0;
  sim_pump(&s);
  int done = 0, notfound = 0;
  for (int i = 0; i < N; i++) {
    done += r[i].done;
    notfound += r[i].err == MS_ERR_TARGET_SERVICE_NOT_FOUND;
  }
  CHECK_EQ_INT(done, N);
  CHECK_EQ_INT(notfound, N);
  sim_free(&s);
}

/* A peer that sends a flood and goes away (the end of the stream, or a
 * failed write, comes while input is held): what it sent before the end
 * is still handled, all of it. */
static void held_input_is_handled_at_the_end_of_the_stream(void) {
  enum { N = 2000 };
  sim s;
  ms_hub_config cfg;
  small_hub(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *fl = client_enc("leaver", MS_ENC_MSGPACK);
  int fi = sim_add(&s, fl);
  sim_pump(&s);
  ms_log_set_level(fl, MS_LEVEL_INFO);
  ms_log_set_queue(fl, N);
  for (int i = 0; i < N; i++)
    ms_info(fl, "r%d", i);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  uint64_t base = st.log_records;
  size_t len = 0;
  const uint8_t *p = ms_client_peek(fl, &len);
  ms_hub_conn_feed(s.cl[fi].hc, p, len, s.now);
  ms_client_consume(fl, len);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records - base, MS_HUB_FEED_MESSAGES);
  sim_drop(&s, fi); /* end of stream, then released */
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records - base, N);
  CHECK_EQ_INT(ms_hub_resume_input(s.hub, s.now), 0);
  sim_free(&s);
}

/* A streamed HTTP answer whose reader is slow but steady is not cut for
 * a stall, though the hub only ticks at its own deadlines (the writes it
 * sees carry no time); once the reader stops, the answer is cut. */
static int stalled_events;
static void count_stall(ms_hub *h, int level, const char *text, void *ud) {
  (void)h, (void)level, (void)ud;
  if (strstr(text, "stalled"))
    stalled_events++;
}
static void endless_more(ms_hub *h, ms_conn *c, int done, void *ud) {
  (void)h, (void)ud;
  static char chunk[16384];
  if (done)
    return;
  memset(chunk, 'x', sizeof chunk);
  while (ms_conn_out_pending(c) < 256 * 1024)
    if (ms_conn_http_write(c, chunk, sizeof chunk) != 0)
      return;
}
static int big_answer(ms_hub *h, ms_conn *c, const ms_http_request *req,
                      void *ud) {
  (void)req, (void)ud;
  if (ms_conn_http_begin(c, 200, "text/plain", NULL) != 0)
    return -1;
  return ms_hub_http_stream(h, c, endless_more, NULL);
}
static void slow_http_reader_is_not_a_stall(void) {
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.heartbeat_ms = 1000;
  cfg.on_http = big_answer;
  cfg.on_event = count_stall;
  cfg.serve_viewer = 0;
  ms_hub *h = NULL;
  CHECK_EQ_INT(ms_hub_new(&h, &cfg, NULL, NULL), 0);
  int64_t now = 1000000;
  ms_hub_tick(h, now);
  ms_hub_conn *hc = NULL;
  CHECK_EQ_INT(ms_hub_accept(h, &hc, NULL, now), 0);
  static const char get[] = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
  ms_hub_conn_feed(hc, (const uint8_t *)get, sizeof get - 1, now);
  stalled_events = 0;
  size_t len = 0, total = 0;
  for (int i = 0; i < 3; i++) { /* more() runs on the hub's ticks */
    now += 1;
    ms_hub_tick(h, now);
  }
  ms_hub_conn_peek(hc, &len);
  CHECK(len > 64 * 1024);
  ms_hub_conn_consume(hc, 1000); /* the socket takes some */
  /* 10 s (over three times the stall limit): 1000 bytes every 100 ms,
   * ticks only when the hub is due. */
  for (int step = 0; step < 100; step++) {
    now += 100;
    if (ms_hub_next_deadline(h) <= now)
      ms_hub_tick(h, now);
    const uint8_t *p = ms_hub_conn_peek(hc, &len);
    CHECK(p != NULL && len > 1000);
    ms_hub_conn_consume(hc, 1000);
    total += 1000;
  }
  CHECK_EQ_INT(stalled_events, 0);
  CHECK(total == 100000);
  /* The reader stops: cut within two checks (6 s), not before three
   * intervals. */
  int64_t stopped = now;
  while (stalled_events == 0 && now < stopped + 10000) {
    now += 100;
    if (ms_hub_next_deadline(h) <= now)
      ms_hub_tick(h, now);
  }
  CHECK_EQ_INT(stalled_events, 1);
  CHECK(now - stopped >= 3000 && now - stopped <= 6100);
  ms_hub_del(h);
}

static const ms_test_case tests[] = {
    TEST(slow_http_reader_is_not_a_stall),
    TEST(release_while_dirty_keeps_the_dirty_list_consistent),
    TEST(quiet_connections_release_buffers_and_still_work),
    TEST(answer_too_large_once_json_gets_PAYLOAD_TOO_LARGE),
    TEST(reply_too_large_once_json_tells_both_sides),
    TEST(requester_that_stops_reading_is_closed_4029_and_others_go_on),
    TEST(log_too_large_to_ship_is_dropped_and_later_ones_flow),
    TEST(absurd_timeout_is_capped_not_overflowed),
    TEST(cancel_in_late_window_stops_on_late),
    TEST(silent_subscriber_reading_a_flood_is_not_closed_4008),
    TEST(pipelined_input_is_read_a_share_at_a_time),
    TEST(held_input_waits_for_backed_up_output),
    TEST(held_input_is_handled_at_the_end_of_the_stream),
};

MS_TEST_MAIN(tests)
