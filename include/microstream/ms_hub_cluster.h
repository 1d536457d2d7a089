/*
 * microstream: the hub engine's cluster boundary.
 *
 * Several hubs act as one when each is given a cluster: the engine calls
 * the hooks below (claim and release a service name, find the hub that
 * holds a name, send a message to another hub, publish a log or presence
 * record) and is told, through the ms_hub_cluster_* entry points, what
 * comes back (claim answers, messages from other hubs, hubs that vanished,
 * names lost, records in cluster order). The engine stays sans-IO: it
 * never waits for the cluster; every cross-hub request keeps its own
 * deadline. The Redis implementation lives in the driver core
 * (ms_cluster.h); tests use an in-memory one.
 *
 * Hooks are called from inside engine calls and must not call back into
 * the engine: they queue, and the answers come later through the entry
 * points (from the transport, outside any engine call).
 */
#ifndef MICROSTREAM_MS_HUB_CLUSTER_H
#define MICROSTREAM_MS_HUB_CLUSTER_H

#include <microstream/ms_hub.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The two record streams a cluster carries. */
enum { MS_CLUSTER_LOGS = 0, MS_CLUSTER_PRESENCE = 1 };

/* Claim flags. */
enum { MS_CLAIM_REPLACE_STALE = 1 };

typedef struct ms_hub_cluster_ops {
  /* Claim `name` for this hub, atomically cluster-wide. Answer later with
   * ms_hub_cluster_claimed(tag, ...). MS_CLAIM_REPLACE_STALE: the name may
   * be taken from a holder whose hub is gone. */
  void (*claim)(void *ctx, const char *name, size_t len, uint64_t tag,
                unsigned flags);
  /* This hub no longer holds `name` (release it if it still does). */
  void (*release)(void *ctx, const char *name, size_t len);
  /* The hub holding `name`: 0 and *hub_id (valid until the next hook
   * call), MS_ERR_NOT_FOUND, or MS_ERR_CLUSTER_UNAVAILABLE. */
  int (*locate)(void *ctx, const char *name, size_t len, const char **hub_id);
  /* `name` is not in the cluster's view here (yet): look it up and send
   * msg (a request, id hid) to its hub. Answer with
   * ms_hub_cluster_resolved(hid, ...) and, if that returns 0, send. Returns
   * 0 or MS_ERR_CLUSTER_UNAVAILABLE. */
  int (*resolve)(void *ctx, const char *name, size_t len, uint64_t hid,
                 const uint8_t *msg, size_t msg_len);
  /* Queue one hub-to-hub message (opaque bytes, at most a few bytes more
   * than the hub's max_message) for hub_id; it arrives there through
   * ms_hub_cluster_deliver(). Returns 0 or MS_ERR_CLUSTER_UNAVAILABLE. */
  int (*send)(void *ctx, const char *hub_id, const uint8_t *msg, size_t len);
  /* Publish one record (opaque bytes) of a stream. It comes back, to
   * every hub including this one, through ms_hub_cluster_record() with
   * its cluster-wide seq. Returns 0 or an error (the record is lost). */
  int (*publish)(void *ctx, int stream, const uint8_t *rec, size_t len);
  /* Optional: append Prometheus text to /metrics (return 0 or
   * MS_ERR_NOMEM), and the services held by other hubs to /api/services
   * (JSON objects, each preceded by a comma unless `first`). */
  int (*metrics)(void *ctx, ms_buf *out);
  int (*services)(void *ctx, ms_buf *out, int first);
} ms_hub_cluster_ops;

/* Attach a cluster before the first connection (MS_ERR_STATE after).
 * ops is copied; ctx is passed to every hook. ops NULL detaches (at any
 * time): no hook is called afterwards. */
MS_EXTERN int ms_hub_set_cluster(ms_hub *h, const ms_hub_cluster_ops *ops,
                                 void *ctx);

/* The answer to claim(tag): 0 (claimed), MS_ERR_DUPLICATE_SERVICE_REGISTRATION
 * (holder: the hub that holds it, or NULL) or MS_ERR_CLUSTER_UNAVAILABLE.
 * Returns 0, or MS_ERR_NOT_FOUND when the engine no longer waits for tag
 * (its connection went away): a name claimed for it is to be released
 * unless another claim of the same name is on its way. */
MS_EXTERN int ms_hub_cluster_claimed(ms_hub *h, uint64_t tag, int result,
                                     const char *holder, int64_t now);

/* The answer to resolve(hid): hub_id holds the name (0 returned: send the
 * message there), or hub_id NULL with err MS_ERR_NOT_FOUND or
 * MS_ERR_CLUSTER_UNAVAILABLE (the requester is told). Returns
 * MS_ERR_NOT_FOUND when the request ended meanwhile: do not send. */
MS_EXTERN int ms_hub_cluster_resolved(ms_hub *h, uint64_t hid,
                                      const char *hub_id, int err,
                                      int64_t now);

