/* The hub engine's cluster boundary with an in-memory stand-in for the rest
 * of the cluster (no Redis, fake clock): claims, lost names, requests to a
 * service on another hub, that hub vanishing, answers from the wrong hub,
 * records in cluster order. */
#include "ms_test.h"

#include "hubsim.h"

#include <microstream/ms_hub_cluster.h>

typedef struct stub {
  uint64_t tag;
  int claims, releases, sends, publishes;
  char last_hub[64];
  uint8_t last_msg[4096];
  size_t last_len;
  int last_stream; /* the last record published */
  uint8_t last_rec[512];
  size_t last_rec_len;
} stub;

static void st_claim(void *ctx, const char *name, size_t len, uint64_t tag,
                     unsigned flags) {
  stub *s = ctx;
  (void)name, (void)len, (void)flags;
  s->tag = tag;
  s->claims++;
}
static void st_release(void *ctx, const char *name, size_t len) {
  stub *s = ctx;
  (void)name, (void)len;
  s->releases++;
}
static int st_locate(void *ctx, const char *name, size_t len,
                     const char **hub_id) {
  (void)ctx;
  if (len == 6 && memcmp(name, "remote", 6) == 0) {
    *hub_id = "hub-peer";
    return 0;
  }
  return MS_ERR_NOT_FOUND;
}
static int st_resolve(void *ctx, const char *name, size_t len, uint64_t hid,
                      const uint8_t *msg, size_t n) {
  (void)ctx, (void)name, (void)len, (void)hid, (void)msg, (void)n;
  return MS_ERR_CLUSTER_UNAVAILABLE;
}
static int st_send(void *ctx, const char *hub_id, const uint8_t *msg,
                   size_t len) {
  stub *s = ctx;
  s->sends++;
  snprintf(s->last_hub, sizeof s->last_hub, "%s", hub_id);
  s->last_len = len < sizeof s->last_msg ? len : sizeof s->last_msg;
  memcpy(s->last_msg, msg, s->last_len);
  return 0;
}
static int st_publish(void *ctx, int stream, const uint8_t *rec, size_t len) {
  stub *s = ctx;
  s->publishes++;
  s->last_stream = stream;
  s->last_rec_len = len < sizeof s->last_rec ? len : 0;
  if (s->last_rec_len)
    memcpy(s->last_rec, rec, len);
  return 0;
}
static const ms_hub_cluster_ops ops = {st_claim, st_release, st_locate,
                                       st_resolve, st_send, st_publish,
                                       NULL, NULL};

typedef struct watch {
  ms_client_state state;
  int err;
  uint16_t close_code;
} watch;

static void on_state(ms_client *c, const ms_client_state_arg *a, void *ud) {
  watch *w = ud;
  (void)c;
  w->state = a->state;
  if (a->err || a->close_code) {
    w->err = a->err;
    w->close_code = a->close_code;
  }
}

static ms_client *client(const char *name, watch *w) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.seed = 7;
  cfg.backoff_min_ms = 10;
  cfg.backoff_max_ms = 20;
  cfg.on_state = on_state;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, w, NULL) != 0)
    return NULL;
  ms_log_set_sink(c, NULL, NULL);
  return c;
}

/* A hub with the stub cluster and one client "svc", claim pending. */
static int setup(sim *s, stub *st, watch *w, ms_client **pc) {
  memset(st, 0, sizeof *st);
  memset(w, 0, sizeof *w);
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.heartbeat_ms = 1000;
  if (sim_init(s, &cfg) || ms_hub_set_cluster(s->hub, &ops, st))
    return -1;
  *pc = client("svc", w);
  if (!*pc)
    return -1;
  sim_add(s, *pc);
  sim_pump(s);
  return 0;
}

