/* The hub engine's side of the cluster boundary (ms_hub_cluster.h):
 * claims, requests to and from other hubs, hubs that vanish.
 *
 * Hub-to-hub messages are MessagePack arrays; payloads travel as bin so
 * that the target hub passes on the exact bytes the requester sent:
 *   [1, id, source, target, event, data_bin, timeout_ms, late_ms] REQUEST
 *   [2, id, data_bin]                                             RESPONSE
 *   [3, id, code, message, error_data_bin | nil, by_hub]          ERROR
 *       (by_hub: raised by the target's hub, e.g. TARGET_DISCONNECTED,
 *       not by the target: never forwarded after REQUEST_TIMEOUT)
 *   [4, id]                                                        CANCEL
 *   [5, name, tag]          is your holder of name stale? (replace-stale)
 *   [6, tag, freed]         the answer: freed (bool) = the name is free now
 * `id` is always the requesting hub's id of the request. */
#include "ms_hub_int.h"

#include <stdio.h>

enum {
  HM_REQUEST = 1,
  HM_RESPONSE = 2,
  HM_ERROR = 3,
  HM_CANCEL = 4,
  HM_PROBE = 5,
  HM_PROBED = 6
};

/* Hub ids are short; a bound keeps a confused peer from growing the
 * table without limit. */
#define MAX_PEERS 4096
#define MAX_HUB_ID 255
/* Envelope room on top of max_message for hub-to-hub messages. */
#define HM_OVERHEAD 1024

static int get_u64(const msgpack_object *o, uint64_t *v);
static int get_str(const msgpack_object *o, ms_str *s);

void ms_hub_cl_init(ms_hub *h) {
  ms_strmap_init(&h->peers, h->mem, UINT64_C(0x9e3779b97f4a7c15));
  ms_u64map_init(&h->claims, h->mem);
}

static void peer_free(ms_hub *h, hub_peer *p) {
  ms_u64map_free(&p->in_ids);
  ms_free(h->mem, p->id);
  ms_free(h->mem, p);
}

void ms_hub_cl_free(ms_hub *h) {
  size_t pos = 0;
  const ms_strmap_ent *e;
  while ((e = ms_strmap_next(&h->peers, &pos)) != NULL)
    peer_free(h, e->val);
  ms_strmap_free(&h->peers);
  ms_u64map_free(&h->claims);
}

int ms_hub_set_cluster(ms_hub *h, const ms_hub_cluster_ops *ops, void *ctx) {
  if (h && ms_life_dead(&h->life))
    return MS_ERR_STATE;
  if (h && !ops) { /* detach: a hub on its own from now on */
    h->clustered = 0;
    h->cl_local = 0;
    memset(&h->cl, 0, sizeof h->cl);
    h->cl_ctx = NULL;
    return 0;
  }
  if (!h || !ops->claim || !ops->release || !ops->locate ||
      !ops->resolve || !ops->send || !ops->publish)
    return MS_ERR_INVALID_ARG;
  if (h->stats.accepted_total)
    return MS_ERR_STATE;
  h->cl = *ops;
  h->cl_ctx = ctx;
  h->clustered = 1;
  return 0;
}

void ms_hub_get_cluster_stats(const ms_hub *h, ms_hub_cluster_stats *st) {
  *st = h->cstats;
}

static hub_peer *peer_get(ms_hub *h, const char *id, size_t len, int create) {
  hub_peer *p = ms_strmap_get(&h->peers, id, len);
  if (p || !create)
    return p;
  if (h->peers.n >= MAX_PEERS || len == 0 || len > MAX_HUB_ID)
    return NULL;
  p = ms_calloc(h->mem, 1, sizeof *p);
  if (!p)
    return NULL;
  p->id = ms_strndup(h->mem, id, len);
  p->id_len = len;
  ms_u64map_init(&p->in_ids, h->mem);
  if (!p->id || ms_strmap_put(&h->peers, p->id, len, p)) {
    peer_free(h, p);
    return NULL;
  }
  return p;
}