/* One message from hub `from`, as produced there by send(). Returns 0 or
 * MS_ERR_BAD_MESSAGE (ignored and counted). */
MS_EXTERN int ms_hub_cluster_deliver(ms_hub *h, const char *from,
                                     const uint8_t *msg, size_t len,
                                     int64_t now);

/* Hub `hub_id` is gone (err MS_ERR_TARGET_DISCONNECTED) or cannot be
 * reached (MS_ERR_CLUSTER_UNAVAILABLE): requests in flight to it end at
 * once with that code; requests it sent here are cancelled. hub_id NULL:
 * every other hub. */
MS_EXTERN void ms_hub_cluster_hub_down(ms_hub *h, const char *hub_id,
                                       int err, int64_t now);

/* The cluster found `name` held by another hub (a lease re-asserted after
 * an outage): the local holder is closed with 4009. */
MS_EXTERN void ms_hub_cluster_lost(ms_hub *h, const char *name, size_t len,
                                   int64_t now);

/* Hub `hub_id` vanished (its lease ran out without a goodbye) while
 * holding `name`: publish PRESENCE down for it, detail {"reason":
 * "hub_lost", "hub": hub_id}. The cluster calls this on one hub only
 * (an atomic claim decides which). Returns 0, MS_ERR_STATE (no cluster)
 * or MS_ERR_INVALID_ARG. */
MS_EXTERN int ms_hub_cluster_presence_lost(ms_hub *h, const char *name,
                                           size_t len, const char *hub_id,
                                           int64_t now);

/* The cluster had declared this hub lost (PRESENCE down, "hub_lost", for
 * its names) and it is back: publish PRESENCE up, reason "rejoined", for
 * `name` if a local connection still holds it. */
MS_EXTERN void ms_hub_cluster_rejoined(ms_hub *h, const char *name,
                                       size_t len, int64_t now);

/* One record of a stream in cluster order. seq must grow; a jump means
 * records were lost (subscribers get a gap marker). Records with a seq
 * not above the last one are ignored. Returns 0 or MS_ERR_BAD_MESSAGE. */
MS_EXTERN int ms_hub_cluster_record(ms_hub *h, int stream, uint64_t seq,
                                    const uint8_t *rec, size_t len,
                                    int64_t now);

/* The cluster's streams are available (up 1) or not (up 0). While they
 * are not, the hub keeps and shows its own records at once, numbering
 * them after its last seq, and still publishes them (the cluster marks
 * them as shown here: they come back through
 * ms_hub_cluster_record_shown). A cluster that never calls this leaves
 * every record to come back through ms_hub_cluster_record. */
MS_EXTERN void ms_hub_cluster_streams(ms_hub *h, int up, int64_t now);

/* A record of this hub's that its subscribers were shown while the
 * streams were unavailable, back in cluster order: kept for its seq (the
 * same rules as ms_hub_cluster_record), not shown again (a jump in seq
 * for subscribers, as for a record that does not match a filter). */
MS_EXTERN int ms_hub_cluster_record_shown(ms_hub *h, int stream,
                                          uint64_t seq, const uint8_t *rec,
                                          size_t len, int64_t now);

/* The cluster will never use the seqs up to `upto` that this hub has not
 * seen (its numbering jumped, e.g. after a Redis restart): no record is
 * missing, the next one may come with upto + 1. */
MS_EXTERN void ms_hub_cluster_skip(ms_hub *h, int stream, uint64_t upto,
                                   int64_t now);

/* n records of the cluster's stream cannot be shown here (their seq was
 * used by this hub's own records meanwhile): subscribers get a gap
 * marker {"missed": n}. */
MS_EXTERN void ms_hub_cluster_missed(ms_hub *h, int stream, uint64_t n,
                                     int64_t now);

/* Cross-hub counters of the engine. */
typedef struct ms_hub_cluster_stats {
  uint64_t requests_out;   /* requests sent to another hub */
  uint64_t requests_in;    /* requests from another hub, routed here */
  uint64_t answers_out;    /* answers sent back to another hub */
  uint64_t answers_in;     /* answers from another hub, routed here */
  uint64_t claims, claims_refused, claims_unavailable;
  uint64_t names_lost;     /* local holders closed: name held elsewhere */
  uint64_t hubs_down;      /* hub_down events */
  uint64_t unavailable;    /* CLUSTER_UNAVAILABLE answers */
  uint64_t bad_messages;   /* undecodable hub-to-hub messages */
} ms_hub_cluster_stats;
MS_EXTERN void ms_hub_get_cluster_stats(const ms_hub *h,
                                        ms_hub_cluster_stats *st);

/* The newest seq the hub holds for a stream (0 if none). */
MS_EXTERN uint64_t ms_hub_cluster_last_seq(const ms_hub *h, int stream);

#ifdef __cplusplus
}
#endif

#endif
