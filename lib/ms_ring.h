/*
 * The bounded ring: a FIFO of pointers with a count bound and an optional
 * byte bound, for every queue of the library that must not grow without
 * limit (the hub's stream history, the client's log queue). What happens
 * when it is full is a policy of the ring, and every item it turns away
 * is counted:
 *   MS_RING_DROP_OLDEST  the oldest items leave (passed to `drop`) until
 *                        the new one fits (an item larger than max_bytes
 *                        alone is kept alone);
 *   MS_RING_REFUSE       the new item is refused (MS_ERR_LIMIT); the
 *                        caller still owns it.
 * Slots grow on demand (doubling from 16) up to `max`, or are allocated
 * once with ms_ring_reserve. Not thread-safe; no I/O.
 */
#ifndef MS_RING_H
#define MS_RING_H

#include "ms_internal.h"

#include <stddef.h>
#include <stdint.h>

enum { MS_RING_DROP_OLDEST = 0, MS_RING_REFUSE = 1 };

/* The bytes an item counts for (against max_bytes). */
typedef size_t (*ms_ring_size_fn)(const void *item);
/* An item the ring lets go of itself (evicted, or left at ms_ring_free). */
typedef void (*ms_ring_drop_fn)(void *item, void *user_data);

typedef struct ms_ring {
  void **slot;
  size_t cap;       /* slots allocated */
  size_t head;      /* index of the oldest */
  size_t n;         /* items held */
  size_t max;       /* at most this many items (>= 1) */
  size_t bytes;     /* sum of size() over the items held */
  size_t max_bytes; /* 0: no byte bound */
  int policy;
  ms_ring_size_fn size; /* NULL: items count 0 bytes */
  ms_ring_drop_fn drop; /* NULL: evicted items are only forgotten */
  void *drop_ud;
  uint64_t pushed;  /* items taken in */
  uint64_t dropped; /* items evicted (MS_RING_DROP_OLDEST) */
  uint64_t refused; /* pushes turned away (full, too big, out of memory) */
  const ms_allocator *mem;
} ms_ring;

void ms_ring_init(ms_ring *r, const ms_allocator *mem, size_t max,
                  size_t max_bytes, int policy, ms_ring_size_fn size,
                  ms_ring_drop_fn drop, void *drop_ud);
/* Allocate all `max` slots now (a ring that must not fail to grow later).
 * 0 or MS_ERR_NOMEM. */
int ms_ring_reserve(ms_ring *r);
/* Change the count bound (>= 1); items over it leave at the next push. */
void ms_ring_set_max(ms_ring *r, size_t max);
/* Hands every item held to drop(), frees the slots; the ring is empty and
 * usable again. */
void ms_ring_clear(ms_ring *r);
void ms_ring_free(ms_ring *r);

/* Add item at the newest end. Returns 0 (the ring owns it), or
 * MS_ERR_LIMIT (refused: full under MS_RING_REFUSE) or MS_ERR_NOMEM (no
 * slot could be allocated): then the caller still owns it, and `refused`
 * counted it. */
int ms_ring_push(ms_ring *r, void *item);

static inline size_t ms_ring_len(const ms_ring *r) { return r->n; }
/* The k-th oldest item (0: the oldest); k < ms_ring_len. */
static inline void *ms_ring_at(const ms_ring *r, size_t k) {
  return r->slot[(r->head + k) % r->cap];
}
/* Take the oldest item out (the caller owns it); NULL when empty. */
void *ms_ring_pop(ms_ring *r);

#endif
