/* The default allocator (the C library's) and allocation helpers. */
#include "ms_internal.h"

#include <stdlib.h>

static void *d_malloc(size_t n, void *ud) { (void)ud; return malloc(n); }
static void d_free(void *p, void *ud) { (void)ud; free(p); }
static void *d_calloc(size_t k, size_t n, void *ud) { (void)ud; return calloc(k, n); }
static void *d_realloc(void *p, size_t n, void *ud) { (void)ud; return realloc(p, n); }

static const ms_allocator default_allocator = {d_malloc, d_free, d_calloc,
                                               d_realloc, NULL};

const ms_allocator *ms_default_allocator(void) { return &default_allocator; }

char *ms_strndup(const ms_allocator *m, const char *s, size_t n) {
  char *r = ms_malloc(m, n + 1);
  if (!r)
    return NULL;
  if (n)
    memcpy(r, s, n);
  r[n] = '\0';
  return r;
}