int ms_hub_cl_locate(ms_hub *h, ms_str name, hub_peer **peer) {
  const char *id = NULL;
  int rv = h->cl.locate(h->cl_ctx, name.ptr, name.len, &id);
  if (rv == MS_ERR_CLUSTER_UNAVAILABLE)
    return rv;
  if (rv || !id || strcmp(id, h->hub_id) == 0)
    return MS_ERR_NOT_FOUND; /* (held here means not registered yet) */
  hub_peer *p = peer_get(h, id, strlen(id), 1);
  if (!p)
    return MS_ERR_NOT_FOUND;
  *peer = p;
  return 0;
}

/* A route ends: its outcome counted (once, not after REQUEST_TIMEOUT). */
static void drop(ms_hub *h, route *r, int outcome) {
  if (!r->timed_out)
    ms_hub_route_done(r->rs, outcome, r->started, h->last_now);
  ms_hub_route_drop(h, r);
}

static int peer_send(ms_hub *h, hub_peer *p) {
  if (!h->clustered)
    return MS_ERR_CLUSTER_UNAVAILABLE;
  if (h->out.failed)
    return MS_ERR_NOMEM; /* never half a message */
  return h->cl.send(h->cl_ctx, p->id, (const uint8_t *)h->out.sb.data,
                    h->out.sb.size);
}

/* A payload as bin: its bytes as received, or the object encoded. */
static void pack_bin(ms_hub *h, msgpack_packer *pk, const ms_raw *raw,
                     const msgpack_object *obj) {
  if (raw->ptr) {
    msgpack_pack_bin_with_body(pk, raw->ptr, raw->len);
    return;
  }
  ms_mpbuf sb;
  ms_mpbuf_init(&sb, h->mem);
  msgpack_packer p2;
  msgpack_packer_init(&p2, &sb, ms_mpbuf_write);
  msgpack_pack_object(&p2, *obj);
  if (sb.failed)
    h->out.failed = 1; /* out of memory: the message is not sent half */
  else
    msgpack_pack_bin_with_body(pk, sb.sb.data, sb.sb.size);
  ms_mpbuf_destroy(&sb);
}

void ms_hub_cl_forward(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                       hub_peer *tp, int64_t timeout, int64_t late,
                       int64_t now) {
  route *r = ms_hub_route_add(h, hc, NULL, m->id, NULL, tp, m->event, m->name,
                              timeout, late, now);
  if (!r) {
    ms_hub_send_error(h, hc, m->id, "INTERNAL_SERVER_ERROR", "out of memory",
                      NULL);
    return;
  }
  msgpack_packer *pk = ms_hub_packer(h);
  msgpack_pack_array(pk, 8);
  msgpack_pack_uint8(pk, HM_REQUEST);
  msgpack_pack_uint64(pk, r->hid);
  char srcbuf[MS_SOURCE_MAX];
  size_t src_len;
  const char *src = ms_hub_source(h, hc, srcbuf, &src_len);
  msgpack_pack_str_with_body(pk, src, src_len);
  msgpack_pack_str_with_body(pk, m->name.ptr, m->name.len);
  msgpack_pack_str_with_body(pk, m->event.ptr, m->event.len);
  pack_bin(h, pk, &m->data_raw, &m->data);
  msgpack_pack_int64(pk, timeout);
  msgpack_pack_int64(pk, late);
  if (h->out.sb.size > h->cfg.max_message + HM_OVERHEAD) {
    drop(h, r, MS_OUTCOME_ERROR);
    ms_hub_send_error(h, hc, m->id, "PAYLOAD_TOO_LARGE",
                      "request larger than max_message", NULL);
    return;
  }
  int rv = tp ? peer_send(h, tp)
              : h->cl.resolve(h->cl_ctx, m->name.ptr, m->name.len, r->hid,
                              (const uint8_t *)h->out.sb.data, h->out.sb.size);
  if (rv != 0) {
    drop(h, r, MS_OUTCOME_ERROR);
    h->cstats.unavailable++;
    ms_hub_send_error(h, hc, m->id, "CLUSTER_UNAVAILABLE",
                      "the hub cannot reach its cluster", NULL);
    return;
  }
  if (tp)
    h->cstats.requests_out++;
  h->stats.requests_routed++;
}

