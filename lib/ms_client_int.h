/* The client engine's internal structures, shared by ms_client.c
 * (sessions, requests, handlers) and ms_client_log.c (logs and
 * subscriptions). */
#ifndef MS_CLIENT_INT_H
#define MS_CLIENT_INT_H

#include <microstream/ms_client.h>
#include <microstream/ms_log.h>

#include "ms_map.h"
#include "ms_wire.h"

typedef struct ms_client_logs ms_client_logs;

/* An outgoing request. target and event live in the same allocation. */
typedef struct creq {
  ms_hnode hn;
  uint64_t id;
  enum { CREQ_INFLIGHT, CREQ_LATE, CREQ_FAIL } state;
  int fail_err; /* CREQ_FAIL: delivered at the next tick */
  int64_t sent_at;
  int64_t timeout_ms, late_ms;
  ms_response_fn cb;
  void *ud;
  ms_response_fn on_late;
  void *late_ud;
  struct creq *lost_next; /* conn_lost's list, so it needs no memory */
  char *target;
  char *event;
} creq;

typedef struct handler {
  ms_handler_fn fn;
  void *ud;
  size_t len;
  char name[];
} handler;

struct ms_reply {
  ms_client *c; /* NULL once the client is gone */
  ms_reply *prev, *next; /* the client's list of live handles */
  const ms_allocator *mem;
  uint64_t id;  /* the hub's id */
  uint32_t epoch;
  int refs;
  unsigned retained : 1, answered : 1, cancelled : 1;
};

struct ms_client {
  const ms_allocator *mem;
  void *ud;
  ms_client_config cfg;
  char *service, *token, *host, *path, *instance;
  char *dns_servers; /* copy of cfg.dns_servers */

  ms_client_state state;
  ms_conn *conn;
  ms_encoding enc;
  uint32_t epoch;     /* bumps on every new connection */
  int conn_dead;      /* abandoned (heartbeat): report done to transport */
  int lost_done;      /* connection-lost processing ran for this conn */
  int session_err;    /* ERROR id 0 received on this connection */
  uint16_t close_code;
  char hub_id[129];

  /* Limits announced by the hub in WELCOME. */
  int64_t hub_heartbeat_ms;
  size_t hub_max_message;

  int64_t reconnect_at; /* IDLE: when to try again */
  unsigned attempts;
  int64_t last_rx;
  /* The hub read some of our output that had backed up (the socket was
   * full, so only its reading makes room): alive, though it may be too
   * busy reading to answer. */
  int64_t last_drain;
  int out_backed; /* output was left over at the last consume */
  int64_t last_now;   /* the latest time the transport gave us */
  int64_t last_ping;
  int64_t hello_deadline;

  uint64_t next_id;
  uint64_t rng;
  ms_u64map reqs;   /* local id -> creq (in flight, late, failing) */
  ms_heap timers;   /* creq deadlines */
  size_t inflight;  /* CREQ_INFLIGHT count */
  ms_u64map replies;/* hub id -> unanswered reply (this connection) */
  ms_reply *reply_list; /* every reply handle still allocated */
  ms_strmap handlers;

  ms_client_msg_fn on_msg;
  void *on_msg_ud;
  ms_wakeup_fn wakeup;
  void *wakeup_ud;

  ms_mpbuf out;            /* encoding scratch */
  msgpack_packer pk;       /* over out */
  ms_mpbuf scratch;        /* JSON conversion scratch */
  msgpack_zone zone;
  int zone_ready; /* msgpack_zone_init succeeded */

  ms_life life; /* the lifetime rule of ms_common.h */
  ms_client_stats stats;

  ms_client_logs *logs; /* log shipping and subscriptions (lazy) */
};


/* ms_client.c */
int ms_client_send_mp(ms_client *c, const uint8_t *mp, size_t len);
int ms_client_out_backed_up(const ms_client *c);

/* ms_client_log.c */
void ms_client_logs_ready(ms_client *c, int64_t now);   /* after WELCOME */
void ms_client_logs_lost(ms_client *c);                 /* connection gone */
void ms_client_logs_pong(ms_client *c, uint64_t n);     /* PONG n came */
int ms_client_send_ping(ms_client *c, uint64_t n);      /* a PING message */
void ms_client_logs_drain(ms_client *c);                /* output drained */
void ms_client_logs_free(ms_client *c);
/* A RECORD / PRESENCE / ERROR for a sub_id: 1 if handled. */
int ms_client_logs_on_msg(ms_client *c, const ms_msg *m);
/* Library diagnostics through the same log API. */
void ms_client_diag(ms_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
