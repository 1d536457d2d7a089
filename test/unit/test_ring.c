/* The bounded ring: order across wrap-around, growth up to the bound, the
 * two policies when full, the byte bound, and the counters. */
#include "ms_test.h"

#include "ms_ring.h"

typedef struct item {
  int v;
  size_t bytes;
} item;

static size_t item_bytes(const void *p) { return ((const item *)p)->bytes; }

static int dropped_v[64];
static int ndropped;
static void on_drop(void *p, void *ud) {
  (void)ud;
  if (ndropped < 64)
    dropped_v[ndropped++] = ((item *)p)->v;
}

static item items[64];
static item *it(int v, size_t bytes) {
  items[v].v = v;
  items[v].bytes = bytes;
  return &items[v];
}

static void fifo_order_survives_wrap_around(void) {
  ms_ring r;
  ms_ring_init(&r, NULL, 4, 0, MS_RING_REFUSE, NULL, NULL, NULL);
  CHECK_EQ_INT(ms_ring_reserve(&r), 0);
  int next_in = 0, next_out = 0;
  for (int round = 0; round < 10; round++) {
    CHECK_EQ_INT(ms_ring_push(&r, it(next_in++ % 64, 0)), 0);
    CHECK_EQ_INT(ms_ring_push(&r, it(next_in++ % 64, 0)), 0);
    CHECK_EQ_INT(ms_ring_len(&r), 2);
    CHECK_EQ_INT(((item *)ms_ring_at(&r, 1))->v, (next_out + 1) % 64);
    CHECK_EQ_INT(((item *)ms_ring_pop(&r))->v, next_out++ % 64);
    CHECK_EQ_INT(((item *)ms_ring_pop(&r))->v, next_out++ % 64);
  }
  CHECK(ms_ring_pop(&r) == NULL);
  CHECK_EQ_INT(r.cap, 4);
  CHECK_EQ_INT(r.pushed, 20);
  ms_ring_free(&r);
}

static void full_ring_refuses_under_refuse_policy(void) {
  ms_ring r;
  ms_ring_init(&r, NULL, 3, 0, MS_RING_REFUSE, NULL, on_drop, NULL);
  ndropped = 0;
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(ms_ring_push(&r, it(i, 0)), 0);
  CHECK_EQ_INT(ms_ring_push(&r, it(3, 0)), MS_ERR_LIMIT);
  CHECK_EQ_INT(ms_ring_len(&r), 3);
  CHECK_EQ_INT(r.refused, 1);
  CHECK_EQ_INT(r.dropped, 0);
  CHECK_EQ_INT(ndropped, 0);
  CHECK_EQ_INT(((item *)ms_ring_at(&r, 0))->v, 0);
  ms_ring_free(&r); /* what it held goes to drop() */
  CHECK_EQ_INT(ndropped, 3);
}

static void full_ring_drops_oldest_under_drop_policy(void) {
  ms_ring r;
  ms_ring_init(&r, NULL, 3, 0, MS_RING_DROP_OLDEST, NULL, on_drop, NULL);
  ndropped = 0;
  for (int i = 0; i < 7; i++)
    CHECK_EQ_INT(ms_ring_push(&r, it(i, 0)), 0);
  CHECK_EQ_INT(ms_ring_len(&r), 3);
  CHECK_EQ_INT(r.dropped, 4);
  CHECK_EQ_INT(r.refused, 0);
  CHECK_EQ_INT(ndropped, 4);
  for (int i = 0; i < 4; i++)
    CHECK_EQ_INT(dropped_v[i], i);
  for (int k = 0; k < 3; k++)
    CHECK_EQ_INT(((item *)ms_ring_at(&r, (size_t)k))->v, 4 + k);
  ms_ring_free(&r);
}

static void byte_bound_evicts_until_the_new_item_fits(void) {
  ms_ring r;
  ms_ring_init(&r, NULL, 100, 10, MS_RING_DROP_OLDEST, item_bytes, on_drop,
               NULL);
  ndropped = 0;
  CHECK_EQ_INT(ms_ring_push(&r, it(0, 4)), 0);
  CHECK_EQ_INT(ms_ring_push(&r, it(1, 4)), 0);
  CHECK_EQ_INT(r.bytes, 8);
  CHECK_EQ_INT(ms_ring_push(&r, it(2, 5)), 0); /* 13 > 10: 0 leaves */
  CHECK_EQ_INT(ms_ring_len(&r), 2);
  CHECK_EQ_INT(r.bytes, 9);
  CHECK_EQ_INT(dropped_v[0], 0);
  /* Larger than the bound alone: everything else leaves, it stays. */
  CHECK_EQ_INT(ms_ring_push(&r, it(3, 12)), 0);
  CHECK_EQ_INT(ms_ring_len(&r), 1);
  CHECK_EQ_INT(r.bytes, 12);
  CHECK_EQ_INT(r.dropped, 3);
  CHECK_EQ_INT(((item *)ms_ring_pop(&r))->v, 3);
  CHECK_EQ_INT(r.bytes, 0);
  ms_ring_free(&r);
}