int ms_hub_cluster_resolved(ms_hub *h, uint64_t hid, const char *hub_id,
                            int err, int64_t now) {
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  route *r = ms_u64map_get(&h->routes, hid);
  if (!r || r->tpeer || r->target || !r->origin)
    return MS_ERR_NOT_FOUND; /* ended meanwhile (timeout, cancel ...) */
  ms_hub_enter(h);
  h->last_now = now;
  hub_peer *p = NULL;
  if (hub_id && strcmp(hub_id, h->hub_id) != 0)
    p = peer_get(h, hub_id, strlen(hub_id), 1);
  int rv = 0;
  if (p) {
    r->tpeer = p;
    r->t_prev = NULL;
    r->t_next = p->out_head;
    if (p->out_head)
      p->out_head->t_prev = r;
    p->out_head = r;
    h->cstats.requests_out++;
  } else {
    ms_hub_conn *o = r->origin;
    uint64_t oid = r->origin_id;
    char msg[200];
    snprintf(msg, sizeof msg, "no service named '%s'",
             r->event + r->event_len + 1);
    drop(h, r, MS_OUTCOME_ERROR);
    if (err == MS_ERR_CLUSTER_UNAVAILABLE) {
      h->cstats.unavailable++;
      ms_hub_send_error(h, o, oid, "CLUSTER_UNAVAILABLE",
                        "the hub cannot reach its cluster", NULL);
    } else {
      ms_hub_send_error(h, o, oid, "TARGET_SERVICE_NOT_FOUND", msg, NULL);
    }
    rv = MS_ERR_NOT_FOUND;
  }
  ms_hub_leave(h);
  return rv;
}

void ms_hub_cl_answer(ms_hub *h, route *r, const ms_msg *m) {
  hub_peer *p = r->opeer;
  uint64_t oid = r->origin_id;
  int late = r->timed_out;
  drop(h, r, m->type == MS_MSG_RESPONSE ? MS_OUTCOME_OK : MS_OUTCOME_ERROR);
  msgpack_packer *pk = ms_hub_packer(h);
  if (m->type == MS_MSG_RESPONSE) {
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, HM_RESPONSE);
    msgpack_pack_uint64(pk, oid);
    pack_bin(h, pk, &m->data_raw, &m->data);
  } else {
    msgpack_pack_array(pk, 6);
    msgpack_pack_uint8(pk, HM_ERROR);
    msgpack_pack_uint64(pk, oid);
    msgpack_pack_str_with_body(pk, m->code.ptr, m->code.len);
    msgpack_pack_str_with_body(pk, m->message.ptr ? m->message.ptr : "",
                               m->message.len);
    if (m->extra_raw.ptr || m->extra.type != MSGPACK_OBJECT_NIL)
      pack_bin(h, pk, &m->extra_raw, &m->extra);
    else
      msgpack_pack_nil(pk);
    msgpack_pack_false(pk);
  }
  if (h->out.sb.size > h->cfg.max_message + HM_OVERHEAD) {
    ms_hub_cl_error(h, p, oid, "PAYLOAD_TOO_LARGE",
                    "response larger than max_message");
    return;
  }
  if (peer_send(h, p) == 0) {
    h->cstats.answers_out++;
    if (late)
      h->stats.late_routed++;
    else
      h->stats.responses_routed++;
  }
}

void ms_hub_cl_error(ms_hub *h, hub_peer *p, uint64_t id, const char *code,
                     const char *message) {
  msgpack_packer *pk = ms_hub_packer(h);
  msgpack_pack_array(pk, 6);
  msgpack_pack_uint8(pk, HM_ERROR);
  msgpack_pack_uint64(pk, id);
  msgpack_pack_str_with_body(pk, code, strlen(code));
  msgpack_pack_str_with_body(pk, message, strlen(message));
  msgpack_pack_nil(pk);
  msgpack_pack_true(pk);
  peer_send(h, p);
}

