/* Hash maps and the deadline heap (see ms_map.h). */
#include "ms_map.h"

#include <stdlib.h>

/* ---- hashing ---- */

static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

/* FNV-1a over the bytes, finished with a 64-bit mixer and a per-map seed
 * so that chosen names cannot be lined up into one probe run. */
uint64_t ms_hash_bytes(const void *data, size_t len, uint64_t seed) {
  const uint8_t *p = data;
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ seed;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= UINT64_C(0x100000001b3);
  }
  return mix64(h ^ len);
}

/* ---- u64 map ---- */

void ms_u64map_init(ms_u64map *m, const ms_allocator *mem) {
  memset(m, 0, sizeof *m);
  m->mem = ms_mem_or_default(mem);
}

void ms_u64map_free(ms_u64map *m) {
  ms_free(m->mem, m->keys);
  ms_free(m->mem, m->vals);
  m->keys = NULL;
  m->vals = NULL;
  m->cap = m->n = 0;
}

void *ms_u64map_get(const ms_u64map *m, uint64_t key) {
  if (!m->cap)
    return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
    if (m->keys[i] == key)
      return m->vals[i];
    if (m->keys[i] == 0)
      return NULL;
  }
}

static int u64_grow(ms_u64map *m) {
  size_t ncap = m->cap ? m->cap * 2 : 8;
  uint64_t *nk = ms_calloc(m->mem, ncap, sizeof *nk);
  void **nv = ms_calloc(m->mem, ncap, sizeof *nv);
  if (!nk || !nv) {
    ms_free(m->mem, nk);
    ms_free(m->mem, nv);
    return MS_ERR_NOMEM;
  }
  size_t mask = ncap - 1;
  for (size_t j = 0; j < m->cap; j++) {
    if (!m->keys[j])
      continue;
    size_t i = mix64(m->keys[j]) & mask;
    while (nk[i])
      i = (i + 1) & mask;
    nk[i] = m->keys[j];
    nv[i] = m->vals[j];
  }
  ms_free(m->mem, m->keys);
  ms_free(m->mem, m->vals);
  m->keys = nk;
  m->vals = nv;
  m->cap = ncap;
  return 0;
}

int ms_u64map_put(ms_u64map *m, uint64_t key, void *val) {
  if ((m->n + 1) * 4 > m->cap * 3) {
    int rv = u64_grow(m);
    if (rv)
      return rv;
  }
  size_t mask = m->cap - 1;
  size_t i = mix64(key) & mask;
  for (; m->keys[i]; i = (i + 1) & mask) {
    if (m->keys[i] == key) {
      m->vals[i] = val;
      return 0;
    }
  }
  m->keys[i] = key;
  m->vals[i] = val;
  m->n++;
  return 0;
}

void *ms_u64map_del(ms_u64map *m, uint64_t key) {
  if (!m->cap)
    return NULL;
  size_t mask = m->cap - 1;
  size_t i = mix64(key) & mask;
  for (; m->keys[i] != key; i = (i + 1) & mask)
    if (m->keys[i] == 0)
      return NULL;
  void *val = m->vals[i];
  /* Backward-shift: pull later members of the run into the hole. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (m->keys[j] == 0)
      break;
    size_t home = mix64(m->keys[j]) & mask;
    /* Move j to i unless its home lies cyclically in (i, j]. */
    if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
      m->keys[i] = m->keys[j];
      m->vals[i] = m->vals[j];
      i = j;
    }
  }
  m->keys[i] = 0;
  m->vals[i] = NULL;
  m->n--;
  return val;
}

/* ---- string map ---- */

void ms_strmap_init(ms_strmap *m, const ms_allocator *mem, uint64_t seed) {
  memset(m, 0, sizeof *m);
  m->mem = ms_mem_or_default(mem);
  m->seed = seed;
}

void ms_strmap_free(ms_strmap *m) {
  ms_free(m->mem, m->ents);
  m->ents = NULL;
  m->cap = m->n = 0;
}

static size_t str_find(const ms_strmap *m, const char *key, size_t len,
                       uint64_t h, int *found) {
  size_t mask = m->cap - 1;
  size_t i = h & mask;
  for (; m->ents[i].key; i = (i + 1) & mask) {
    const ms_strmap_ent *e = &m->ents[i];
    if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
      *found = 1;
      return i;
    }
  }
  *found = 0;
  return i;
}

void *ms_strmap_get(const ms_strmap *m, const char *key, size_t len) {
  if (!m->cap)
    return NULL;
  int found;
  size_t i = str_find(m, key, len, ms_hash_bytes(key, len, m->seed), &found);
  return found ? m->ents[i].val : NULL;
}

