/* The Redis side of a clustered hub (internal to the driver core). The
 * driver calls flush at the end of each loop iteration (so that every
 * message for another hub made during it leaves in one PUBLISH per hub),
 * tick when its timer fires, and keeps its timer at next_deadline. */
#ifndef MS_DRV_CLUSTER_H
#define MS_DRV_CLUSTER_H

#include <microstream/ms_cluster.h>

#include "ms_driver.h"

typedef struct ms_rcl ms_rcl;

int ms_rcl_new(ms_rcl **out, ms_drv *d, ms_hub *h,
               const ms_cluster_config *cfg);
/* Detach: never calls the hub again (the sockets go with ms_rcl_del, from
 * outside any hiredis callback). */
void ms_rcl_detach(ms_rcl *c);
void ms_rcl_del(ms_rcl *c);
void ms_rcl_flush(ms_rcl *c);
void ms_rcl_tick(ms_rcl *c, int64_t now);
int64_t ms_rcl_next_deadline(const ms_rcl *c);
void ms_rcl_stats(const ms_rcl *c, ms_cluster_stats *st);
/* Leave the cluster cleanly: say goodbye, give back names. */
void ms_rcl_leave(ms_rcl *c);
/* Commands still waiting for their replies. */
size_t ms_rcl_pending(const ms_rcl *c);

/* For the fuzz target and the allocation-failure test: a cluster with no
 * driver (time standing still), both connections as if open; feed takes
 * data as the bytes Redis sent (see ms_drv_cluster.c). flush takes what
 * it would send as written; tick runs the renewal and the peers' check
 * (while up). Deleted with ms_rcl_del. */
ms_rcl *ms_rcl_fuzz_new(ms_hub *h);
void ms_rcl_fuzz_feed(ms_rcl *c, const uint8_t *data, size_t size);
/* From this call on, the commands taken as written are kept: a test
 * reads them (the bytes since the last call) with ms_rcl_fuzz_sent. */
const char *ms_rcl_fuzz_sent(ms_rcl *c, size_t *len);

/* From the driver core, for the cluster. */
void ms_drv_watch(ms_drv *d, ms_drv_io *io, unsigned events);
void ms_drv_unwatch(ms_drv *d, ms_drv_io *io);
void ms_drv_io_setup(ms_drv_io *io, ms_drv *d, int fd,
                     void (*ready)(ms_drv_io *, unsigned));
int64_t ms_drv_now(ms_drv *d);
/* Ask for a flush at the end of this iteration. */
void ms_drv_want_flush(ms_drv *d);

#endif