static void claim_ok_registers_and_close_releases(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  CHECK_EQ_INT(st.claims, 1);
  ms_hub_stats hs;
  ms_hub_get_stats(s.hub, &hs);
  CHECK_EQ_INT((int)hs.services, 0); /* not before the cluster agrees */
  CHECK(w.state != MS_CLIENT_READY);
  CHECK_EQ_INT(ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now), 0);
  sim_pump(&s);
  CHECK(w.state == MS_CLIENT_READY);
  ms_hub_get_stats(s.hub, &hs);
  CHECK_EQ_INT((int)hs.services, 1);
  CHECK_EQ_INT(st.publishes, 1); /* presence up, via the cluster */
  sim_drop(&s, 0);
  CHECK_EQ_INT(st.releases, 1);
  /* An answer for a claim nobody waits for any more. */
  CHECK_EQ_INT(ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now),
               MS_ERR_NOT_FOUND);
  sim_free(&s);
}

static void claim_held_elsewhere_is_duplicate_4009(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  ms_hub_cluster_claimed(s.hub, st.tag, MS_ERR_DUPLICATE_SERVICE_REGISTRATION,
                         "hub-other", s.now);
  sim_pump(&s);
  CHECK_EQ_INT(w.err, MS_ERR_DUPLICATE_SERVICE_REGISTRATION);
  CHECK_EQ_INT(w.close_code, 4009);
  CHECK_EQ_INT(st.releases, 0); /* never held, nothing to give back */
  sim_free(&s);
}

static void claim_unavailable_closes_4040_and_client_retries(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  ms_hub_cluster_claimed(s.hub, st.tag, MS_ERR_CLUSTER_UNAVAILABLE, NULL,
                         s.now);
  sim_pump(&s);
  CHECK_EQ_INT(w.close_code, 4040);
  CHECK(w.state != MS_CLIENT_STOPPED);
  sim_advance(&s, 200); /* backoff, then a new HELLO and a new claim */
  CHECK_EQ_INT(st.claims, 2);
  ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now);
  sim_pump(&s);
  CHECK(w.state == MS_CLIENT_READY);
  sim_free(&s);
}

static void claim_without_answer_times_out_unavailable(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  sim_advance(&s, 1100); /* one heartbeat interval */
  CHECK_EQ_INT(w.close_code, 4040);
  sim_free(&s);
}

static void lost_name_closes_the_holder_4009(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now);
  sim_pump(&s);
  CHECK(w.state == MS_CLIENT_READY);
  ms_hub_cluster_lost(s.hub, "svc", 3, s.now);
  sim_pump(&s);
  CHECK_EQ_INT(w.close_code, 4009);
  ms_hub_cluster_stats cs;
  ms_hub_get_cluster_stats(s.hub, &cs);
  CHECK_EQ_INT((int)cs.names_lost, 1);
  sim_free(&s);
}

typedef struct answer {
  int calls, err;
  int64_t value;
} answer;

