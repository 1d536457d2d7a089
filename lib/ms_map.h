/* Hash maps (open addressing, linear probing, backward-shift deletion:
 * no tombstones, so lookups stay short under churn) and the deadline
 * min-heap. Used by the pending-request tables and the hub registry. */
#ifndef MS_MAP_H
#define MS_MAP_H

#include "ms_internal.h"

/* uint64 key -> pointer. Key 0 is not allowed (ids start at 1). */
typedef struct ms_u64map {
  uint64_t *keys;
  void **vals;
  size_t cap; /* power of two, or 0 */
  size_t n;
  const ms_allocator *mem;
} ms_u64map;

void ms_u64map_init(ms_u64map *m, const ms_allocator *mem);
void ms_u64map_free(ms_u64map *m);
void *ms_u64map_get(const ms_u64map *m, uint64_t key);
/* Insert or replace. Returns 0 or MS_ERR_NOMEM. */
int ms_u64map_put(ms_u64map *m, uint64_t key, void *val);
/* Remove; returns the value or NULL. */
void *ms_u64map_del(ms_u64map *m, uint64_t key);

/* String key -> pointer. The key bytes are borrowed: they must live as
 * long as the entry (the hub keys by the connection's own name copy). */
typedef struct ms_strmap_ent {
  const char *key;
  size_t len;
  uint64_t hash;
  void *val;
} ms_strmap_ent;
typedef struct ms_strmap {
  ms_strmap_ent *ents;
  size_t cap, n;
  uint64_t seed;
  const ms_allocator *mem;
} ms_strmap;

void ms_strmap_init(ms_strmap *m, const ms_allocator *mem, uint64_t seed);
void ms_strmap_free(ms_strmap *m);
void *ms_strmap_get(const ms_strmap *m, const char *key, size_t len);
int ms_strmap_put(ms_strmap *m, const char *key, size_t len, void *val);
void *ms_strmap_del(ms_strmap *m, const char *key, size_t len);
/* Iterate: *pos starts at 0; returns the next entry or NULL. */
const ms_strmap_ent *ms_strmap_next(const ms_strmap *m, size_t *pos);

/* Deadline min-heap of nodes embedded in their owners. */
typedef struct ms_hnode {
  int64_t deadline;
  size_t idx; /* position + 1; 0 = not in the heap */
} ms_hnode;
typedef struct ms_heap {
  ms_hnode **v;
  size_t n, cap;
  const ms_allocator *mem;
} ms_heap;

void ms_heap_init(ms_heap *h, const ms_allocator *mem);
void ms_heap_free(ms_heap *h);
int ms_heap_push(ms_heap *h, ms_hnode *node, int64_t deadline);
void ms_heap_remove(ms_heap *h, ms_hnode *node);
/* Change the deadline of a node in the heap (or push it if absent). */
int ms_heap_update(ms_heap *h, ms_hnode *node, int64_t deadline);
static inline ms_hnode *ms_heap_top(const ms_heap *h) {
  return h->n ? h->v[0] : NULL;
}
static inline int64_t ms_heap_next(const ms_heap *h) {
  return h->n ? h->v[0]->deadline : MS_NO_DEADLINE;
}

uint64_t ms_hash_bytes(const void *data, size_t len, uint64_t seed);

#endif
