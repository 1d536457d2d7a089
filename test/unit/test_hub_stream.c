/* The hub's log and presence streams with a fake clock and no sockets:
 * the ring, filters, history, resume, gap accounting, slow subscribers. */
#include "ms_test.h"
#include "hubsim.h"

#include <stdio.h>

typedef struct got {
  int n;
  uint64_t seq[4096];
  char msg[4096][32];
  char svc[4096][16];
  int live;
  int gaps;
  uint64_t missed;
  uint64_t gap_seq;
  int ups, downs;
} got;

static void collect(ms_client *c, const ms_record *r, void *ud) {
  got *g = ud;
  (void)c;
  switch (r->kind) {
  case MS_RECORD_LIVE: g->live++; break;
  case MS_RECORD_GAP:
    g->gaps++;
    g->missed += r->missed;
    g->gap_seq = r->seq;
    break;
  case MS_RECORD_UP: g->ups++; break;
  case MS_RECORD_DOWN: g->downs++; break;
  case MS_RECORD_LOG:
    if (g->n < 4096) {
      g->seq[g->n] = r->seq;
      snprintf(g->msg[g->n], sizeof g->msg[0], "%.*s", (int)r->message.len,
               r->message.ptr);
      snprintf(g->svc[g->n], sizeof g->svc[0], "%.*s", (int)r->service.len,
               r->service.ptr);
      g->n++;
    }
    break;
  }
}

static const char *only_a[] = {"svc-a"};

static void base_cfg(ms_hub_config *cfg) {
  ms_hub_config_init(cfg);
  cfg->hub_id = "hub-test";
  cfg->heartbeat_ms = 1000000; /* liveness is not under test here */
}

static int all_ready(sim *s) {
  for (int i = 0; i < s->n; i++)
    if (ms_client_get_state(s->cl[i].c) != MS_CLIENT_READY)
      return 0;
  return 1;
}

static void records_reach_subscribers_with_filters_in_order(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *a = sim_client_new("svc-a", 0), *b = sim_client_new("svc-b", 0);
  ms_client *w1 = sim_client_new("watch1", 1), *w2 = sim_client_new("watch2", 1);
  sim_add(&s, a);
  sim_add(&s, b);
  sim_add(&s, w1);
  sim_add(&s, w2);
  got *g1 = calloc(1, sizeof *g1), *g2 = calloc(1, sizeof *g2);
  ms_client_subscribe(w1, "logs", NULL, collect, g1, NULL);
  ms_subscribe_opts o = {0};
  o.services = only_a;
  o.n_services = 1;
  o.min_level = MS_LEVEL_WARN;
  ms_client_subscribe(w2, "logs", &o, collect, g2, NULL);
  sim_pump(&s);
  CHECK(all_ready(&s));
  CHECK_EQ_INT(g1->live, 1);
  CHECK_EQ_INT(g2->live, 1);
  for (int i = 0; i < 20; i++) {
    ms_log(a, i % 2 ? MS_LEVEL_WARN : MS_LEVEL_INFO, "a%d", i);
    ms_log(b, MS_LEVEL_ERROR, "b%d", i);
  }
  sim_pump(&s);
  CHECK_EQ_INT(g1->n, 40);
  for (int i = 1; i < g1->n; i++)
    CHECK(g1->seq[i] == g1->seq[i - 1] + 1); /* no loss, in order */
  CHECK_EQ_INT(g2->n, 10);
  for (int i = 0; i < g2->n; i++) {
    char want[16];
    snprintf(want, sizeof want, "a%d", 2 * i + 1);
    CHECK_EQ_STR(g2->msg[i], want);
    CHECK_EQ_STR(g2->svc[i], "svc-a");
  }
  free(g1);
  free(g2);
  sim_free(&s);
}

static void contains_filter_is_an_ascii_case_insensitive_substring(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *w = sim_client_new("w", 1);
  sim_add(&s, a);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  ms_subscribe_opts o = {0};
  o.contains = "Disk";
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  ms_info(a, "Disk full");
  ms_info(a, "DISK full");
  ms_info(a, "no match");
  ms_info(a, "the disk");
  ms_info(a, "Dis k");
  sim_pump(&s);
  CHECK_EQ_INT(g->n, 3);
  CHECK_EQ_STR(g->msg[0], "Disk full");
  CHECK_EQ_STR(g->msg[1], "DISK full");
  CHECK_EQ_STR(g->msg[2], "the disk");
  free(g);
  sim_free(&s);
}