static void on_answer(ms_client *c, const ms_response_arg *a, void *ud) {
  answer *r = ud;
  (void)c;
  r->calls++;
  r->err = a->err;
  if (a->data && a->data->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    r->value = (int64_t)a->data->via.u64;
}

/* svc (registered) sends a request to "remote" (on hub-peer); returns the
 * requesting hub's id of it, read from the message sent. */
static uint64_t remote_request(sim *s, stub *st, ms_client *c, answer *r) {
  ms_hub_cluster_claimed(s->hub, st->tag, 0, NULL, s->now);
  sim_pump(s);
  ms_request_opts o;
  memset(&o, 0, sizeof o);
  o.timeout_ms = 30000;
  ms_client_request(c, "remote", "work", NULL, 0, &o, on_answer, r, NULL);
  sim_pump(s);
  msgpack_zone z;
  msgpack_zone_init(&z, 512);
  msgpack_object obj;
  size_t off = 0;
  uint64_t hid = 0;
  if (st->sends && msgpack_unpack((const char *)st->last_msg, st->last_len,
                                  &off, &z, &obj) == MSGPACK_UNPACK_SUCCESS &&
      obj.type == MSGPACK_OBJECT_ARRAY && obj.via.array.size == 8 &&
      obj.via.array.ptr[0].via.u64 == 1)
    hid = obj.via.array.ptr[1].via.u64;
  msgpack_zone_destroy(&z);
  return hid;
}

static void target_hub_gone_fails_request_at_once(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  answer r = {0, 0, 0};
  CHECK(setup(&s, &st, &w, &c) == 0);
  CHECK(remote_request(&s, &st, c, &r) != 0);
  CHECK_EQ_STR(st.last_hub, "hub-peer");
  ms_hub_cluster_hub_down(s.hub, "hub-peer", MS_ERR_TARGET_DISCONNECTED,
                          s.now);
  sim_pump(&s);
  CHECK_EQ_INT(r.calls, 1);
  CHECK_EQ_INT(r.err, MS_ERR_TARGET_DISCONNECTED);
  sim_free(&s);
}

static void cluster_unreachable_fails_request_unavailable(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  answer r = {0, 0, 0};
  CHECK(setup(&s, &st, &w, &c) == 0);
  CHECK(remote_request(&s, &st, c, &r) != 0);
  ms_hub_cluster_hub_down(s.hub, NULL, MS_ERR_CLUSTER_UNAVAILABLE, s.now);
  sim_pump(&s);
  CHECK_EQ_INT(r.calls, 1);
  CHECK_EQ_INT(r.err, MS_ERR_CLUSTER_UNAVAILABLE);
  sim_free(&s);
}

static void only_the_target_hub_may_answer(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  answer r = {0, 0, 0};
  CHECK(setup(&s, &st, &w, &c) == 0);
  uint64_t hid = remote_request(&s, &st, c, &r);
  CHECK(hid != 0);
  uint8_t msg[16];
  size_t n = 0;
  msg[n++] = 0x93;      /* [2, hid, bin(7)] */
  msg[n++] = 0x02;
  msg[n++] = 0xcf;      /* uint64 hid */
  for (int i = 7; i >= 0; i--)
    msg[n++] = (uint8_t)(hid >> (8 * i));
  msg[n++] = 0xc4;
  msg[n++] = 0x01;
  msg[n++] = 0x07;
  ms_hub_cluster_deliver(s.hub, "hub-other", msg, n, s.now);
  sim_pump(&s);
  CHECK_EQ_INT(r.calls, 0);
  ms_hub_cluster_deliver(s.hub, "hub-peer", msg, n, s.now);
  sim_pump(&s);
  CHECK_EQ_INT(r.calls, 1);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT((int)r.value, 7);
  /* A malformed message is counted, not fatal. */
  CHECK_EQ_INT(ms_hub_cluster_deliver(s.hub, "hub-peer", msg, 3, s.now),
               MS_ERR_BAD_MESSAGE);
  sim_free(&s);
}

static void records_take_the_cluster_seq(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  /* [ts, level, service, message, bin({})] */
  static const uint8_t rec[] = {0x95, 0x01, 0x14, 0xa1, 's', 0xa2,
                                'h',  'i',  0xc4, 0x01, 0x80};
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 1, rec,
                                     sizeof rec, s.now), 0);
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 2, rec,
                                     sizeof rec, s.now), 0);
  CHECK_EQ_INT((int)ms_hub_cluster_last_seq(s.hub, MS_CLUSTER_LOGS), 2);
  /* An old one is ignored; a jump is taken (the gap is reported). */
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 2, rec,
                                     sizeof rec, s.now), 0);
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 9, rec,
                                     sizeof rec, s.now), 0);
  CHECK_EQ_INT((int)ms_hub_cluster_last_seq(s.hub, MS_CLUSTER_LOGS), 9);
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 10, rec, 4,
                                     s.now), MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT((int)ms_hub_cluster_last_seq(s.hub, MS_CLUSTER_PRESENCE), 0);
  sim_free(&s);
}

typedef struct seen {
  uint64_t seq[32];
  char msg[32][16];
  int n;
  uint64_t missed;
  int gaps;
} seen;

static void on_rec(ms_client *c, const ms_record *r, void *ud) {
  seen *v = ud;
  (void)c;
  if (r->kind == MS_RECORD_GAP) {
    v->gaps++;
    v->missed += r->missed;
  } else if (r->kind == MS_RECORD_LOG && v->n < 32) {
    v->seq[v->n] = r->seq;
    snprintf(v->msg[v->n], sizeof v->msg[0], "%.*s", (int)r->message.len,
             r->message.ptr);
    v->n++;
  }
}

