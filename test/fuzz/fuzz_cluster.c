/* Fuzz what a hub takes from the rest of its cluster: hub-to-hub messages
 * (ms_hub_cluster_deliver) and records in cluster order
 * (ms_hub_cluster_record). A hub with a stub cluster holds one local
 * service ("svc", a real client engine on an in-memory pipe) and believes
 * names starting with 'r' live on hub "hub-peer". The input, split at
 * 0xFF bytes, drives it: each part's first byte picks an action (deliver
 * the rest from hub-peer or from another hub, a log or presence record,
 * a request from svc to a remote name, time passing, hub-peer vanishing,
 * a claim answer). */
#include "../ms_test_random.h"
#include "ms_hub_int.h"

#include "../unit/hubsim.h"

typedef struct stub {
  uint64_t tag;
  int have_tag;
  uint64_t resolve_hid;
  int have_resolve;
  size_t sent;
} stub;

static void st_claim(void *ctx, const char *name, size_t len, uint64_t tag,
                     unsigned flags) {
  stub *s = ctx;
  (void)name, (void)len, (void)flags;
  s->tag = tag;
  s->have_tag = 1;
}
static void st_release(void *ctx, const char *name, size_t len) {
  (void)ctx, (void)name, (void)len;
}
static int st_locate(void *ctx, const char *name, size_t len,
                     const char **hub_id) {
  (void)ctx;
  if (len && name[0] == 'r') {
    *hub_id = "hub-peer";
    return 0;
  }
  return MS_ERR_NOT_FOUND;
}
static int st_resolve(void *ctx, const char *name, size_t len, uint64_t hid,
                      const uint8_t *msg, size_t n) {
  stub *s = ctx;
  (void)name, (void)len, (void)msg, (void)n;
  s->resolve_hid = hid;
  s->have_resolve = 1;
  return 0;
}
static int st_send(void *ctx, const char *hub_id, const uint8_t *msg,
                   size_t len) {
  stub *s = ctx;
  (void)hub_id, (void)msg, (void)len;
  s->sent++;
  return 0;
}
static int st_publish(void *ctx, int stream, const uint8_t *rec, size_t len) {
  (void)ctx, (void)stream, (void)rec, (void)len;
  return 0;
}

static void on_resp(ms_client *c, const ms_response_arg *arg, void *ud) {
  (void)c, (void)arg, (void)ud;
}

static void on_rec(ms_client *c, const ms_record *r, void *ud) {
  (void)c, (void)r, (void)ud;
}

static const ms_hub_cluster_ops stub_ops = {
    st_claim, st_release, st_locate, st_resolve, st_send, st_publish, NULL,
    NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.heartbeat_ms = 1000;
  cfg.max_message = 1 << 16;
  sim s;
  stub st;
  memset(&st, 0, sizeof st);
  if (sim_init(&s, &cfg) != 0)
    return 0;
  ms_hub_set_cluster(s.hub, &stub_ops, &st);
  ms_client *c = sim_client_new("svc", 0);
  if (!c) {
    sim_free(&s);
    return 0;
  }
  sim_add(&s, c);
  /* A watcher following both streams (one with history): the records,
   * holes, hidden records and gap markers below reach subscribers. */
  ms_client *w = sim_client_new("watcher", 1);
  if (w) {
    ms_subscribe_opts so;
    memset(&so, 0, sizeof so);
    ms_client_subscribe(w, "logs", &so, on_rec, NULL, NULL);
    so.history = 5;
    ms_client_subscribe(w, "presence", &so, on_rec, NULL, NULL);
    sim_add(&s, w);
  }
  sim_pump(&s);
  if (st.have_tag)
    ms_hub_cluster_claimed(s.hub, st.tag, 0, NULL, s.now);
  sim_pump(&s);
  uint64_t seq[2] = {0, 0};
  size_t i = 0;
  while (i < size) {
    size_t j = i;
    while (j < size && data[j] != 0xFF)
      j++;
    if (j > i) {
      uint8_t op = data[i];
      const uint8_t *p = data + i + 1;
      size_t n = j - i - 1;
      switch (op % 13) {
      case 0: ms_hub_cluster_deliver(s.hub, "hub-peer", p, n, s.now); break;
      case 1: ms_hub_cluster_deliver(s.hub, "hub-other", p, n, s.now); break;
      case 2:
      case 3: {
        int k = op % 13 - 2;
        seq[k] += 1 + (n ? p[0] % 3 : 0); /* sometimes a jump */
        if (op & 0x80) /* this hub's, shown here already */
          ms_hub_cluster_record_shown(s.hub, k, seq[k], p, n, s.now);
        else
          ms_hub_cluster_record(s.hub, k, seq[k], p, n, s.now);
        break;
      }
      case 8: { /* a hole the cluster will never use */
        int k = op & 0x80 ? 1 : 0;
        seq[k] += n ? p[0] : 1;
        ms_hub_cluster_skip(s.hub, k, seq[k], s.now);
        break;
      }
      case 9:
        ms_hub_cluster_missed(s.hub, op & 0x80 ? 1 : 0, n, s.now);
        break;
      case 10: /* the streams away (records kept here) or back */
        ms_hub_cluster_streams(s.hub, op & 0x80 ? 1 : 0, s.now);
        if (n && w) /* a record of our own meanwhile */
          ms_log(c, MS_LEVEL_INFO, "%.*s", (int)n, (const char *)p);
        /* Local numbering moves the hub past the cluster's seqs. */
        for (int k = 0; k < 2; k++)
          if (ms_hub_cluster_last_seq(s.hub, k) > seq[k])
            seq[k] = ms_hub_cluster_last_seq(s.hub, k);
        break;
      case 11:
        ms_hub_cluster_presence_lost(s.hub, (const char *)p, n, "hub-peer",
                                     s.now);
        break;
      case 12:
        ms_hub_cluster_rejoined(s.hub, "svc", 3, s.now);
        break;
      case 4: {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_int(&pk, (int)n);
        ms_client_request(c, n && p[0] & 1 ? "remote" : "nowhere", "ev",
                          (const uint8_t *)sb.data, sb.size, NULL, on_resp,
                          NULL, NULL);
        msgpack_sbuffer_destroy(&sb);
        break;
      }
      case 5: sim_advance(&s, n ? p[0] * 20 : 500); break;
      case 6:
        ms_hub_cluster_hub_down(s.hub, n && p[0] & 1 ? NULL : "hub-peer",
                                n && p[0] & 2 ? MS_ERR_CLUSTER_UNAVAILABLE
                                              : MS_ERR_TARGET_DISCONNECTED,
                                s.now);
        break;
      default:
        if (st.have_resolve) {
          ms_hub_cluster_resolved(s.hub, st.resolve_hid,
                                  n && p[0] & 1 ? "hub-peer" : NULL,
                                  MS_ERR_NOT_FOUND, s.now);
          st.have_resolve = 0;
        }
        ms_hub_cluster_lost(s.hub, (const char *)p, n, s.now);
        break;
      }
      sim_pump(&s);
    }
    i = j + 1;
  }
  sim_free(&s);
  return 0;
}
