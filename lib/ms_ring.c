/* The bounded ring (see ms_ring.h). */
#include "ms_ring.h"

#define FIRST_SLOTS 16

static size_t item_size(const ms_ring *r, const void *item) {
  return r->size ? r->size(item) : 0;
}

void ms_ring_init(ms_ring *r, const ms_allocator *mem, size_t max,
                  size_t max_bytes, int policy, ms_ring_size_fn size,
                  ms_ring_drop_fn drop, void *drop_ud) {
  memset(r, 0, sizeof *r);
  r->mem = ms_mem_or_default(mem);
  r->max = max ? max : 1;
  r->max_bytes = max_bytes;
  r->policy = policy;
  r->size = size;
  r->drop = drop;
  r->drop_ud = drop_ud;
}

/* Move the items to `ncap` fresh slots, oldest first. */
static int regrow(ms_ring *r, size_t ncap) {
  void **ns = ms_calloc(r->mem, ncap, sizeof *ns);
  if (!ns)
    return MS_ERR_NOMEM;
  for (size_t i = 0; i < r->n; i++)
    ns[i] = ms_ring_at(r, i);
  ms_free(r->mem, r->slot);
  r->slot = ns;
  r->cap = ncap;
  r->head = 0;
  return 0;
}

int ms_ring_reserve(ms_ring *r) {
  return r->cap >= r->max ? 0 : regrow(r, r->max);
}

void ms_ring_set_max(ms_ring *r, size_t max) { r->max = max ? max : 1; }

void *ms_ring_pop(ms_ring *r) {
  if (r->n == 0)
    return NULL;
  void *item = r->slot[r->head];
  r->slot[r->head] = NULL;
  r->head = (r->head + 1) % r->cap;
  r->n--;
  r->bytes -= item_size(r, item);
  return item;
}

static void evict_oldest(ms_ring *r) {
  void *old = ms_ring_pop(r);
  r->dropped++;
  if (r->drop)
    r->drop(old, r->drop_ud);
}

int ms_ring_push(ms_ring *r, void *item) {
  size_t sz = item_size(r, item);
  int full_count = r->n >= r->max;
  int full_bytes = r->max_bytes && r->bytes + sz > r->max_bytes;
  if ((full_count || full_bytes) && r->policy == MS_RING_REFUSE) {
    r->refused++;
    return MS_ERR_LIMIT;
  }
  /* A slot for it: grow (doubling, up to max) before evicting anything,
   * so a failed growth loses nothing already held. */
  if (r->n == r->cap && r->cap < r->max) {
    size_t ncap = r->cap ? r->cap * 2 : FIRST_SLOTS;
    if (ncap > r->max || ncap < r->cap)
      ncap = r->max;
    if (regrow(r, ncap) != 0) {
      r->refused++;
      return MS_ERR_NOMEM;
    }
  }
  /* Oldest out while over the count or the byte bound. */
  while (r->n > 0 &&
         (r->n >= r->max || r->n == r->cap ||
          (r->max_bytes && r->bytes + sz > r->max_bytes)))
    evict_oldest(r);
  r->slot[(r->head + r->n) % r->cap] = item;
  r->n++;
  r->bytes += sz;
  r->pushed++;
  return 0;
}

void ms_ring_clear(ms_ring *r) {
  while (r->n > 0) {
    void *item = ms_ring_pop(r);
    if (r->drop)
      r->drop(item, r->drop_ud);
  }
  r->head = 0;
  r->bytes = 0;
}

void ms_ring_free(ms_ring *r) {
  ms_ring_clear(r);
  ms_free(r->mem, r->slot);
  r->slot = NULL;
  r->cap = 0;
}