void ms_hub_cl_cancel(ms_hub *h, hub_peer *p, uint64_t hid) {
  msgpack_packer *pk = ms_hub_packer(h);
  msgpack_pack_array(pk, 2);
  msgpack_pack_uint8(pk, HM_CANCEL);
  msgpack_pack_uint64(pk, hid);
  peer_send(h, p);
}

/* ---- claims ---- */

static void claim_send(ms_hub *h, ms_hub_conn *hc, int64_t now);

void ms_hub_cl_claim(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  /* In the registry from now on, so that a second HELLO for the name on
   * this hub is a duplicate at once. */
  if (ms_strmap_put(&h->registry, hc->name, hc->name_len, hc)) {
    ms_hub_fail_session(h, hc, "INTERNAL_SERVER_ERROR", "out of memory",
                        MS_CLOSE_INTERNAL, now);
    return;
  }
  if (ms_u64map_put(&h->claims, hc->serial, hc)) {
    ms_strmap_del(&h->registry, hc->name, hc->name_len);
    ms_hub_fail_session(h, hc, "INTERNAL_SERVER_ERROR", "out of memory",
                        MS_CLOSE_INTERNAL, now);
    return;
  }
  hc->claiming = 1;
  hc->state = HC_WAIT_REPLACE;
  h->cstats.claims++;
  claim_send(h, hc, now); /* the cluster has one interval to answer */
}

static void claim_end(ms_hub *h, ms_hub_conn *hc) {
  ms_u64map_del(&h->claims, hc->serial);
  hc->claiming = 0;
}

static void claim_refused(ms_hub *h, ms_hub_conn *hc, int result,
                          const char *holder, int64_t now) {
  ms_strmap_del(&h->registry, hc->name, hc->name_len);
  char msg[400];
  if (result == MS_ERR_DUPLICATE_SERVICE_REGISTRATION) {
    h->cstats.claims_refused++;
    snprintf(msg, sizeof msg, "service '%s' is already registered%s%.64s",
             hc->name, holder ? " on hub " : "", holder ? holder : "");
    ms_hub_fail_session(h, hc, "DUPLICATE_SERVICE_REGISTRATION", msg,
                        MS_CLOSE_DUPLICATE, now);
  } else {
    h->cstats.claims_unavailable++;
    h->cstats.unavailable++;
    snprintf(msg, sizeof msg,
             "cannot register '%s': the hub cannot reach its cluster",
             hc->name);
    ms_hub_fail_session(h, hc, "CLUSTER_UNAVAILABLE", msg,
                        MS_CLOSE_CLUSTER_UNAVAILABLE, now);
  }
}

static void send_probed(ms_hub *h, hub_peer *p, uint64_t tag, int freed) {
  msgpack_packer *pk = ms_hub_packer(h);
  msgpack_pack_array(pk, 3);
  msgpack_pack_uint8(pk, HM_PROBED);
  msgpack_pack_uint64(pk, tag);
  if (freed)
    msgpack_pack_true(pk);
  else
    msgpack_pack_false(pk);
  peer_send(h, p);
}

static void claim_send(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  ms_heap_update(&h->live, &hc->live, now + h->cfg.heartbeat_ms);
  if (h->clustered) /* (else the deadline refuses it) */
    h->cl.claim(h->cl_ctx, hc->name, hc->name_len, hc->serial,
              h->cfg.replace_stale ? MS_CLAIM_REPLACE_STALE : 0);
}

void ms_hub_cl_claim_timeout(ms_hub *h, ms_hub_conn *hc, int64_t now) {
  if (hc->probing && h->clustered) {
    /* The holder's hub did not answer: claim again, taking the name if
     * that hub is gone. */
    hc->probing = 0;
    claim_send(h, hc, now);
    return;
  }
  claim_end(h, hc);
  claim_refused(h, hc, MS_ERR_CLUSTER_UNAVAILABLE, NULL, now);
}

