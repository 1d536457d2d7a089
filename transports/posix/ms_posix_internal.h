/* Internal helpers shared by the POSIX drivers (not installed). */
#ifndef MS_POSIX_INTERNAL_H
#define MS_POSIX_INTERNAL_H

#include <microstream/ms_posix.h>
#include "../common/ms_driver.h"

/* Re-arm a timer handle kept by its owner to fire at absolute monotonic
 * time `when` (ms_loop_now clock); MS_NO_DEADLINE disarms it without
 * freeing it. Drivers keep one handle and move it after every pump. */
void ms_timer_set_at(ms_timer *t, int64_t when);

/* Drop every deferred call of fn with user_data (an object that is
 * going away must not be called later). */
void ms_loop_defer_cancel(ms_loop *loop, void (*fn)(void *user_data),
                          void *user_data);

/* The built-in loop as a driver-core backend: what ms_posix_client and
 * ms_posix_hub hold. */
typedef struct ms_posix_drv {
  ms_loop *loop;
  ms_timer *timer;
  ms_drv *d;
} ms_posix_drv;

extern const ms_drv_hooks ms_posix_drv_hooks;
/* Allocate the backend state (size >= sizeof(ms_posix_drv)) with its
 * timer; ms_posix_drv_hooks.release frees it. */
int ms_posix_drv_alloc(ms_posix_drv **out, size_t size, ms_loop *loop);
void ms_posix_drv_free(ms_posix_drv *x);

#endif