static void history_returns_last_n_matching_then_live(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *b = sim_client_new("svc-b", 0);
  sim_add(&s, a);
  sim_add(&s, b);
  sim_pump(&s);
  for (int i = 0; i < 30; i++) {
    ms_info(a, "a%d", i);
    ms_info(b, "b%d", i);
  }
  sim_pump(&s);
  ms_client *w = sim_client_new("w", 1);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  const char *only_b[] = {"svc-b"};
  ms_subscribe_opts o = {0};
  o.services = only_b;
  o.n_services = 1;
  o.history = 5;
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  CHECK_EQ_INT(g->live, 1);
  CHECK_EQ_INT(g->n, 5);
  CHECK_EQ_STR(g->msg[0], "b25");
  CHECK_EQ_STR(g->msg[4], "b29");
  ms_info(b, "b-live");
  sim_pump(&s);
  CHECK_EQ_INT(g->n, 6);
  CHECK_EQ_STR(g->msg[5], "b-live");
  free(g);
  sim_free(&s);
}

static void resume_after_reconnect_has_no_duplicates_and_no_holes(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *w = sim_client_new("w", 1);
  sim_add(&s, a);
  int wi = sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  ms_subscribe_opts o = {0};
  o.history = 100;
  o.services = only_a; /* not the clients' own reconnect diagnostics */
  o.n_services = 1;
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  for (int i = 0; i < 10; i++)
    ms_info(a, "m%d", i);
  sim_pump(&s);
  CHECK_EQ_INT(g->n, 10);
  sim_drop(&s, wi); /* the subscriber loses its connection */
  for (int i = 10; i < 25; i++)
    ms_info(a, "m%d", i);
  sim_pump(&s);
  sim_advance(&s, 200); /* backoff, reconnect, since_seq resume */
  CHECK_EQ_INT(ms_client_get_state(w), MS_CLIENT_READY);
  for (int i = 25; i < 30; i++)
    ms_info(a, "m%d", i);
  sim_pump(&s);
  CHECK_EQ_INT(g->n, 30);
  for (int i = 0; i < 30; i++) {
    char want[16];
    snprintf(want, sizeof want, "m%d", i);
    CHECK_EQ_STR(g->msg[i], want);
  }
  CHECK_EQ_INT(g->gaps, 0);
  CHECK_EQ_INT(g->live, 2);
  free(g);
  sim_free(&s);
}

static void since_seq_older_than_ring_gets_gap_with_count(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  cfg.log_ring = 10;
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *w = sim_client_new("w", 1);
  sim_add(&s, a);
  int wi = sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  ms_subscribe_opts o = {0};
  o.services = only_a;
  o.n_services = 1;
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  for (int i = 0; i < 5; i++)
    ms_info(a, "m%d", i);
  sim_pump(&s);
  CHECK_EQ_INT(g->n, 5); /* seq 1..5 seen */
  sim_drop(&s, wi);
  for (int i = 5; i < 30; i++) /* seq 6..30; the ring keeps 21..30 */
    ms_info(a, "m%d", i);
  sim_pump(&s);
  sim_advance(&s, 200);
  CHECK_EQ_INT(g->gaps, 1);
  CHECK_EQ_INT(g->missed, 15); /* seq 6..20 */
  CHECK_EQ_INT(g->gap_seq, 20);
  CHECK_EQ_INT(g->n, 15);
  CHECK_EQ_STR(g->msg[5], "m20");
  CHECK_EQ_STR(g->msg[14], "m29");
  free(g);
  sim_free(&s);
}

static void new_hub_id_means_start_over(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *w = sim_client_new("w", 1);
  sim_add(&s, a);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  ms_subscribe_opts o = {0};
  o.history = 3;
  o.services = only_a;
  o.n_services = 1;
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  for (int i = 0; i < 5; i++)
    ms_info(a, "old%d", i);
  sim_pump(&s);
  CHECK_EQ_INT(g->n, 5);
  /* A new hub (new id, seq restarts at 1) on the "same address". */
  for (int i = 0; i < s.n; i++)
    sim_drop(&s, i);
  ms_hub_del(s.hub);
  cfg.hub_id = "hub-test-2";
  CHECK_EQ_INT(ms_hub_new(&s.hub, &cfg, NULL, NULL), 0);
  sim_advance(&s, 200);
  CHECK(all_ready(&s));
  ms_info(a, "new0");
  sim_pump(&s);
  /* After the first five: at most svc-a's own reconnect notice (seq 1 on
   * the new hub, replayed as history) and then new0; nothing old again. */
  CHECK(g->n == 6 || g->n == 7);
  CHECK_EQ_STR(g->msg[g->n - 1], "new0");
  CHECK(g->seq[g->n - 1] <= 3); /* after the two reconnect notices */
  for (int i = 5; i < g->n; i++)
    CHECK(strncmp(g->msg[i], "old", 3) != 0);
  free(g);
  sim_free(&s);
}

typedef struct echo_count {
  int done, ok;
} echo_count;

static void echo_h(ms_client *c, ms_reply *r, const ms_request_arg *a,
                   void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_send_str(r, "pong");
}

static void echo_cb(ms_client *c, const ms_response_arg *a, void *ud) {
  echo_count *e = ud;
  (void)c;
  e->done++;
  e->ok += a->err == 0;
}