/* Replace-stale across hubs: the hub that holds the name runs the same
 * check as for a local newcomer (ping, one interval) and answers. */
static int probe_holder(ms_hub *h, ms_hub_conn *hc, const char *holder,
                        int64_t now) {
  hub_peer *p = holder ? peer_get(h, holder, strlen(holder), 1) : NULL;
  if (!p)
    return -1;
  msgpack_packer *pk = ms_hub_packer(h);
  msgpack_pack_array(pk, 3);
  msgpack_pack_uint8(pk, HM_PROBE);
  msgpack_pack_str_with_body(pk, hc->name, hc->name_len);
  msgpack_pack_uint64(pk, hc->serial);
  if (peer_send(h, p) != 0)
    return -1;
  hc->probing = 1;
  hc->probed = 1;
  /* One interval there, plus the way back. */
  ms_heap_update(&h->live, &hc->live, now + 2 * h->cfg.heartbeat_ms);
  return 0;
}

void ms_hub_cl_probe_alive(ms_hub *h, ms_hub_conn *hc) {
  hub_peer *p = hc->probe_peer;
  hc->probe_peer = NULL;
  send_probed(h, p, hc->probe_tag, 0);
}

static void on_peer_probe(ms_hub *h, hub_peer *p, const msgpack_object *a,
                          uint32_t n, int64_t now) {
  ms_str name;
  uint64_t tag;
  if (n < 3 || get_str(&a[1], &name) || get_u64(&a[2], &tag)) {
    h->cstats.bad_messages++;
    return;
  }
  ms_hub_conn *hc = ms_strmap_get(&h->registry, name.ptr, name.len);
  if (!hc || !hc->registered) {
    send_probed(h, p, tag, 1); /* not held here (any more) */
    return;
  }
  if (hc->replace_waiter || hc->probe_peer || hc->state != HC_READY) {
    send_probed(h, p, tag, 0);
    return;
  }
  hc->probe_peer = p;
  hc->probe_tag = tag;
  hc->probe_deadline = now + h->cfg.heartbeat_ms;
  hc->last_rx = MS_MIN(hc->last_rx, now - 1);
  if (hc->sio)
    ms_hub_sio_ping(h, hc); /* its own liveness closes it if silent */
  else
    ms_conn_ping(hc->ws, (const uint8_t *)"replace", 7);
  ms_hub_mark_dirty(h, hc);
  ms_heap_update(&h->live, &hc->live, hc->probe_deadline);
}

static void on_peer_probed(ms_hub *h, const msgpack_object *a, uint32_t n,
                           int64_t now) {
  uint64_t tag;
  if (n < 3 || get_u64(&a[1], &tag) || a[2].type != MSGPACK_OBJECT_BOOLEAN) {
    h->cstats.bad_messages++;
    return;
  }
  ms_hub_conn *hc = ms_u64map_get(&h->claims, tag);
  if (!hc || !hc->probing)
    return;
  hc->probing = 0;
  if (a[2].via.boolean) {
    claim_send(h, hc, now); /* freed: claim again */
  } else {
    claim_end(h, hc);
    claim_refused(h, hc, MS_ERR_DUPLICATE_SERVICE_REGISTRATION, NULL, now);
  }
}

int ms_hub_cluster_claimed(ms_hub *h, uint64_t tag, int result,
                           const char *holder, int64_t now) {
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  ms_hub_conn *hc = ms_u64map_get(&h->claims, tag);
  if (!hc || !hc->claiming)
    return MS_ERR_NOT_FOUND;
  ms_hub_enter(h);
  h->last_now = now;
  if (result == MS_ERR_DUPLICATE_SERVICE_REGISTRATION &&
      h->cfg.replace_stale && !hc->probed &&
      probe_holder(h, hc, holder, now) == 0) {
    ms_hub_leave(h);
    return 0; /* still claiming: the holder's hub answers */
  }
  claim_end(h, hc);
  ms_heap_remove(&h->live, &hc->live);
  if (result == 0) {
    if (ms_hub_register(h, hc, now))
      ms_hub_fail_session(h, hc, "INTERNAL_SERVER_ERROR", "out of memory",
                          MS_CLOSE_INTERNAL, now);
  } else {
    claim_refused(h, hc, result, holder, now);
  }
  /* Liveness resumes from here (the live check recomputes it). */
  if (!hc->released)
    ms_heap_update(&h->live, &hc->live, now + 1);
  ms_hub_leave(h);
  return 0;
}