static ms_client *watcher(sim *s, seen *v, uint64_t history) {
  ms_client *w = sim_client_new("w", 1);
  if (!w)
    return NULL;
  ms_subscribe_opts so;
  memset(&so, 0, sizeof so);
  so.history = history;
  memset(v, 0, sizeof *v);
  if (ms_client_subscribe(w, "logs", &so, on_rec, v, NULL) != 0)
    return NULL;
  sim_add(s, w);
  sim_pump(s);
  return w;
}

/* While the cluster's streams are away the hub shows its own records at
 * once; back in cluster order they are kept but not shown again; holes
 * the cluster declares are no loss; records whose seq was taken here are
 * reported in a gap marker. */
static void outage_records_holes_and_hidden(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now);
  sim_pump(&s);
  seen v;
  CHECK(watcher(&s, &v, 0) != NULL);
  static const uint8_t rec[] = {0x95, 0x01, 0x14, 0xa1, 's', 0xa2,
                                'h',  'i',  0xc4, 0x01, 0x80};
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 1, rec,
                                     sizeof rec, s.now), 0);
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 2, rec,
                                     sizeof rec, s.now), 0);
  sim_pump(&s);
  CHECK_EQ_INT(v.n, 2);
  /* Streams away: a record of our own is shown at once, and published. */
  ms_hub_cluster_streams(s.hub, 0, s.now);
  int pub = st.publishes;
  ms_log(c, MS_LEVEL_INFO, "own");
  sim_pump(&s);
  CHECK_EQ_INT(v.n, 3);
  CHECK_EQ_INT((int)v.seq[2], 3);
  CHECK_EQ_STR(v.msg[2], "own");
  CHECK(st.publishes > pub);
  ms_hub_cluster_streams(s.hub, 1, s.now);
  /* Back: seqs 4-5 never used, 6 shown, 7 (our own, shown) hidden. */
  ms_hub_cluster_skip(s.hub, MS_CLUSTER_LOGS, 5, s.now);
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 6, rec,
                                     sizeof rec, s.now), 0);
  CHECK_EQ_INT(ms_hub_cluster_record_shown(s.hub, MS_CLUSTER_LOGS, 7, rec,
                                           sizeof rec, s.now), 0);
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, 8, rec,
                                     sizeof rec, s.now), 0);
  sim_pump(&s);
  CHECK_EQ_INT(v.n, 5);
  CHECK_EQ_INT((int)v.seq[3], 6);
  CHECK_EQ_INT((int)v.seq[4], 8);
  CHECK_EQ_INT(v.gaps, 0);
  ms_hub_cluster_missed(s.hub, MS_CLUSTER_LOGS, 2, s.now);
  sim_pump(&s);
  CHECK_EQ_INT(v.gaps, 1);
  CHECK_EQ_INT((int)v.missed, 2);
  /* History skips the hole and the hidden record, with no gap. */
  seen h;
  CHECK(watcher(&s, &h, 10) != NULL);
  sim_pump(&s);
  CHECK_EQ_INT(h.n, 5);
  static const uint64_t want[] = {1, 2, 3, 6, 8};
  for (int i = 0; i < 5 && i < h.n; i++)
    CHECK_EQ_INT((int)h.seq[i], (int)want[i]);
  CHECK_EQ_INT(h.gaps, 0);
  /* A PRESENCE down said for a service of a vanished hub is published. */
  pub = st.publishes;
  CHECK_EQ_INT(ms_hub_cluster_presence_lost(s.hub, "gone", 4, "hub-x",
                                            s.now), 0);
  CHECK_EQ_INT(st.publishes, pub + 1);
  CHECK_EQ_INT(ms_hub_cluster_presence_lost(s.hub, "", 0, "hub-x", s.now),
               MS_ERR_INVALID_ARG);
  sim_free(&s);
}

/* What the stub saw published must be [ts, kind, service, bin(detail)]
 * with exactly these bytes (ts as published). */