static void stalled_subscriber_gets_gap_while_routing_goes_on(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  cfg.out_high_water = 4096;
  cfg.log_ring = 1000;
  cfg.sub_queue = 50;
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *b = sim_client_new("svc-b", 0);
  ms_client *w = sim_client_new("w", 1);
  sim_add(&s, a);
  sim_add(&s, b);
  int wi = sim_add(&s, w);
  ms_client_on(b, "ping", echo_h, NULL);
  got *g = calloc(1, sizeof *g);
  ms_client_subscribe(w, "logs", NULL, collect, g, NULL);
  sim_pump(&s);
  CHECK(all_ready(&s));
  s.cl[wi].stalled = 1;
  char pad[201];
  memset(pad, 'x', 200);
  pad[200] = '\0';
  echo_count e = {0, 0};
  for (int i = 0; i < 300; i++) {
    ms_info(a, "r%03d %s", i, pad);
    if (i % 10 == 0)
      ms_client_request(a, "svc-b", "ping", NULL, 0, NULL, echo_cb, &e, NULL);
    sim_advance(&s, 1);
  }
  /* Requests kept flowing while the subscriber was stuck. */
  CHECK_EQ_INT(e.done, 30);
  CHECK_EQ_INT(e.ok, 30);
  s.cl[wi].stalled = 0;
  sim_pump(&s);
  CHECK_EQ_INT(g->gaps, 1);
  /* Every record is accounted for: delivered or reported missed. */
  CHECK_EQ_INT((uint64_t)g->n + g->missed, 300);
  CHECK(g->missed > 0);
  CHECK(g->n >= 50);
  /* Delivered in order; the newest one arrived. */
  for (int i = 1; i < g->n; i++)
    CHECK(g->seq[i] > g->seq[i - 1]);
  CHECK_EQ_INT(g->seq[g->n - 1], 300);
  /* It stays live afterwards. */
  ms_info(a, "after");
  sim_pump(&s);
  CHECK_EQ_STR(g->msg[g->n - 1], "after");
  free(g);
  sim_free(&s);
}

static void presence_history_replays_up_and_down(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *b = sim_client_new("svc-b", 0);
  sim_add(&s, a);
  int bi = sim_add(&s, b);
  sim_pump(&s);
  ms_client_stop(b, s.now);
  sim_pump(&s);
  (void)bi;
  ms_client *w = sim_client_new("w", 1);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  ms_subscribe_opts o = {0};
  o.history = 10;
  ms_client_subscribe(w, "presence", &o, collect, g, NULL);
  sim_pump(&s);
  CHECK_EQ_INT(g->ups, 2);
  CHECK_EQ_INT(g->downs, 1);
  CHECK_EQ_INT(g->live, 1);
  free(g);
  sim_free(&s);
}

/* Presence records as a subscriber gets them: the detail map packed
 * again, byte for byte. */
typedef struct pres {
  int n;
  char kind[16][8];
  char svc[16][16];
  uint8_t detail[16][96];
  size_t detail_len[16];
} pres;