void ms_hub_cl_conn_down(ms_hub *h, ms_hub_conn *hc) {
  if (hc->claiming) {
    /* The answer may still come: ms_hub_cluster_claimed() then says the
     * claim is no longer wanted. */
    claim_end(h, hc);
    ms_strmap_del(&h->registry, hc->name, hc->name_len);
  } else if (hc->registered) {
    h->cl.release(h->cl_ctx, hc->name, hc->name_len);
  }
  if (hc->probe_peer) {
    /* Released above: the other hub's newcomer may claim it now. */
    hub_peer *p = hc->probe_peer;
    hc->probe_peer = NULL;
    send_probed(h, p, hc->probe_tag, 1);
  }
}

void ms_hub_cluster_lost(ms_hub *h, const char *name, size_t len,
                         int64_t now) {
  if (ms_life_dead(&h->life))
    return;
  ms_hub_conn *hc = ms_strmap_get(&h->registry, name, len);
  if (!hc || !hc->registered)
    return;
  ms_hub_enter(h);
  h->last_now = now;
  h->cstats.names_lost++;
  ms_hub_close_conn(h, hc, MS_CLOSE_DUPLICATE,
                    "service name now held by another hub", "replaced", now);
  ms_hub_leave(h);
}

/* ---- hubs that vanish ---- */

static void peer_down(ms_hub *h, hub_peer *p, int err) {
  const char *code = ms_err_to_wire(err);
  if (!code)
    code = "TARGET_DISCONNECTED";
  while (p->out_head) {
    route *r = p->out_head;
    ms_hub_conn *o = r->origin;
    uint64_t oid = r->origin_id;
    int timed_out = r->timed_out;
    char msg[300];
    snprintf(msg, sizeof msg,
             err == MS_ERR_CLUSTER_UNAVAILABLE
                 ? "%s: the hub cannot reach its cluster"
                 : "%s: its hub is gone",
             r->event + r->event_len + 1);
    drop(h, r, MS_OUTCOME_DISCONNECTED);
    if (!timed_out && o) {
      if (err == MS_ERR_CLUSTER_UNAVAILABLE)
        h->cstats.unavailable++;
      ms_hub_send_error(h, o, oid, code, msg, NULL);
    }
  }
  while (p->in_head) {
    route *r = p->in_head;
    ms_hub_conn *t = r->target;
    uint64_t hid = r->hid;
    drop(h, r, MS_OUTCOME_CANCELLED);
    ms_hub_send_cancel(h, t, hid);
  }
}

void ms_hub_cluster_hub_down(ms_hub *h, const char *hub_id, int err,
                             int64_t now) {
  if (ms_life_dead(&h->life))
    return;
  ms_hub_enter(h);
  h->last_now = now;
  h->cstats.hubs_down++;
  if (hub_id) {
    hub_peer *p = peer_get(h, hub_id, strlen(hub_id), 0);
    if (p) {
      peer_down(h, p, err);
      if (err != MS_ERR_CLUSTER_UNAVAILABLE) {
        for (ms_hub_conn *hc = h->all; hc; hc = hc->all_next)
          if (hc->probe_peer == p)
            hc->probe_peer = NULL;
        ms_strmap_del(&h->peers, p->id, p->id_len);
        peer_free(h, p);
      }
    }
  } else {
    size_t pos = 0;
    const ms_strmap_ent *e;
    while ((e = ms_strmap_next(&h->peers, &pos)) != NULL)
      peer_down(h, e->val, err);
  }
  ms_hub_leave(h);
}

/* ---- messages from other hubs ---- */