static int str_grow(ms_strmap *m) {
  size_t ncap = m->cap ? m->cap * 2 : 16;
  ms_strmap_ent *ne = ms_calloc(m->mem, ncap, sizeof *ne);
  if (!ne)
    return MS_ERR_NOMEM;
  size_t mask = ncap - 1;
  for (size_t j = 0; j < m->cap; j++) {
    if (!m->ents[j].key)
      continue;
    size_t i = m->ents[j].hash & mask;
    while (ne[i].key)
      i = (i + 1) & mask;
    ne[i] = m->ents[j];
  }
  ms_free(m->mem, m->ents);
  m->ents = ne;
  m->cap = ncap;
  return 0;
}

int ms_strmap_put(ms_strmap *m, const char *key, size_t len, void *val) {
  if ((m->n + 1) * 4 > m->cap * 3) {
    int rv = str_grow(m);
    if (rv)
      return rv;
  }
  uint64_t h = ms_hash_bytes(key, len, m->seed);
  int found;
  size_t i = str_find(m, key, len, h, &found);
  if (!found)
    m->n++;
  m->ents[i].key = key;
  m->ents[i].len = len;
  m->ents[i].hash = h;
  m->ents[i].val = val;
  return 0;
}

void *ms_strmap_del(ms_strmap *m, const char *key, size_t len) {
  if (!m->cap)
    return NULL;
  int found;
  size_t i = str_find(m, key, len, ms_hash_bytes(key, len, m->seed), &found);
  if (!found)
    return NULL;
  void *val = m->ents[i].val;
  size_t mask = m->cap - 1, j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!m->ents[j].key)
      break;
    size_t home = m->ents[j].hash & mask;
    if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
      m->ents[i] = m->ents[j];
      i = j;
    }
  }
  memset(&m->ents[i], 0, sizeof m->ents[i]);
  m->n--;
  return val;
}

const ms_strmap_ent *ms_strmap_next(const ms_strmap *m, size_t *pos) {
  while (*pos < m->cap) {
    const ms_strmap_ent *e = &m->ents[(*pos)++];
    if (e->key)
      return e;
  }
  return NULL;
}

/* ---- heap ---- */

void ms_heap_init(ms_heap *h, const ms_allocator *mem) {
  memset(h, 0, sizeof *h);
  h->mem = ms_mem_or_default(mem);
}

/* Nodes are not touched: their owners may already be gone. */
void ms_heap_free(ms_heap *h) {
  ms_free(h->mem, h->v);
  h->v = NULL;
  h->n = h->cap = 0;
}

static inline void heap_set(ms_heap *h, size_t i, ms_hnode *n) {
  h->v[i] = n;
  n->idx = i + 1;
}

static void sift_up(ms_heap *h, size_t i) {
  ms_hnode *n = h->v[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (h->v[p]->deadline <= n->deadline)
      break;
    heap_set(h, i, h->v[p]);
    i = p;
  }
  heap_set(h, i, n);
}

static void sift_down(ms_heap *h, size_t i) {
  ms_hnode *n = h->v[i];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    int64_t md = n->deadline;
    if (l < h->n && h->v[l]->deadline < md) {
      m = l;
      md = h->v[l]->deadline;
    }
    if (r < h->n && h->v[r]->deadline < md)
      m = r;
    if (m == i)
      break;
    heap_set(h, i, h->v[m]);
    i = m;
  }
  heap_set(h, i, n);
}

int ms_heap_push(ms_heap *h, ms_hnode *node, int64_t deadline) {
  if (node->idx)
    return ms_heap_update(h, node, deadline);
  if (h->n == h->cap) {
    size_t ncap = h->cap ? h->cap * 2 : 16;
    ms_hnode **nv = ms_realloc(h->mem, h->v, ncap * sizeof *nv);
    if (!nv)
      return MS_ERR_NOMEM;
    h->v = nv;
    h->cap = ncap;
  }
  node->deadline = deadline;
  heap_set(h, h->n++, node);
  sift_up(h, h->n - 1);
  return 0;
}

void ms_heap_remove(ms_heap *h, ms_hnode *node) {
  if (!node->idx)
    return;
  size_t i = node->idx - 1;
  node->idx = 0;
  h->n--;
  if (i == h->n)
    return;
  heap_set(h, i, h->v[h->n]);
  if (i > 0 && h->v[(i - 1) / 2]->deadline > h->v[i]->deadline)
    sift_up(h, i);
  else
    sift_down(h, i);
}

int ms_heap_update(ms_heap *h, ms_hnode *node, int64_t deadline) {
  if (!node->idx)
    return ms_heap_push(h, node, deadline);
  int64_t old = node->deadline;
  node->deadline = deadline;
  if (deadline < old)
    sift_up(h, node->idx - 1);
  else
    sift_down(h, node->idx - 1);
  return 0;
}
