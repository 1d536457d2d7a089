/* The hub engine's internal structures, shared by ms_hub.c (sessions and
 * routing), ms_hub_stream.c (logs and presence) and ms_hub_http.c. */
#ifndef MS_HUB_INT_H
#define MS_HUB_INT_H

#include <microstream/ms_codec.h>
#include <microstream/ms_hub.h>
#include <microstream/ms_hub_cluster.h>

#include "ms_map.h"
#include "ms_wire.h"

typedef enum hc_state {
  HC_HTTP = 0,      /* before the upgrade completes */
  HC_AWAIT_HELLO,   /* WebSocket open, no HELLO yet */
  HC_WAIT_REPLACE,  /* HELLO for a taken name: probing the old holder */
  HC_READY,         /* registered (or a watcher) */
  HC_CLOSING,       /* we closed it; waiting for the stream to end */
  HC_GONE           /* the WebSocket is over */
} hc_state;

typedef struct route route;
typedef struct hub_sub hub_sub;
typedef struct ms_hub_sio ms_hub_sio;             /* ms_hub_sio.c */
typedef struct ms_hub_sio_state ms_hub_sio_state; /* ms_hub_sio.c */
typedef struct hub_peer hub_peer;

/* ms_hub_metrics.c: per (target, event) figures. */
enum {
  MS_OUTCOME_OK = 0,
  MS_OUTCOME_ERROR,        /* the service answered with ERROR */
  MS_OUTCOME_TIMEOUT,
  MS_OUTCOME_DISCONNECTED, /* the target went away first */
  MS_OUTCOME_CANCELLED,    /* the requester cancelled or went away */
  MS_OUTCOME_COUNT
};
#define MS_HUB_LAT_BUCKETS 14
typedef struct hub_route_stats {
  struct hub_route_stats *next;
  uint64_t outcomes[MS_OUTCOME_COUNT];
  uint64_t buckets[MS_HUB_LAT_BUCKETS]; /* not cumulative */
  uint64_t latency_sum_ms;
  size_t target_len, event_len;
  char key[]; /* target, 0x1f, event, NUL */
} hub_route_stats;
typedef struct hub_metrics hub_metrics;

/* A connection's subscriptions by id, made with its first SUBSCRIBE
 * (ms_hub_stream.c). */
typedef struct hub_conn_subs {
  ms_u64map ids;   /* sub_id + 1 -> hub_sub */
  size_t n;
  size_t bytes;    /* what their filters hold, against max_filter_bytes */
} hub_conn_subs;

/* Kept small: idle connections cost what this struct and its ms_conn
 * cost (see test_idle_memory.c); state few connections use lives apart. */
struct ms_hub_conn {
  ms_hub *hub;
  ms_conn *ws;
  void *tdata;
  uint64_t serial;
  hc_state state;
  ms_encoding enc;
  char *name; /* HELLO service, NUL-terminated */
  size_t name_len;
  char *instance;
  unsigned registered : 1, watch : 1, in_dirty : 1, released : 1,
      reading_paused : 1, doomed : 1,
      claiming : 1, /* cluster: waiting for the claim's answer */
      probing : 1,  /* cluster: asked the holder's hub if it is stale */
      probed : 1,   /* (once per HELLO) */
      peer_counted : 1, secure : 1, got_bytes : 1,
      /* Socket.IO: a WebSocket opened at /socket.io/ (see sio below). */
      eio_ws : 1,
      /* Writes that found the socket full and then drained: the peer
       * reads. */
      tx_blocked : 1,
      http_in_more : 1, http_finished : 1, /* ms_hub_http_stream */
      /* A streamed answer's reader took bytes since the last check (the
       * time of a write is not known there: the check stamps it). */
      http_took : 1,
      in_held : 1;  /* in the hub's set of connections with input held */
  int pings_sent;
  unsigned scopes; /* granted by the HELLO token (ms_hub_auth.c) */
  int subs_more;   /* replay work left for the next tick */
  uint32_t held_pos; /* its place in the hub's `held` (with in_held) */
  /* Cluster: another hub's newcomer wants this connection's name (the
   * replace-stale check, run here for that hub). */
  hub_peer *probe_peer;
  uint64_t probe_tag;
  int64_t probe_deadline;
  ms_hub_conn *doom_next; /* slow consumers to close at the outermost call */
  int64_t accepted_at, last_rx, ready_at;
  int64_t idle_tried_rx; /* last_rx when releasing buffers was last tried */
  ms_hnode live; /* liveness / handshake / conn deadlines */
  ms_hub_conn *dirty_next, *dirty_prev;
  ms_hub_conn *all_prev, *all_next;

