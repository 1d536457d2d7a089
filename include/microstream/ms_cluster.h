/*
 * microstream: run a hub as one of several that act as one, coordinated
 * through Redis (connections driven by the hub's own loop through the
 * driver core, so every loop that runs a hub can run a clustered hub;
 * hiredis parses and formats RESP; TLS for rediss://).
 * Built when hiredis is found (MS_HAVE_CLUSTER is then 1 in
 * ms_cluster_available()). What the cluster guarantees: PROTOCOL.md
 * "Cluster".
 */
#ifndef MICROSTREAM_MS_CLUSTER_H
#define MICROSTREAM_MS_CLUSTER_H

#include <microstream/ms_hub_cluster.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_cluster_config {
  /* redis://[:PASSWORD@]HOST:PORT[/DB], or rediss://... for TLS (then
   * `tls` is required). HOST may be a name (resolved on the loop), an
   * IPv4 address or [IPv6]. */
  const char *url;
  /* Overrides a password in the URL (e.g. read from a file). */
  const char *password;
  /* Key and channel prefix, so several clusters can share one Redis.
   * Default "microstream". */
  const char *prefix;
  /* A name's lease: a hub that stops renewing (killed, cut off) loses its
   * names, and its pending requests on other hubs fail, within this
   * bound. Renewed every lease_ms / 3. Default 3000, at least 300. */
  int64_t lease_ms;
  /* Records kept per stream in Redis (XADD MAXLEN ~). Default 10000. */
  size_t stream_max;
  /* rediss://: the TLS layer (ms_tls_wrap() of an ms_tls_client_new()
   * with the CA to trust); the server's certificate is checked against
   * HOST, which is also sent as SNI. Ignored for redis://. */
  const ms_stream_wrap *tls;
  /* Non-zero: plain SUBSCRIBE/PUBLISH for the per-hub channels even on a
   * server that has sharded pub/sub (Redis 7: SSUBSCRIBE/SPUBLISH). */
  int classic_pubsub;
  /* Optional: told when the hub joins the cluster (up 1, why NULL) and
   * when it leaves it or an attempt fails (up 0, why: a reason for the
   * log; each reason once until it changes). Called from the loop; must
   * not call into the cluster or the hub. */
  void (*on_state)(void *ud, int up, const char *why);
  void *state_ud;
} ms_cluster_config;

MS_EXTERN void ms_cluster_config_init(ms_cluster_config *cfg);

/* 1 if this build has the Redis cluster (hiredis was found), else 0: the
 * attach calls below then return MS_ERR_STATE. */
MS_EXTERN int ms_cluster_available(void);

/* Cluster counters, for /metrics (also appended there by the hub). */
typedef struct ms_cluster_stats {
  int up;                     /* connected and in sync now */
  uint64_t redis_commands;    /* commands sent */
  uint64_t redis_replies;     /* replies received */
  uint64_t redis_errors;      /* error replies */
  uint64_t connects, disconnects;
  uint64_t renewals;          /* lease renewal rounds */
  uint64_t batches;           /* hub-to-hub PUBLISH commands */
  uint64_t sharded_batches;   /* of which SPUBLISH */
  uint64_t messages_out;      /* hub-to-hub messages in them */
  uint64_t messages_in;
  uint64_t records_out;       /* log and presence records appended */
  uint64_t records_dropped;   /* lost: Redis unreachable past the
                                 backlog's bound, or the append refused */
  uint64_t presence_lost;     /* PRESENCE down said for a vanished hub */
  uint64_t records_unshown;   /* cluster records not shown here (gap
                                 markers): their seq was used by this hub
                                 meanwhile, or they came past the bound
                                 while the history was read */
  uint64_t hubs;              /* other hubs seen alive now */
  uint64_t services;          /* names in the cluster registry now */
  int sharded;                /* this hub's channel is SSUBSCRIBEd now */
  uint64_t records_resent;    /* appended again: the connection ended
                                 before Redis answered */
} ms_cluster_stats;

/* A hub on the built-in loop joins a cluster. Before the first
 * connection. Returns 0, MS_ERR_INVALID_ARG (bad URL), MS_ERR_STATE (no
 * cluster in this build, or already joined), MS_ERR_NOMEM. */
struct ms_posix_hub; /* ms_posix.h */
MS_EXTERN int ms_posix_hub_cluster(struct ms_posix_hub *p,
                                   const ms_cluster_config *cfg);
/* Say goodbye to the cluster (other hubs fail requests to this one at
 * once and forget its names) and flush: call after ms_hub_shutdown(),
 * then run the loop until ms_posix_hub_cluster_pending() is 0 (or a
 * deadline). */
MS_EXTERN void ms_posix_hub_cluster_leave(struct ms_posix_hub *p);
MS_EXTERN size_t ms_posix_hub_cluster_pending(const struct ms_posix_hub *p);
MS_EXTERN int ms_posix_hub_cluster_stats(const struct ms_posix_hub *p,
                                         ms_cluster_stats *st);

#ifdef __cplusplus
}
#endif

#endif
