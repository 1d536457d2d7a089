/* Fuzz what a clustered hub reads from Redis: the bytes go through
 * hiredis's reader and the cluster driver's reply handling
 * (ms_rcl_fuzz_feed): command replies (renewal, registry dump, INFO, stream
 * history, lost-hub and name claims) and what the subscriber connection
 * is pushed (subscription confirmations, message / smessage with
 * hub-to-hub batches, claims, heartbeats, goodbyes and records). A hub
 * with a local service and a watcher of both streams takes the result.
 * Input: chunks [op][len: 2 bytes big-endian][bytes]; op bit 0 picks the
 * subscriber connection, else op >> 1 picks the reply awaited. */
#include "../ms_test_random.h"
#include "ms_drv_cluster.h"
#include "ms_hub_int.h"

#include "../unit/hubsim.h"

static void on_rec(ms_client *c, const ms_record *r, void *ud) {
  (void)c, (void)r, (void)ud;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.heartbeat_ms = 1000;
  cfg.max_message = 1 << 16;
  sim s;
  if (sim_init(&s, &cfg) != 0)
    return 0;
  /* Attached before any connection, as in a hub. */
  ms_rcl *rc = ms_rcl_fuzz_new(s.hub);
  if (!rc) {
    sim_free(&s);
    return 0;
  }
  ms_client *c = sim_client_new("svc", 0);
  if (c)
    sim_add(&s, c);
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
  ms_rcl_fuzz_feed(rc, data, size);
  sim_pump(&s);
  ms_rcl_del(rc);
  sim_free(&s);
  return 0;
}
