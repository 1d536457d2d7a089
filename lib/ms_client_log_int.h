/* The client's log state, shared by ms_client_log.c (level, sink,
 * shipping ring) and ms_client_sub.c (subscriptions to the hub's streams).
 * Not installed. */
#ifndef MS_CLIENT_LOG_INT_H
#define MS_CLIENT_LOG_INT_H

#include "ms_ring.h"
#include "ms_client_int.h"

#define SUB_ID_BASE (UINT64_C(1) << 52) /* kept apart from request ids */

typedef struct qrec {
  int64_t ts_us;
  int64_t level;
  size_t message_len, fields_len;
  char data[]; /* message, then fields (MessagePack map) */
} qrec;

typedef struct csub {
  uint64_t sub_id;
  int presence;
  char **services;
  size_t n_services;
  int64_t min_level;
  char *contains;
  uint64_t history;
  ms_record_fn fn;
  void *ud;
  uint64_t last_seq;
  char hub_id[129]; /* hub whose numbering last_seq belongs to */
  struct csub *next;
} csub;

struct ms_client_logs {
  int level;
  ms_log_sink_fn sink;
  void *sink_ud;
  int64_t (*wall)(void *);
  void *wall_ud;
  /* qrec *, waiting to be shipped: at most ms_log_set_queue records and
   * RING_MAX_BYTES bytes, the oldest leave (counted below) */
  ms_ring ring;
  uint64_t dropped_total;
  uint64_t dropped_unreported;
  /* Records shipped on this connection the hub has not confirmed (a PONG
   * to a PING sent after them: it answers in order), the sync asked for
   * (its PING number, 0: none), and what it covers. */
  uint64_t unconfirmed, sync_no, sync_covers, next_sync;
  int sync_state; /* 1 confirmed, 0 waiting, MS_ERR_CLOSED, MS_ERR_STATE */
  uint64_t unconfirmed_lost; /* shipped on connections that ended first */
  csub *subs;
  uint64_t next_sub;
  int in_diag;
  int sink_chosen, clock_chosen; /* by the application: keep them */
};

/* The client's log state, created on first use; NULL when out of memory. */
ms_client_logs *ms_client_logs_of(ms_client *c);

/* ms_client_sub.c: (re)send every subscription; free them all. */
void ms_client_subs_ready(ms_client *c, ms_client_logs *l);
void ms_client_subs_free(ms_client *c, ms_client_logs *l);

#endif