  /* Requests this connection sent (origin) and received (target). */
  ms_u64map origin_ids; /* origin id -> route */
  route *out_head;
  route *in_head;
  size_t n_out;

  /* Replace-stale probing: the new connection waits on the old one. */
  ms_hub_conn *replace_waiter; /* on the old holder */
  ms_hub_conn *replace_target; /* on the newcomer */

  hub_sub *subs; /* this connection's subscriptions */
  /* The figures of the last event requested of it (ms_hub_metrics.c):
   * a service asked the same event again costs no hash lookup. */
  struct hub_route_stats *rs_cache;

  /* Access control (ms_hub_auth.c). */
  int64_t expires_at; /* the token's exp on the hub's clock */
  char *peer;         /* the stream's address, or NULL */
  /* Socket.IO (ms_hub_sio.c). `sio`: this is a session's own connection,
   * with no stream (ws is NULL); the transport never sees it. For a
   * stream: `sio_carried` is the session it carries (a parked poll, a
   * WebSocket), `eio_ws` marks a WebSocket opened at /socket.io/. */
  ms_hub_sio *sio;
  ms_hub_sio *sio_carried;
  hub_conn_subs *sx; /* NULL until the first SUBSCRIBE */
  /* A streamed HTTP answer (ms_hub_http_stream). */
  ms_hub_http_more_fn http_more;
  void *http_ud;
};

/* A request in flight. Its requester is a local connection (origin) or
 * another hub (opeer, origin_id being that hub's id); its target is a
 * local connection (target) or another hub (tpeer). The o_ and t_ links
 * chain it on whichever holds each end. */
struct route {
  ms_hnode hn;
  uint64_t hid, origin_id;
  ms_hub_conn *origin, *target;
  hub_peer *opeer, *tpeer;
  route *o_prev, *o_next;
  route *t_prev, *t_next;
  int64_t deadline, timeout_ms, late_ms;
  int timed_out;
  hub_route_stats *rs; /* where its outcome is counted */
  int64_t started;
  size_t event_len, tname_len;
  route *pool_next; /* in ms_hub.route_pool */
  char event[]; /* event NUL, then the target's name NUL */
};

/* Routes whose event and target name fit this many bytes (NULs included)
 * come in one size and are kept for reuse: a request then costs no
 * allocation. */
#define MS_ROUTE_SMALL 64
#define MS_ROUTE_POOL_MAX 256

/* Another hub of the cluster, as seen by this one. */
struct hub_peer {
  char *id;
  size_t id_len;
  ms_u64map in_ids; /* that hub's request id -> route */
  route *in_head;   /* requests from it (route.o_*) */
  route *out_head;  /* requests to it (route.t_*) */
};

/* Kinds of events a flood from the network could repeat without end;
 * each is limited to MS_HUB_EV_LINES lines per MS_HUB_EV_WINDOW_MS. */
enum {
  MS_HUB_EVK_REFUSED = 0, /* streams refused at accept */
  MS_HUB_EVK_AUTH,        /* failed authentications */
  MS_HUB_EVK_TLS,         /* TLS failures */
  MS_HUB_EVK_COUNT
};
#define MS_HUB_EV_LINES 10
#define MS_HUB_EV_WINDOW_MS 10000

typedef struct ms_hub_streams ms_hub_streams;
typedef struct hub_auth hub_auth;

struct ms_hub {
  const ms_allocator *mem;
  void *ud;
  ms_hub_config cfg;
  uint8_t *secret;
  char hub_id[64];
  uint64_t next_serial;
  uint64_t next_hid;
  int64_t started_at;
  int64_t last_now;
  /* When the hub last ran late (a tick well after its deadline: the loop
   * was held up). Peers' answers may then wait unread in the sockets, so
   * nobody is closed for silence until an interval after that. */
  int64_t resumed_at;