static int presence_published_is(const stub *st, const char *kind,
                                 const char *svc, const uint8_t *detail,
                                 size_t detail_len) {
  if (st->last_stream != MS_CLUSTER_PRESENCE || st->last_rec_len < 2 ||
      st->last_rec[0] != 0x94)
    return 0;
  msgpack_zone z;
  if (!msgpack_zone_init(&z, 256))
    return 0;
  msgpack_object o;
  size_t off = 0;
  int ok = msgpack_unpack((const char *)st->last_rec, st->last_rec_len, &off,
                          &z, &o) == MSGPACK_UNPACK_SUCCESS &&
           o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size == 4 &&
           o.via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER;
  uint64_t ts = ok ? o.via.array.ptr[0].via.u64 : 0;
  msgpack_zone_destroy(&z);
  if (!ok)
    return 0;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 4);
  msgpack_pack_int64(&pk, (int64_t)ts);
  msgpack_pack_str_with_body(&pk, kind, strlen(kind));
  msgpack_pack_str_with_body(&pk, svc, strlen(svc));
  msgpack_pack_bin_with_body(&pk, detail, detail_len);
  ok = sb.size == st->last_rec_len &&
       memcmp(sb.data, st->last_rec, sb.size) == 0;
  msgpack_sbuffer_destroy(&sb);
  return ok;
}

typedef struct pres_seen {
  int n;
  uint8_t detail[96];
  size_t detail_len;
} pres_seen;