static void collect_presence(ms_client *c, const ms_record *r, void *ud) {
  pres *p = ud;
  (void)c;
  if ((r->kind != MS_RECORD_UP && r->kind != MS_RECORD_DOWN) || p->n >= 16)
    return;
  int i = p->n++;
  snprintf(p->kind[i], sizeof p->kind[i], "%s",
           r->kind == MS_RECORD_UP ? "up" : "down");
  snprintf(p->svc[i], sizeof p->svc[i], "%.*s", (int)r->service.len,
           r->service.ptr);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (r->fields)
    msgpack_pack_object(&pk, *r->fields);
  p->detail_len[i] = sb.size <= sizeof p->detail[i] ? sb.size : 0;
  if (p->detail_len[i])
    memcpy(p->detail[i], sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

/* The record of service svc (kind), or -1. */
static int pres_find(const pres *p, const char *kind, const char *svc) {
  for (int i = 0; i < p->n; i++)
    if (!strcmp(p->kind[i], kind) && !strcmp(p->svc[i], svc))
      return i;
  return -1;
}

static void presence_detail_has_reason_and_instance(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *w = sim_client_new("w", 1);
  sim_add(&s, w);
  pres *live = calloc(1, sizeof *live), *hist = calloc(1, sizeof *hist);
  CHECK(live && hist);
  ms_client_subscribe(w, "presence", NULL, collect_presence, live, NULL);
  sim_pump(&s);
  ms_client_config cc;
  ms_client_config_init(&cc);
  cc.service = "svc-i";
  cc.instance = "i-1";
  ms_client *a = NULL;
  CHECK_EQ_INT(ms_client_new(&a, &cc, NULL, NULL), 0);
  ms_log_set_sink(a, NULL, NULL);
  sim_add(&s, a);
  ms_client *b = sim_client_new("svc-b", 0);
  sim_add(&s, b);
  sim_pump(&s);
  ms_client_stop(a, s.now);
  ms_client_stop(b, s.now);
  sim_pump(&s);
  static const uint8_t up_i[] = {0x81, 0xa8, 'i', 'n', 's', 't', 'a',
                                 'n',  'c',  'e', 0xa3, 'i', '-', '1'};
  static const uint8_t up_b[] = {0x80};
  static const uint8_t down_i[] = {
      0x82, 0xa6, 'r', 'e', 'a', 's', 'o', 'n', 0xa6, 'c', 'l', 'o', 's',
      'e',  'd',  0xa8, 'i', 'n', 's', 't', 'a', 'n', 'c', 'e', 0xa3, 'i',
      '-',  '1'};
  static const uint8_t down_b[] = {0x81, 0xa6, 'r', 'e', 'a', 's', 'o', 'n',
                                   0xa6, 'c',  'l', 'o', 's', 'e', 'd'};
  /* Live, then the same from the history. */
  ms_client *w2 = sim_client_new("w2", 1);
  sim_add(&s, w2);
  ms_subscribe_opts o = {0};
  o.history = 16;
  ms_client_subscribe(w2, "presence", &o, collect_presence, hist, NULL);
  sim_pump(&s);
  for (int k = 0; k < 2; k++) {
    const pres *p = k ? hist : live;
    int i = pres_find(p, "up", "svc-i");
    CHECK(i >= 0);
    CHECK_MEM(p->detail[i], p->detail_len[i], up_i, sizeof up_i);
    i = pres_find(p, "up", "svc-b");
    CHECK(i >= 0);
    CHECK_MEM(p->detail[i], p->detail_len[i], up_b, sizeof up_b);
    i = pres_find(p, "down", "svc-i");
    CHECK(i >= 0);
    CHECK_MEM(p->detail[i], p->detail_len[i], down_i, sizeof down_i);
    i = pres_find(p, "down", "svc-b");
    CHECK(i >= 0);
    CHECK_MEM(p->detail[i], p->detail_len[i], down_b, sizeof down_b);
  }
  free(live);
  free(hist);
  sim_free(&s);
}

/* A log record's fields as the store hook and a subscriber get them, from
 * a MessagePack client and a JSON one. */
typedef struct fields_seen {
  int n;
  uint8_t b[4][128];
  size_t len[4];
} fields_seen;

static void keep_bytes(fields_seen *f, const uint8_t *p, size_t n) {
  if (f->n < 4) {
    f->len[f->n] = n <= sizeof f->b[0] ? n : 0;
    if (f->len[f->n])
      memcpy(f->b[f->n], p, n);
    f->n++;
  }
}

static void on_hub_record(ms_hub *h, const ms_hub_record *r, void *ud) {
  (void)h;
  keep_bytes(ud, r->fields, r->fields_len);
}

static void collect_fields(ms_client *c, const ms_record *r, void *ud) {
  (void)c;
  if (r->kind != MS_RECORD_LOG || !r->fields)
    return;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_object(&pk, *r->fields);
  keep_bytes(ud, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void log_fields_reach_store_and_subscribers_as_logged(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  fields_seen *stored = calloc(1, sizeof *stored);
  fields_seen *got_f = calloc(1, sizeof *got_f);
  CHECK(stored && got_f);
  cfg.on_record = on_hub_record;
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_hub_del(s.hub); /* again, with the hook's user data */
  CHECK_EQ_INT(ms_hub_new(&s.hub, &cfg, stored, NULL), 0);
  ms_client *w = sim_client_new("w", 1);
  ms_client *a = sim_client_new("svc-a", 0);
  ms_client_config cc;
  ms_client_config_init(&cc);
  cc.service = "svc-j";
  cc.encoding = MS_ENC_JSON;
  ms_client *j = NULL;
  CHECK_EQ_INT(ms_client_new(&j, &cc, NULL, NULL), 0);
  ms_log_set_sink(j, NULL, NULL);
  sim_add(&s, w);
  sim_add(&s, a);
  sim_add(&s, j);
  ms_client_subscribe(w, "logs", NULL, collect_fields, got_f, NULL);
  sim_pump(&s);
  /* {k: "v", n: -5, d: 1.5, l: [1, {}], t: true} */
  static const uint8_t f[] = {0x85, 0xa1, 'k', 0xa1, 'v', 0xa1, 'n', 0xfb,
                              0xa1, 'd',  0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0,
                              0,    0xa1, 'l',  0x92, 0x01, 0x80, 0xa1, 't',
                              0xc3};
  CHECK_EQ_INT(ms_log_raw(a, MS_LEVEL_INFO, "m", 1, f, sizeof f), 0);
  CHECK_EQ_INT(ms_log_raw(j, MS_LEVEL_INFO, "m", 1, f, sizeof f), 0);
  sim_pump(&s);
  CHECK_EQ_INT(stored->n, 2);
  CHECK_EQ_INT(got_f->n, 2);
  for (int i = 0; i < 2; i++) {
    CHECK_MEM(stored->b[i], stored->len[i], f, sizeof f);
    CHECK_MEM(got_f->b[i], got_f->len[i], f, sizeof f);
  }
  /* No fields: an empty map. */
  CHECK_EQ_INT(ms_log(a, MS_LEVEL_INFO, "none"), 0);
  sim_pump(&s);
  CHECK_EQ_INT(stored->n, 3);
  CHECK_MEM(stored->b[2], stored->len[2], "\x80", 1);
  /* Fields are passed on as the client encoded them: {n: 5} with 5 as an
   * int8 and the key as a str8 stay so. */
  static const uint8_t wide[] = {0xde, 0x00, 0x01, 0xd9, 0x01, 'n', 0xd0, 5};
  CHECK_EQ_INT(ms_log_raw(a, MS_LEVEL_INFO, "w", 1, wide, sizeof wide), 0);
  sim_pump(&s);
  CHECK_EQ_INT(stored->n, 4);
  CHECK_MEM(stored->b[3], stored->len[3], wide, sizeof wide);
  free(stored);
  free(got_f);
  sim_free(&s);
}

static void log_records_wait_in_ring_until_connected(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *w = sim_client_new("w", 1);
  ms_log_set_queue(a, 5);
  for (int i = 0; i < 8; i++) /* not connected yet: 3 oldest dropped */
    ms_info(a, "early%d", i);
  CHECK_EQ_INT(ms_log_queued(a), 5);
  CHECK_EQ_INT(ms_log_dropped(a), 3);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  ms_client_subscribe(w, "logs", NULL, collect, g, NULL);
  sim_pump(&s);
  sim_add(&s, a);
  sim_pump(&s);
  CHECK_EQ_INT(ms_log_queued(a), 0);
  CHECK_EQ_INT(g->n, 5);
  CHECK_EQ_STR(g->msg[0], "early3");
  CHECK_EQ_STR(g->msg[4], "early7");
  free(g);
  sim_free(&s);
}

static void log_below_level_is_dropped_at_once(void) {
  ms_client *a = sim_client_new("svc-a", 0);
  ms_log_set_level(a, MS_LEVEL_WARN);
  CHECK_EQ_INT(ms_info(a, "quiet"), MS_ERR_LIMIT);
  CHECK_EQ_INT(ms_warn(a, "loud"), 0);
  CHECK_EQ_INT(ms_log_queued(a), 1);
  ms_log_set_level(a, MS_LEVEL_SILENT);
  CHECK_EQ_INT(ms_error(a, "nothing"), MS_ERR_LIMIT);
  CHECK_EQ_INT(ms_log_level_parse("warn"), MS_LEVEL_WARN);
  CHECK_EQ_INT(ms_log_level_parse("bogus"), -1);
  ms_client_del(a);
}


static uint64_t errors_with(ms_hub *h, int code) {
  ms_hub_stats st;
  ms_hub_get_stats(h, &st);
  return st.errors_by_code[-code - 401];
}

static void subscriptions_past_the_cap_get_too_many_subscriptions(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  cfg.max_subscriptions = 8;
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *w = sim_client_new("w", 1);
  sim_add(&s, a);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  for (int i = 0; i < 12; i++)
    ms_client_subscribe(w, "logs", NULL, collect, g, NULL);
  sim_pump(&s);
  CHECK_EQ_INT(g->live, 8);
  CHECK(errors_with(s.hub, MS_ERR_TOO_MANY_SUBSCRIPTIONS) == 4);
  /* The eight that were accepted work, and the connection stays. */
  int before = g->n; /* the refusals were logged by w's library */
  ms_info(a, "one");
  sim_pump(&s);
  CHECK_EQ_INT(g->n - before, 8);
  CHECK_EQ_STR(g->msg[g->n - 1], "one");
  CHECK_EQ_INT(ms_client_get_state(w), MS_CLIENT_READY);
  free(g);
  sim_free(&s);
}

static void oversized_filters_are_refused_before_allocation(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  cfg.max_filter_bytes = 4096;
  sim_init(&s, &cfg);
  ms_client *w = sim_client_new("w", 1);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  /* 65 names: over the per-filter limit (BAD_REQUEST). */
  static char names[65][129];
  const char *ptrs[65];
  for (int i = 0; i < 65; i++) {
    snprintf(names[i], sizeof names[i], "svc-%03d", i);
    ptrs[i] = names[i];
  }
  ms_subscribe_opts o = {0};
  o.services = ptrs;
  o.n_services = 65;
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  CHECK(errors_with(s.hub, MS_ERR_BAD_REQUEST) == 1);
  /* 40 names of 128 bytes: within the filter limit, over the bytes one
   * connection may hold (TOO_MANY_SUBSCRIPTIONS). */
  for (int i = 0; i < 40; i++) {
    memset(names[i], 'a' + i % 26, 128);
    names[i][0] = (char)('A' + i % 26);
    names[i][1] = (char)('A' + i / 26);
    names[i][128] = '\0';
  }
  o.n_services = 40;
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  CHECK(errors_with(s.hub, MS_ERR_TOO_MANY_SUBSCRIPTIONS) == 1);
  /* A long contains: BAD_REQUEST. */
  char *big = malloc(2000);
  memset(big, 'x', 1999);
  big[1999] = '\0';
  ms_subscribe_opts o2 = {0};
  o2.contains = big;
  ms_client_subscribe(w, "logs", &o2, collect, g, NULL);
  sim_pump(&s);
  CHECK(errors_with(s.hub, MS_ERR_BAD_REQUEST) == 2);
  CHECK_EQ_INT(g->live, 0);
  CHECK_EQ_INT(ms_client_get_state(w), MS_CLIENT_READY);
  free(big);
  free(g);
  sim_free(&s);
}

static void history_search_is_spread_over_ticks(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0), *w = sim_client_new("w", 1);
  ms_log_set_queue(a, 20000);
  sim_add(&s, a);
  sim_add(&s, w);
  sim_pump(&s);
  /* 5000 records, only the first 3 say "needle": finding them means
   * looking back over the whole ring, more than one step allows. */
  for (int i = 0; i < 5000; i++) {
    ms_info(a, i < 3 ? "needle %d" : "hay %d", i);
    if (i % 500 == 499)
      sim_pump(&s);
  }
  sim_pump(&s);
  got *g = calloc(1, sizeof *g);
  ms_subscribe_opts o = {0};
  o.contains = "needle";
  o.history = 3;
  ms_client_subscribe(w, "logs", &o, collect, g, NULL);
  sim_pump(&s);
  CHECK_EQ_INT(g->live, 0); /* not found yet: the rest waits for ticks */
  sim_advance(&s, 50);
  CHECK_EQ_INT(g->live, 1);
  CHECK_EQ_INT(g->n, 3);
  CHECK_EQ_STR(g->msg[0], "needle 0");
  CHECK_EQ_STR(g->msg[2], "needle 2");
  free(g);
  sim_free(&s);
}

static void a_watcher_cannot_log_under_a_registered_name(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("payments", 0);
  ms_client *fake = sim_client_new("payments", 1);
  ms_client *shipper = sim_client_new("build", 1);
  ms_client *w = sim_client_new("w", 1);
  sim_add(&s, a);
  sim_add(&s, fake);
  sim_add(&s, shipper);
  sim_add(&s, w);
  got *g = calloc(1, sizeof *g);
  ms_client_subscribe(w, "logs", NULL, collect, g, NULL);
  sim_pump(&s);
  CHECK(all_ready(&s));
  ms_info(a, "real");
  sim_pump(&s);
  ms_info(fake, "forged");
  sim_pump(&s);
  ms_info(shipper, "line");
  sim_pump(&s);
  CHECK_EQ_INT(g->n, 3);
  CHECK_EQ_STR(g->svc[0], "payments");
  CHECK_EQ_STR(g->svc[1], "payments (watch"); /* svc[] keeps 15 bytes */
  CHECK_EQ_STR(g->svc[2], "build"); /* a name no service holds: as is */
  free(g);
  sim_free(&s);
}

static const char *a_b_a[] = {"svc-a", "svc-b", "svc-a"};
static const char *only_b[] = {"svc-b"};
static const char *only_c[] = {"svc-c"};

static int count_svc(const got *g, const char *svc) {
  int n = 0;
  for (int i = 0; i < g->n; i++)
    n += strcmp(g->svc[i], svc) == 0;
  return n;
}

/* The service index: a record reaches the subscriptions naming its
 * service and the unfiltered ones, once each (a name given twice in one
 * filter included), also with several filters on one connection; a
 * subscription taken out of the index gets nothing more, and its name's
 * list can be emptied and filled again. */
static void service_index_offers_records_to_matching_filters_only(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *a = sim_client_new("svc-a", 0), *b = sim_client_new("svc-b", 0);
  ms_client *c = sim_client_new("svc-c", 0), *w = sim_client_new("w", 1);
  ms_client *w2 = sim_client_new("w2", 1);
  sim_add(&s, a);
  sim_add(&s, b);
  sim_add(&s, c);
  sim_add(&s, w);
  sim_add(&s, w2);
  got *g[5];
  for (int i = 0; i < 5; i++)
    g[i] = calloc(1, sizeof *g[i]);
  ms_subscribe_opts ab = {0}, ob = {0}, oc = {0};
  ab.services = a_b_a;
  ab.n_services = 3;
  ob.services = only_b;
  ob.n_services = 1;
  oc.services = only_c;
  oc.n_services = 1;
  uint64_t id_ab = 0, id_b = 0, id_all = 0;
  ms_client_subscribe(w, "logs", &ab, collect, g[0], &id_ab);
  ms_client_subscribe(w, "logs", &ob, collect, g[1], &id_b);
  ms_client_subscribe(w, "logs", NULL, collect, g[2], &id_all);
  ms_client_subscribe(w2, "logs", &oc, collect, g[3], NULL);
  sim_pump(&s);
  CHECK(all_ready(&s));
  for (int i = 0; i < 4; i++)
    CHECK_EQ_INT(g[i]->live, 1);
  ms_info(a, "a1");
  ms_info(b, "b1");
  ms_info(c, "c1");
  sim_pump(&s);
  CHECK_EQ_INT(g[0]->n, 2);
  CHECK_EQ_INT(count_svc(g[0], "svc-a"), 1);
  CHECK_EQ_INT(count_svc(g[0], "svc-b"), 1);
  CHECK_EQ_INT(g[1]->n, 1);
  CHECK_EQ_STR(g[1]->msg[0], "b1");
  CHECK_EQ_INT(g[2]->n, 3);
  CHECK_EQ_INT(g[3]->n, 1);
  CHECK_EQ_STR(g[3]->msg[0], "c1");
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records_out, 7);

  /* Out of the index: the only subscription naming svc-c, and one of the
   * two naming svc-b. */
  CHECK_EQ_INT(ms_client_unsubscribe(w, id_b), 0);
  sim_drop(&s, 4); /* w2 closes: its subscription goes with it */
  s.cl[4].c = NULL;
  ms_client_del(w2);
  sim_pump(&s);
  ms_info(a, "a2");
  ms_info(b, "b2");
  ms_info(c, "c2");
  sim_pump(&s);
  CHECK_EQ_INT(g[0]->n, 4);
  CHECK_EQ_INT(g[1]->n, 1);
  CHECK_EQ_INT(g[2]->n, 6);
  CHECK_EQ_INT(g[3]->n, 1);
  /* svc-c's list is filled again by a new subscription. */
  ms_client_subscribe(w, "logs", &oc, collect, g[4], NULL);
  sim_pump(&s);
  ms_info(c, "c3");
  ms_info(a, "a3");
  sim_pump(&s);
  CHECK_EQ_INT(g[4]->n, 1);
  CHECK_EQ_STR(g[4]->msg[0], "c3");
  CHECK_EQ_INT(g[0]->n, 5);
  CHECK_EQ_INT(g[2]->n, 8);
  /* Sequence numbers count every record; the filtered see jumps. */
  CHECK_EQ_INT(g[2]->seq[7], 8);
  for (int i = 0; i < 5; i++)
    free(g[i]);
  sim_free(&s);
}

typedef struct unsub_ctx {
  got g;
  ms_client *c;
  uint64_t ids[2];
  int at; /* unsubscribe both when this many records arrived */
} unsub_ctx;

static void collect_then_unsub(ms_client *c, const ms_record *r, void *ud) {
  unsub_ctx *u = ud;
  collect(c, r, &u->g);
  if (r->kind == MS_RECORD_LOG && u->g.n == u->at) {
    ms_client_unsubscribe(u->c, u->ids[0]);
    ms_client_unsubscribe(u->c, u->ids[1]);
  }
}

/* Subscriptions removed while records for them are being delivered (from
 * the record callback, with more of the batch already on the way): the
 * hub takes both out of the index (filtered and unfiltered), later
 * records are not sent for them, and the other connection's filters on
 * the same service go on without loss. */
static void unsubscribe_during_delivery_leaves_the_index(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0);
  ms_client *w = sim_client_new("w", 1), *ok = sim_client_new("ok", 1);
  sim_add(&s, a);
  sim_add(&s, w);
  sim_add(&s, ok);
  unsub_ctx *u = calloc(1, sizeof *u);
  got *go = calloc(1, sizeof *go), *go2 = calloc(1, sizeof *go2);
  u->c = w;
  u->at = 5;
  ms_subscribe_opts oa = {0};
  oa.services = only_a;
  oa.n_services = 1;
  ms_client_subscribe(w, "logs", &oa, collect_then_unsub, u, &u->ids[0]);
  ms_client_subscribe(w, "logs", NULL, collect_then_unsub, u, &u->ids[1]);
  ms_client_subscribe(ok, "logs", &oa, collect, go, NULL);
  ms_client_subscribe(ok, "logs", NULL, collect, go2, NULL);
  sim_pump(&s);
  CHECK(all_ready(&s));
  for (int i = 0; i < 20; i++)
    ms_info(a, "r%02d", i);
  sim_pump(&s);
  /* w saw its first records (both subscriptions), then nothing. */
  CHECK_EQ_INT(u->g.n, 5);
  CHECK_EQ_INT(go->n, 20);
  CHECK_EQ_INT(go2->n, 20);
  ms_hub_stats st0, st;
  ms_hub_get_stats(s.hub, &st0);
  for (int i = 0; i < 10; i++)
    ms_info(a, "later%d", i);
  sim_pump(&s);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records_out - st0.log_records_out, 20); /* ok's two */
  CHECK_EQ_INT(u->g.n, 5);
  CHECK_EQ_INT(go->n, 30);
  for (int i = 1; i < go->n; i++)
    CHECK(go->seq[i] == go->seq[i - 1] + 1);
  /* The same connection subscribes again: back in the index. */
  got *again = calloc(1, sizeof *again);
  ms_client_subscribe(w, "logs", &oa, collect, again, NULL);
  sim_pump(&s);
  ms_info(a, "again");
  sim_pump(&s);
  CHECK_EQ_INT(again->n, 1);
  CHECK_EQ_STR(again->msg[0], "again");
  free(u);
  free(go);
  free(go2);
  free(again);
  sim_free(&s);
}

