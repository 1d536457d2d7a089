/* A repeatable random source for tests and fuzz targets: the library has
 * no source of its own (objects that need one fail with MS_ERR_RANDOM), so
 * programs without a loop or driver install this one before main. Not
 * secret: a counter through splitmix64. */
#ifndef MS_TEST_RANDOM_H
#define MS_TEST_RANDOM_H

#include <microstream/ms_common.h>

#include <stddef.h>
#include <stdint.h>

static int ms_test_random_(void *buf, size_t len, void *ud) {
  static uint64_t counter;
  uint8_t *p = buf;
  (void)ud;
  while (len > 0) {
    uint64_t z = (counter += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    for (int i = 0; i < 8 && len > 0; i++, len--)
      *p++ = (uint8_t)(z >> (8 * i));
  }
  return 0;
}

__attribute__((constructor)) static void ms_test_random_install_(void) {
  if (!ms_random_is_set())
    ms_set_random(ms_test_random_, NULL);
}

#endif