static void byte_bound_refuses_under_refuse_policy(void) {
  ms_ring r;
  ms_ring_init(&r, NULL, 100, 10, MS_RING_REFUSE, item_bytes, NULL, NULL);
  CHECK_EQ_INT(ms_ring_push(&r, it(0, 6)), 0);
  CHECK_EQ_INT(ms_ring_push(&r, it(1, 6)), MS_ERR_LIMIT);
  CHECK_EQ_INT(ms_ring_push(&r, it(2, 4)), 0);
  CHECK_EQ_INT(r.refused, 1);
  CHECK_EQ_INT(r.bytes, 10);
  ms_ring_free(&r);
}

static void slots_grow_up_to_the_bound_and_keep_order(void) {
  ms_ring r;
  ms_ring_init(&r, NULL, 40, 0, MS_RING_DROP_OLDEST, NULL, NULL, NULL);
  /* Wrap first, then grow across the wrap. */
  for (int i = 0; i < 10; i++)
    CHECK_EQ_INT(ms_ring_push(&r, it(i, 0)), 0);
  for (int i = 0; i < 8; i++)
    ms_ring_pop(&r);
  for (int i = 10; i < 50; i++)
    CHECK_EQ_INT(ms_ring_push(&r, it(i, 0)), 0);
  CHECK_EQ_INT(r.cap, 40);
  CHECK_EQ_INT(ms_ring_len(&r), 40);
  for (int k = 0; k < 40; k++)
    CHECK_EQ_INT(((item *)ms_ring_at(&r, (size_t)k))->v, 10 + k);
  /* A lower bound takes effect at the next push. */
  ms_ring_set_max(&r, 5);
  CHECK_EQ_INT(ms_ring_push(&r, it(50 % 64, 0)), 0);
  CHECK_EQ_INT(ms_ring_len(&r), 5);
  CHECK_EQ_INT(((item *)ms_ring_at(&r, 0))->v, 46);
  ms_ring_clear(&r);
  CHECK_EQ_INT(ms_ring_len(&r), 0);
  CHECK_EQ_INT(ms_ring_push(&r, it(1, 0)), 0);
  ms_ring_free(&r);
}

static int fail_alloc;
static void *f_malloc(size_t n, void *ud) {
  (void)ud;
  return fail_alloc ? NULL : malloc(n);
}
static void f_free(void *p, void *ud) {
  (void)ud;
  free(p);
}
static void *f_calloc(size_t a, size_t b, void *ud) {
  (void)ud;
  return fail_alloc ? NULL : calloc(a, b);
}
static void *f_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return fail_alloc ? NULL : realloc(p, n);
}

static void failed_growth_refuses_and_keeps_what_it_holds(void) {
  ms_allocator m = {f_malloc, f_free, f_calloc, f_realloc, NULL};
  ms_ring r;
  ms_ring_init(&r, &m, 100, 0, MS_RING_DROP_OLDEST, NULL, NULL, NULL);
  fail_alloc = 0;
  for (int i = 0; i < 16; i++)
    CHECK_EQ_INT(ms_ring_push(&r, it(i, 0)), 0);
  fail_alloc = 1;
  CHECK_EQ_INT(ms_ring_push(&r, it(16, 0)), MS_ERR_NOMEM);
  fail_alloc = 0;
  CHECK_EQ_INT(ms_ring_len(&r), 16);
  CHECK_EQ_INT(r.refused, 1);
  CHECK_EQ_INT(r.dropped, 0);
  CHECK_EQ_INT(((item *)ms_ring_at(&r, 0))->v, 0);
  ms_ring_free(&r);
}

static const ms_test_case tests[] = {
    TEST(fifo_order_survives_wrap_around),
    TEST(full_ring_refuses_under_refuse_policy),
    TEST(full_ring_drops_oldest_under_drop_policy),
    TEST(byte_bound_evicts_until_the_new_item_fits),
    TEST(byte_bound_refuses_under_refuse_policy),
    TEST(slots_grow_up_to_the_bound_and_keep_order),
    TEST(failed_growth_refuses_and_keeps_what_it_holds),
};

MS_TEST_MAIN(tests)