  ms_strmap registry;   /* name -> conn */
  ms_u64map routes;     /* hub id -> route */
  ms_heap timers;       /* routes' deadlines (and late-window ends) */
  route *route_pool;    /* freed small routes, at most MS_ROUTE_POOL_MAX */
  size_t route_pool_n;
  ms_heap live;         /* connections' liveness and handshake checks */
  ms_hub_conn *all;     /* every connection */
  ms_hub_conn *dirty_head, *dirty_tail;
  /* Connections whose input the feed budget held back (round robin:
   * each gets one more budget per ms_hub_resume_input()). */
  ms_hub_conn **held;
  size_t n_held, held_cap;
  int held_lost; /* no room to note one: look at every connection */
  ms_hub_conn *graveyard; /* released inside a callback */
  ms_hub_conn *doomed;    /* slow consumers to close (ms_hub_send_out) */

  ms_hub_streams *streams;
  hub_auth *auth;
  hub_metrics *metrics;
  void *wall_ud; /* for a clock from ms_hub_set_wallclock */
  ms_hub_sio_state *sio; /* Socket.IO sessions, created on first use */

  /* Cluster (ms_hub_cluster.c); clustered == 0: a hub on its own. */
  int clustered;
  /* The cluster's streams are unavailable: records are kept and shown
   * here at once (and published for later), ms_hub_cluster_streams(). */
  int cl_local;
  ms_hub_cluster_ops cl;
  void *cl_ctx;
  ms_strmap peers;  /* hub id -> hub_peer */
  ms_u64map claims; /* connection serial -> connection, while claiming */
  ms_hub_cluster_stats cstats;

  ms_hub_wakeup_fn wakeup;
  void *wakeup_ud;

  ms_mpbuf out; /* a message that ran out of memory is not sent */
  msgpack_packer pk;
  ms_mpbuf scratch; /* JSON conversion */
  msgpack_zone zone;
  int zone_ready; /* msgpack_zone_init succeeded */

  ms_life life; /* the lifetime rule of ms_common.h */
  int shutting_down;
  ms_hub_stats stats;
  /* Events a flood could repeat (ms_hub_event_limited): lines logged in
   * the window that began at `start`, and those held back. */
  struct {
    int64_t start;
    uint32_t n;
    uint64_t held;
  } evlim[MS_HUB_EVK_COUNT];
};

/* ms_hub.c */
/* The hub's own events, to cfg.on_event (a formatted line). */
void ms_hub_event(ms_hub *h, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for an event of a kind a flood could repeat: past
 * MS_HUB_EV_LINES in a window the lines are counted, not logged, and one
 * line at the window's end says how many were held back. */
void ms_hub_event_limited(ms_hub *h, int kind, int level, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));
int64_t ms_hub_wall_us(ms_hub *h, int64_t now);
/* The name hc's REQUESTs and LOGs carry as their source: its HELLO name,
 * or, for a watcher whose name a registered service holds, the name with
 * MS_WATCHER_MARK appended (no service can register that). buf holds at
 * least MS_SOURCE_MAX bytes. */
#define MS_WATCHER_MARK " (watcher)"
#define MS_SOURCE_MAX (128 + sizeof MS_WATCHER_MARK)
const char *ms_hub_source(ms_hub *h, const ms_hub_conn *hc, char *buf,
                          size_t *len);
/* Encode into h->out with a fresh packer state. */
msgpack_packer *ms_hub_packer(ms_hub *h);
/* Send h->out to hc (converted for its encoding). */
int ms_hub_send_out(ms_hub *h, ms_hub_conn *hc);
/* ERROR id with code/message; counted by code. */
void ms_hub_send_error(ms_hub *h, ms_hub_conn *hc, uint64_t id,
                       const char *code, const char *message,
                       const msgpack_object *data);
void ms_hub_mark_dirty(ms_hub *h, ms_hub_conn *hc);

/* The router's view of one decoded client message on hc (any state). */
void ms_hub_dispatch(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                     int64_t now);
/* Close hc's session (code, reason) and report it down (presence_reason). */
void ms_hub_close_conn(ms_hub *h, ms_hub_conn *hc, uint16_t code,
                       const char *reason, const char *presence_reason,
                       int64_t now);
