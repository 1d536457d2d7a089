/*
 * microstream: the memory transport, a connected pair of in-process byte
 * streams for tests and fuzzing. Each direction is a bounded ring, so
 * tests can exercise short writes and backpressure deterministically.
 */
#include "ms_internal.h"

#include <microstream/ms_transport.h>

typedef struct mem_ring {
  uint8_t *data;
  size_t cap, head, len;
} mem_ring;

typedef struct mem_end {
  struct ms_memory_pair *pair;
  int idx;    /* 0 = end a, 1 = end b */
  int closed; /* this end called close() */
} mem_end;

struct ms_memory_pair {
  const ms_allocator *mem;
  mem_ring ring[2]; /* ring[i]: bytes travelling toward end i */
  mem_end end[2];
};

static size_t ring_put(mem_ring *r, const uint8_t *src, size_t len) {
  size_t n = MS_MIN(len, r->cap - r->len);
  size_t tail = (r->head + r->len) % r->cap;
  size_t first = MS_MIN(n, r->cap - tail);
  memcpy(r->data + tail, src, first);
  memcpy(r->data, src + first, n - first);
  r->len += n;
  return n;
}

static size_t ring_get(mem_ring *r, uint8_t *dst, size_t len) {
  size_t n = MS_MIN(len, r->len);
  size_t first = MS_MIN(n, r->cap - r->head);
  memcpy(dst, r->data + r->head, first);
  memcpy(dst + first, r->data, n - first);
  r->head = (r->head + n) % r->cap;
  r->len -= n;
  if (r->len == 0)
    r->head = 0;
  return n;
}

static ptrdiff_t mem_read(void *self, uint8_t *buf, size_t len) {
  mem_end *e = self;
  if (e->closed)
    return MS_ERR_CLOSED;
  mem_ring *r = &e->pair->ring[e->idx];
  if (len == 0)
    return 0;
  if (r->len == 0)
    return e->pair->end[!e->idx].closed ? 0 : MS_ERR_WOULDBLOCK;
  return (ptrdiff_t)ring_get(r, buf, len);
}

static ptrdiff_t mem_write(void *self, const uint8_t *buf, size_t len) {
  mem_end *e = self;
  if (e->closed || e->pair->end[!e->idx].closed)
    return MS_ERR_IO;
  if (len == 0)
    return 0;
  mem_ring *r = &e->pair->ring[!e->idx];
  size_t n = ring_put(r, buf, len);
  return n ? (ptrdiff_t)n : MS_ERR_WOULDBLOCK;
}

static int mem_get_fd(void *self) {
  MS_UNUSED(self);
  return -1;
}

static void mem_close(void *self) {
  mem_end *e = self;
  e->closed = 1;
  /* Nobody will read what was headed to this end. */
  e->pair->ring[e->idx].len = 0;
  e->pair->ring[e->idx].head = 0;
}

static const ms_transport_vtable mem_vtable = {mem_read, mem_write,
                                               mem_get_fd, mem_close};

int ms_memory_pair_new(ms_memory_pair **pp, size_t capacity, ms_transport *a,
                       ms_transport *b, const ms_allocator *mem) {
  if (!pp || !a || !b || capacity == 0)
    return MS_ERR_INVALID_ARG;
  mem = ms_mem_or_default(mem);
  ms_memory_pair *p = ms_calloc(mem, 1, sizeof(*p));
  if (!p)
    return MS_ERR_NOMEM;
  p->mem = mem;
  for (int i = 0; i < 2; i++) {
    p->ring[i].data = ms_malloc(mem, capacity);
    if (!p->ring[i].data) {
      ms_free(mem, p->ring[0].data);
      ms_free(mem, p);
      return MS_ERR_NOMEM;
    }
    p->ring[i].cap = capacity;
    p->end[i].pair = p;
    p->end[i].idx = i;
  }
  a->vt = &mem_vtable;
  a->self = &p->end[0];
  b->vt = &mem_vtable;
  b->self = &p->end[1];
  *pp = p;
  return 0;
}

void ms_memory_pair_del(ms_memory_pair *p) {
  if (!p)
    return;
  ms_free(p->mem, p->ring[0].data);
  ms_free(p->mem, p->ring[1].data);
  ms_free(p->mem, p);
}

size_t ms_memory_pair_buffered(const ms_memory_pair *p, int to_b) {
  return p ? p->ring[to_b ? 1 : 0].len : 0;
}