typedef struct store_gaps {
  int n, flagged;
  uint64_t missed, seq;
  int logs;
} store_gaps;

static void collect_store_gap(ms_client *c, const ms_record *r, void *ud) {
  store_gaps *g = ud;
  (void)c;
  if (r->kind == MS_RECORD_LOG)
    g->logs++;
  if (r->kind != MS_RECORD_GAP)
    return;
  g->n++;
  g->missed += r->missed;
  g->seq = r->seq;
  const msgpack_object *f = r->fields;
  if (f && f->type == MSGPACK_OBJECT_MAP)
    for (uint32_t i = 0; i < f->via.map.size; i++) {
      const msgpack_object_kv *kv = &f->via.map.ptr[i];
      if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 5 &&
          !memcmp(kv->key.via.str.ptr, "store", 5) &&
          kv->val.type == MSGPACK_OBJECT_BOOLEAN && kv->val.via.boolean)
        g->flagged++;
    }
}

/* What the store could not keep is told to every logs subscriber (its
 * filter aside) as a gap marker with "store": true; the subscriber's own
 * record flow goes on, and the hub's count of records subscribers missed
 * does not grow (they did not miss them). */
static void store_gap_reaches_every_logs_subscriber(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  sim_init(&s, &cfg);
  ms_client *a = sim_client_new("svc-a", 0);
  ms_client *w = sim_client_new("w", 1), *w2 = sim_client_new("w2", 1);
  sim_add(&s, a);
  sim_add(&s, w);
  sim_add(&s, w2);
  store_gaps g = {0, 0, 0, 0, 0}, g2 = {0, 0, 0, 0, 0}, gp = {0, 0, 0, 0, 0};
  ms_subscribe_opts oc = {0};
  oc.services = only_c;
  oc.n_services = 1;
  ms_client_subscribe(w, "logs", NULL, collect_store_gap, &g, NULL);
  ms_client_subscribe(w2, "logs", &oc, collect_store_gap, &g2, NULL);
  ms_client_subscribe(w2, "presence", NULL, collect_store_gap, &gp, NULL);
  sim_pump(&s);
  CHECK(all_ready(&s));
  for (int i = 0; i < 5; i++)
    ms_info(a, "r%d", i);
  sim_pump(&s);
  CHECK_EQ_INT(ms_hub_store_gap(s.hub, 4, 3, s.now), 0);
  CHECK_EQ_INT(ms_hub_store_gap(s.hub, 4, 0, s.now), MS_ERR_INVALID_ARG);
  sim_pump(&s);
  ms_info(a, "after");
  sim_pump(&s);
  CHECK_EQ_INT(g.n, 1);
  CHECK_EQ_INT(g.missed, 3);
  CHECK_EQ_INT(g.seq, 4);
  CHECK_EQ_INT(g.flagged, 1);
  CHECK_EQ_INT(g.logs, 6);
  CHECK_EQ_INT(g2.n, 1); /* a filter on another service: told too */
  CHECK_EQ_INT(g2.flagged, 1);
  CHECK_EQ_INT(gp.n, 0); /* presence has no store */
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.log_records_missed, 0);
  sim_free(&s);
}