/* hc showed life (counts for liveness and replace-stale probing). */
void ms_hub_conn_alive(ms_hub *h, ms_hub_conn *hc, int64_t now);
/* Re-arm hc's liveness deadline (only ever earlier). */
void ms_hub_update_live(ms_hub *h, ms_hub_conn *hc);
/* Output bytes queued for hc (a session's own connection included). */
size_t ms_hub_conn_out_pending(const ms_hub_conn *hc);

/* ms_hub_sio.c: the Socket.IO endpoint. */
int ms_hub_sio_is_path(const ms_http_request *req);
void ms_hub_sio_http(ms_hub *h, ms_hub_conn *hc, const ms_http_request *req);
int ms_hub_sio_upgrade(ms_hub *h, ms_hub_conn *hc,
                       const ms_http_request *req);
void ms_hub_sio_ws_open(ms_hub *h, ms_hub_conn *hc,
                        const ms_http_request *req);
void ms_hub_sio_ws_message(ms_hub *h, ms_hub_conn *hc,
                           const ms_conn_message_arg *arg);
void ms_hub_sio_carrier_gone(ms_hub *h, ms_hub_conn *hc);
int ms_hub_sio_send(ms_hub *h, ms_hub_conn *vc);
size_t ms_hub_sio_pending(const ms_hub_conn *vc);
/* Whether the session's transport is its WebSocket (upgraded, open). */
int ms_hub_sio_on_ws(const ms_hub_conn *vc);
void ms_hub_sio_close(ms_hub *h, ms_hub_conn *vc, uint16_t code,
                      const char *reason);
int64_t ms_hub_sio_deadline(const ms_hub *h, const ms_hub_conn *vc);
/* An Engine.IO ping now (replace-stale probing: a pong is life). */
void ms_hub_sio_ping(ms_hub *h, ms_hub_conn *vc);
void ms_hub_sio_live(ms_hub *h, ms_hub_conn *vc, int64_t now);
void ms_hub_sio_free(ms_hub *h, ms_hub_conn *vc);
void ms_hub_sio_del(ms_hub *h);
/* Routes (ms_hub.c), shared with ms_hub_cluster.c. */
route *ms_hub_route_add(ms_hub *h, ms_hub_conn *origin, hub_peer *opeer,
                        uint64_t origin_id, ms_hub_conn *target,
                        hub_peer *tpeer, ms_str event, ms_str tname,
                        int64_t timeout, int64_t late, int64_t now);
void ms_hub_route_drop(ms_hub *h, route *r);
/* An answer (RESPONSE or ERROR in m) for r, which is unlinked and freed,
 * goes to its local requester. */
void ms_hub_route_answered(ms_hub *h, route *r, const ms_msg *m);
/* Encode into h->out the REQUEST a local target gets for r. */
void ms_hub_pack_forward(ms_hub *h, route *r, const char *source,
                         size_t source_len, const uint8_t *data,
                         size_t data_len, const msgpack_object *data_obj);
void ms_hub_send_cancel(ms_hub *h, ms_hub_conn *hc, uint64_t id);
/* Close a session with ERROR id 0 and a close code. */
void ms_hub_fail_session(ms_hub *h, ms_hub_conn *hc, const char *code,
                         const char *message, uint16_t close_code,
                         int64_t now);
int ms_hub_register(ms_hub *h, ms_hub_conn *hc, int64_t now);
void ms_hub_enter(ms_hub *h);
/* Returns 1 when the hub was deleted meanwhile (and is now freed). */
int ms_hub_leave(ms_hub *h);

/* ms_hub_cluster.c: the engine's side of the cluster boundary. */
void ms_hub_cl_init(ms_hub *h);
void ms_hub_cl_free(ms_hub *h);
/* The hub that holds name: 0 with *peer, MS_ERR_NOT_FOUND,
 * MS_ERR_CLUSTER_UNAVAILABLE. */
int ms_hub_cl_locate(ms_hub *h, ms_str name, hub_peer **peer);
void ms_hub_cl_forward(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                       hub_peer *tp, int64_t timeout, int64_t late,
                       int64_t now);
/* r's requester is another hub: answer it (m: RESPONSE or ERROR). */
void ms_hub_cl_answer(ms_hub *h, route *r, const ms_msg *m);
void ms_hub_cl_error(ms_hub *h, hub_peer *p, uint64_t id, const char *code,
                     const char *message);
