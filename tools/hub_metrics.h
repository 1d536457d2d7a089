/* The hub program's own figures for /metrics: the log store (records
 * stored and dropped, write latency, file size) and the process (memory,
 * descriptors, CPU time), in the Prometheus text format. */
#ifndef MS_HUB_METRICS_H
#define MS_HUB_METRICS_H

#include <microstream/ms_hub.h>

#include "ms_store.h"

#define HUB_FLUSH_BUCKETS 10

typedef struct hub_store_timing {
  uint64_t buckets[HUB_FLUSH_BUCKETS]; /* not cumulative; last is +Inf */
  uint64_t count;
  double sum_s;
} hub_store_timing;

/* Count one store write (flush) that took `seconds`. */
void hub_store_timing_observe(hub_store_timing *t, double seconds);

/* Append the store's figures (store may be NULL: none) and the process's
 * to b. Returns 0 or MS_ERR_NOMEM. */
int hub_metrics_text(ms_buf *b, const ms_store *store, const char *store_path,
                     const hub_store_timing *t, double start_time_s);

#endif