static const ms_test_case tests[] = {
    TEST(records_reach_subscribers_with_filters_in_order),
    TEST(contains_filter_is_an_ascii_case_insensitive_substring),
    TEST(history_returns_last_n_matching_then_live),
    TEST(resume_after_reconnect_has_no_duplicates_and_no_holes),
    TEST(since_seq_older_than_ring_gets_gap_with_count),
    TEST(new_hub_id_means_start_over),
    TEST(stalled_subscriber_gets_gap_while_routing_goes_on),
    TEST(presence_history_replays_up_and_down),
    TEST(presence_detail_has_reason_and_instance),
    TEST(log_fields_reach_store_and_subscribers_as_logged),
    TEST(log_records_wait_in_ring_until_connected),
    TEST(log_below_level_is_dropped_at_once),
    TEST(subscriptions_past_the_cap_get_too_many_subscriptions),
    TEST(oversized_filters_are_refused_before_allocation),
    TEST(history_search_is_spread_over_ticks),
    TEST(a_watcher_cannot_log_under_a_registered_name),
    TEST(service_index_offers_records_to_matching_filters_only),
    TEST(unsubscribe_during_delivery_leaves_the_index),
    TEST(store_gap_reaches_every_logs_subscriber),
};

MS_TEST_MAIN(tests)