void ms_hub_cl_cancel(ms_hub *h, hub_peer *p, uint64_t hid);
void ms_hub_cl_claim(ms_hub *h, ms_hub_conn *hc, int64_t now);
void ms_hub_cl_claim_timeout(ms_hub *h, ms_hub_conn *hc, int64_t now);
/* The holder probed for another hub showed life. */
void ms_hub_cl_probe_alive(ms_hub *h, ms_hub_conn *hc);
/* hc's session ended: give back a claim or the name. */
void ms_hub_cl_conn_down(ms_hub *h, ms_hub_conn *hc);

/* ms_hub_stream.c: logs and presence. */
int ms_hub_streams_new(ms_hub *h);
void ms_hub_streams_del(ms_hub *h);
void ms_hub_presence(ms_hub *h, const char *kind, const ms_hub_conn *hc,
                     const char *reason, int64_t now);
void ms_hub_on_log(ms_hub *h, ms_hub_conn *hc, const ms_msg *m, int64_t now);
void ms_hub_on_subscribe(ms_hub *h, ms_hub_conn *hc, const ms_msg *m,
                         int64_t now);
void ms_hub_on_unsubscribe(ms_hub *h, ms_hub_conn *hc, const ms_msg *m);
void ms_hub_drop_subs(ms_hub *h, ms_hub_conn *hc);
/* After hc's output drained, or at a tick when replay work was left:
 * continue its subscriptions' replays (a bounded amount per call). */
void ms_hub_subs_drained(ms_hub *h, ms_hub_conn *hc);

/* ms_hub_auth.c: tokens, scopes, the Origin and Host checks, per-peer
 * limits. */
int ms_hub_auth_new(ms_hub *h);
void ms_hub_auth_del(ms_hub *h);
/* The HELLO's token for hc (name already set): 0 with hc->scopes and
 * hc->expires_at set, or an ms_err; *code and msg say what to answer. */
int ms_hub_auth_hello(ms_hub *h, ms_hub_conn *hc, const ms_msg *m, int watch,
                      int64_t now, const char **code, char *msg,
                      size_t msg_cap);
/* The subject of a token that verifies and grants `watch` (or admin),
 * without logging anything: 0 with sub[] filled, else an ms_err. */
int ms_hub_auth_watch_sub(ms_hub *h, const char *tok, size_t len, int64_t now,
                          char sub[129]);
/* Logs a TLS ClientHello that arrived on a plain port. */
void ms_hub_auth_event_tls_on_plain(ms_hub *h, const ms_hub_conn *hc);
/* Whether hc's session may do what needs `scope` (always with no keys). */
int ms_hub_may(const ms_hub *h, const ms_hub_conn *hc, unsigned scope);
/* Per-peer count of streams without a session. */
int ms_hub_peer_add(ms_hub *h, ms_hub_conn *hc, const char *peer,
                    int64_t now);
void ms_hub_peer_done(ms_hub *h, ms_hub_conn *hc);
/* The WebSocket upgrade's Origin/Host checks: 0 or an HTTP status. */
int ms_hub_upgrade_check(ms_hub *h, ms_hub_conn *hc,
                         const ms_http_request *req);

/* ms_hub_metrics.c */
int ms_hub_metrics_new(ms_hub *h);
void ms_hub_metrics_del(ms_hub *h);
/* The entry for a pair (created on first sight; a shared one past the
 * cap; NULL only without metrics). */
hub_route_stats *ms_hub_route_stats(ms_hub *h, const char *target,
                                    size_t tlen, const char *event,
                                    size_t elen);
/* The same, through a one-entry cache kept by the target connection. */
hub_route_stats *ms_hub_route_stats_cached(ms_hub *h, hub_route_stats **cache,
                                           const char *target, size_t tlen,
                                           const char *event, size_t elen);
void ms_hub_route_done(hub_route_stats *rs, int outcome, int64_t started,
                       int64_t now);
int ms_hub_metrics_routes_text(const ms_hub *h, ms_buf *b);

/* ms_hub_http.c */
void ms_hub_http(ms_hub *h, ms_hub_conn *hc, ms_conn *c,
                 const ms_http_request *req);

#endif