static int get_u64(const msgpack_object *o, uint64_t *v) {
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return -1;
  *v = o->via.u64;
  return 0;
}

static int get_i64(const msgpack_object *o, int64_t *v) {
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
      o->via.u64 <= (uint64_t)INT64_MAX) {
    *v = (int64_t)o->via.u64;
    return 0;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    *v = o->via.i64;
    return 0;
  }
  return -1;
}

static int get_str(const msgpack_object *o, ms_str *s) {
  if (o->type != MSGPACK_OBJECT_STR)
    return -1;
  s->ptr = o->via.str.ptr;
  s->len = o->via.str.size;
  return 0;
}

/* A payload bin that must itself hold one MessagePack object. */
static int get_payload(const msgpack_object *o, ms_raw *raw) {
  if (o->type != MSGPACK_OBJECT_BIN)
    return -1;
  raw->ptr = (const uint8_t *)o->via.bin.ptr;
  raw->len = o->via.bin.size;
  return ms_msgpack_check(raw->ptr, raw->len) == 0 ? 0 : -1;
}

static void on_peer_request(ms_hub *h, hub_peer *p, const msgpack_object *a,
                            uint32_t n, int64_t now) {
  uint64_t id;
  ms_str source, target, event;
  ms_raw data;
  int64_t timeout, late;
  if (n < 8 || get_u64(&a[1], &id) || id == 0 || get_str(&a[2], &source) ||
      get_str(&a[3], &target) || get_str(&a[4], &event) ||
      get_payload(&a[5], &data) || get_i64(&a[6], &timeout) ||
      get_i64(&a[7], &late) || source.len > 128) {
    h->cstats.bad_messages++;
    if (n >= 2 && get_u64(&a[1], &id) == 0 && id)
      ms_hub_cl_error(h, p, id, "BAD_REQUEST", "malformed cross-hub request");
    return;
  }
  if (ms_u64map_get(&p->in_ids, id)) {
    ms_hub_cl_error(h, p, id, "BAD_REQUEST", "request id already in flight");
    return;
  }
  ms_hub_conn *t = ms_strmap_get(&h->registry, target.ptr, target.len);
  if (!t || t->state != HC_READY || !t->registered) {
    char msg[200];
    snprintf(msg, sizeof msg, "no service named '%.*s'", (int)target.len,
             target.ptr);
    ms_hub_cl_error(h, p, id, "TARGET_SERVICE_NOT_FOUND", msg);
    return;
  }
  if (timeout < 1)
    timeout = 1;
  if (timeout > h->cfg.max_timeout_ms)
    timeout = h->cfg.max_timeout_ms;
  if (late < 0)
    late = 0;
  if (late > h->cfg.max_late_ms)
    late = h->cfg.max_late_ms;
  route *r = ms_hub_route_add(h, NULL, p, id, t, NULL, event, target, timeout,
                              late, now);
  if (!r) {
    ms_hub_cl_error(h, p, id, "INTERNAL_SERVER_ERROR", "out of memory");
    return;
  }
  ms_hub_pack_forward(h, r, source.ptr, source.len, data.ptr, data.len, NULL);
  int rv = h->out.sb.size > h->cfg.max_message ? MS_ERR_TOO_BIG
                                            : ms_hub_send_out(h, t);
  if (rv == MS_ERR_TOO_BIG || rv == MS_ERR_NOMEM) {
    drop(h, r, MS_OUTCOME_ERROR);
    ms_hub_cl_error(h, p, id,
                    rv == MS_ERR_TOO_BIG ? "PAYLOAD_TOO_LARGE"
                                         : "INTERNAL_SERVER_ERROR",
                    "request larger than max_message for its target");
    return;
  }
  h->cstats.requests_in++;
}