static void on_pres(ms_client *c, const ms_record *r, void *ud) {
  pres_seen *p = ud;
  (void)c;
  if (r->kind != MS_RECORD_UP && r->kind != MS_RECORD_DOWN)
    return;
  p->n++;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  if (r->fields)
    msgpack_pack_object(&pk, *r->fields);
  p->detail_len = sb.size <= sizeof p->detail ? sb.size : 0;
  if (p->detail_len)
    memcpy(p->detail, sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void presence_detail_of_lost_and_rejoined_services(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now);
  sim_pump(&s);
  static const uint8_t lost[] = {
      0x82, 0xa6, 'r', 'e', 'a', 's', 'o', 'n', 0xa8, 'h', 'u', 'b', '_',
      'l',  'o',  's', 't', 0xa3, 'h', 'u', 'b', 0xa5, 'h', 'u', 'b', '-',
      'x'};
  static const uint8_t rejoined[] = {0x81, 0xa6, 'r', 'e', 'a', 's', 'o',
                                     'n',  0xa8, 'r', 'e', 'j', 'o', 'i',
                                     'n',  'e',  'd'};
  CHECK_EQ_INT(ms_hub_cluster_presence_lost(s.hub, "gone", 4, "hub-x",
                                            s.now), 0);
  CHECK(presence_published_is(&st, "down", "gone", lost, sizeof lost));
  ms_hub_cluster_rejoined(s.hub, "svc", 3, s.now);
  CHECK(presence_published_is(&st, "up", "svc", rejoined, sizeof rejoined));
  /* With the cluster's streams away the hub keeps and shows it itself,
   * with the same detail. */
  ms_client *wc = sim_client_new("w", 1);
  CHECK(wc != NULL);
  pres_seen p;
  memset(&p, 0, sizeof p);
  CHECK_EQ_INT(ms_client_subscribe(wc, "presence", NULL, on_pres, &p, NULL),
               0);
  sim_add(&s, wc);
  sim_pump(&s);
  ms_hub_cluster_streams(s.hub, 0, s.now);
  int n = p.n;
  CHECK_EQ_INT(ms_hub_cluster_presence_lost(s.hub, "gone", 4, "hub-x",
                                            s.now), 0);
  sim_pump(&s);
  CHECK(presence_published_is(&st, "down", "gone", lost, sizeof lost));
  CHECK_EQ_INT(p.n, n + 1);
  CHECK_MEM(p.detail, p.detail_len, lost, sizeof lost);
  sim_free(&s);
}

typedef struct log_seen {
  int n;
  uint8_t fields[128];
  size_t fields_len;
} log_seen;

static void on_log_fields(ms_client *c, const ms_record *r, void *ud) {
  log_seen *v = ud;
  (void)c;
  if (r->kind != MS_RECORD_LOG || !r->fields)
    return;
  v->n++;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_object(&pk, *r->fields);
  v->fields_len = sb.size <= sizeof v->fields ? sb.size : 0;
  if (v->fields_len)
    memcpy(v->fields, sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

/* A log record goes to the cluster as [ts, level, service, message,
 * bin(fields)] with the fields as logged, and one from the cluster reaches
 * a subscriber with its fields. */
static void log_record_fields_to_and_from_the_cluster(void) {
  sim s;
  stub st;
  watch w;
  ms_client *c;
  CHECK(setup(&s, &st, &w, &c) == 0);
  ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now);
  sim_pump(&s);
  ms_log_set_clock(c, NULL, NULL);
  /* {k: "v", n: -5, l: [1, {}]} */
  static const uint8_t f[] = {0x83, 0xa1, 'k', 0xa1, 'v', 0xa1, 'n', 0xfb,
                              0xa1, 'l',  0x92, 0x01, 0x80};
  int pub = st.publishes;
  CHECK_EQ_INT(ms_log_raw(c, MS_LEVEL_WARN, "hi", 2, f, sizeof f), 0);
  sim_pump(&s);
  CHECK_EQ_INT(st.publishes, pub + 1);
  CHECK_EQ_INT(st.last_stream, MS_CLUSTER_LOGS);
  /* [ts, 30, "svc", "hi", bin(f)]: ts is the hub's (the client sent
   * none), the rest byte for byte. */
  CHECK(st.last_rec_len > 2 && st.last_rec[0] == 0x95);
  static const uint8_t tail[] = {30, 0xa3, 's', 'v', 'c', 0xa2, 'h', 'i',
                                 0xc4, sizeof f};
  size_t tl = sizeof tail + sizeof f;
  CHECK(st.last_rec_len > tl + 1);
  const uint8_t *t = st.last_rec + st.last_rec_len - tl;
  CHECK_MEM(t, sizeof tail, tail, sizeof tail);
  CHECK_MEM(t + sizeof tail, sizeof f, f, sizeof f);
  /* From the cluster: [1, 20, "s", "hi", bin(f)]. */
  log_seen v;
  memset(&v, 0, sizeof v);
  ms_client *wc = sim_client_new("w", 1);
  CHECK(wc != NULL);
  CHECK_EQ_INT(ms_client_subscribe(wc, "logs", NULL, on_log_fields, &v,
                                   NULL),
               0);
  sim_add(&s, wc);
  sim_pump(&s);
  uint8_t rec[64] = {0x95, 0x01, 0x14, 0xa1, 's', 0xa2, 'h', 'i', 0xc4,
                     sizeof f};
  memcpy(rec + 10, f, sizeof f);
  uint64_t seq = ms_hub_cluster_last_seq(s.hub, MS_CLUSTER_LOGS) + 1;
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, seq, rec,
                                     10 + sizeof f, s.now), 0);
  sim_pump(&s);
  CHECK_EQ_INT(v.n, 1);
  CHECK_MEM(v.fields, v.fields_len, f, sizeof f);
  /* Fields that are not a map, or not well formed: refused. */
  rec[10] = 0x93;
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, seq + 1, rec,
                                     10 + sizeof f, s.now),
               MS_ERR_BAD_MESSAGE);
  rec[10] = 0x84;
  CHECK_EQ_INT(ms_hub_cluster_record(s.hub, MS_CLUSTER_LOGS, seq + 1, rec,
                                     10 + sizeof f, s.now),
               MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(v.n, 1);
  sim_free(&s);
}

static const ms_test_case tests[] = {
    TEST(claim_ok_registers_and_close_releases),
    TEST(presence_detail_of_lost_and_rejoined_services),
    TEST(log_record_fields_to_and_from_the_cluster),
    TEST(claim_held_elsewhere_is_duplicate_4009),
    TEST(claim_unavailable_closes_4040_and_client_retries),
    TEST(claim_without_answer_times_out_unavailable),
    TEST(lost_name_closes_the_holder_4009),
    TEST(target_hub_gone_fails_request_at_once),
    TEST(cluster_unreachable_fails_request_unavailable),
    TEST(only_the_target_hub_may_answer),
    TEST(records_take_the_cluster_seq),
    TEST(outage_records_holes_and_hidden),
};

MS_TEST_MAIN(tests)
