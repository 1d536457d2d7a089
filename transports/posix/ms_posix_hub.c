/*
 * microstream: an ms_hub on an ms_loop, through the driver core (accept,
 * per-connection pumps, one flush per connection per iteration from the
 * hub's dirty list, backpressure, the hub's timer).
 */
#include "ms_internal.h"
#include "ms_posix_internal.h"

struct ms_posix_hub {
  ms_posix_drv x;
};

int ms_posix_hub_new(ms_posix_hub **pp, ms_loop *loop, ms_hub *h,
                     const char *host, int port) {
  if (!pp || !loop || !h)
    return MS_ERR_INVALID_ARG;
  ms_posix_drv *x;
  int rv = ms_posix_drv_alloc(&x, sizeof(ms_posix_hub), loop);
  if (rv < 0)
    return rv;
  rv = ms_drv_hub_new(&x->d, h, host, port, &ms_posix_drv_hooks, x);
  if (rv < 0) {
    ms_posix_drv_free(x);
    return rv;
  }
  *pp = (ms_posix_hub *)x;
  return 0;
}

int ms_posix_hub_listen(ms_posix_hub *p, const char *host, int port,
                        int *bound_port) {
  if (!p || !host)
    return MS_ERR_INVALID_ARG;
  return ms_drv_hub_listen(p->x.d, host, port, NULL, bound_port);
}

int ms_posix_hub_listen_tls(ms_posix_hub *p, const char *host, int port,
                            const ms_stream_wrap *tls, int *bound_port) {
  if (!p || !host || !tls)
    return MS_ERR_INVALID_ARG;
  return ms_drv_hub_listen(p->x.d, host, port, tls, bound_port);
}

int ms_posix_hub_port(const ms_posix_hub *p) {
  return p ? ms_drv_hub_port(p->x.d) : -1;
}

void ms_posix_hub_stop_listening(ms_posix_hub *p) {
  if (p)
    ms_drv_hub_stop_listening(p->x.d);
}

size_t ms_posix_hub_streams(const ms_posix_hub *p) {
  return p ? ms_drv_hub_streams(p->x.d) : 0;
}

int ms_posix_hub_cluster(ms_posix_hub *p, const ms_cluster_config *cfg) {
  return p ? ms_drv_hub_cluster(p->x.d, cfg) : MS_ERR_INVALID_ARG;
}

void ms_posix_hub_cluster_leave(ms_posix_hub *p) {
  if (p)
    ms_drv_hub_cluster_leave(p->x.d);
}

size_t ms_posix_hub_cluster_pending(const ms_posix_hub *p) {
  return p ? ms_drv_hub_cluster_pending(p->x.d) : 0;
}

int ms_posix_hub_cluster_stats(const ms_posix_hub *p, ms_cluster_stats *st) {
  return p ? ms_drv_hub_cluster_stats(p->x.d, st) : MS_ERR_INVALID_ARG;
}

void ms_posix_hub_del(ms_posix_hub *p) {
  if (p)
    ms_drv_del(p->x.d);
}