static void on_peer_answer(ms_hub *h, hub_peer *p, const msgpack_object *a,
                           uint32_t n, int type) {
  ms_msg m;
  memset(&m, 0, sizeof m);
  m.extra.type = MSGPACK_OBJECT_NIL;
  uint64_t id;
  int by_hub = 0;
  int bad = n < 2 || get_u64(&a[1], &id);
  if (!bad && type == HM_RESPONSE) {
    m.type = MS_MSG_RESPONSE;
    bad = n < 3 || get_payload(&a[2], &m.data_raw);
  } else if (!bad) {
    m.type = MS_MSG_ERROR;
    bad = n < 5 || get_str(&a[2], &m.code) || m.code.len == 0 ||
          get_str(&a[3], &m.message) ||
          (a[4].type != MSGPACK_OBJECT_NIL && get_payload(&a[4], &m.extra_raw));
    by_hub = !bad && n >= 6 && a[5].type == MSGPACK_OBJECT_BOOLEAN &&
             a[5].via.boolean;
  }
  if (bad) {
    h->cstats.bad_messages++;
    return;
  }
  route *r = ms_u64map_get(&h->routes, id);
  if (!r || r->tpeer != p) {
    /* Only the hub that holds the target answers for it. */
    h->stats.late_dropped++;
    return;
  }
  h->cstats.answers_in++;
  if (by_hub && r->timed_out) {
    /* As on one hub: after REQUEST_TIMEOUT the requester hears nothing
     * more from the hub about this request. */
    drop(h, r, MS_OUTCOME_DISCONNECTED);
    return;
  }
  ms_hub_route_answered(h, r, &m);
}

static void on_peer_cancel(ms_hub *h, hub_peer *p, const msgpack_object *a,
                           uint32_t n) {
  uint64_t id;
  if (n < 2 || get_u64(&a[1], &id)) {
    h->cstats.bad_messages++;
    return;
  }
  route *r = ms_u64map_get(&p->in_ids, id);
  if (!r) {
    h->stats.late_dropped++;
    return;
  }
  ms_hub_conn *t = r->target;
  uint64_t hid = r->hid;
  drop(h, r, MS_OUTCOME_CANCELLED);
  ms_hub_send_cancel(h, t, hid);
}

int ms_hub_cluster_deliver(ms_hub *h, const char *from, const uint8_t *msg,
                           size_t len, int64_t now) {
  if (!h->clustered || !from || ms_life_dead(&h->life))
    return MS_ERR_STATE;
  if (ms_msgpack_check(msg, len) != 0) {
    h->cstats.bad_messages++;
    return MS_ERR_BAD_MESSAGE;
  }
  size_t flen = strlen(from);
  if (flen == strlen(h->hub_id) && memcmp(from, h->hub_id, flen) == 0)
    return MS_ERR_BAD_MESSAGE; /* never from itself */
  msgpack_zone z;
  msgpack_zone_init(&z, 1024);
  msgpack_object o;
  size_t off = 0;
  int rv = 0;
  if (msgpack_unpack((const char *)msg, len, &off, &z, &o) !=
          MSGPACK_UNPACK_SUCCESS ||
      o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 2 ||
      o.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
    h->cstats.bad_messages++;
    msgpack_zone_destroy(&z);
    return MS_ERR_BAD_MESSAGE;
  }
  ms_hub_enter(h);
  h->last_now = now;
  const msgpack_object *a = o.via.array.ptr;
  uint32_t n = o.via.array.size;
  hub_peer *p = peer_get(h, from, flen, 1);
  if (!p) {
    rv = MS_ERR_LIMIT;
  } else {
    switch (a[0].via.u64) {
    case HM_REQUEST: on_peer_request(h, p, a, n, now); break;
    case HM_RESPONSE: on_peer_answer(h, p, a, n, HM_RESPONSE); break;
    case HM_ERROR: on_peer_answer(h, p, a, n, HM_ERROR); break;
    case HM_CANCEL: on_peer_cancel(h, p, a, n); break;
    case HM_PROBE: on_peer_probe(h, p, a, n, now); break;
    case HM_PROBED: on_peer_probed(h, a, n, now); break;
    default:
      h->cstats.bad_messages++;
      rv = MS_ERR_BAD_MESSAGE;
      break;
    }
  }
  ms_hub_leave(h);
  msgpack_zone_destroy(&z);
  return rv;
}
