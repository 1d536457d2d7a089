/* Tiny TAP test harness: one file per module, a list of named tests. */
#ifndef MS_TEST_H
#define MS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ms_test_random.h"

static int ms_test_failed_;

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      printf("#   %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ms_test_failed_ = 1;                                                \
      return;                                                             \
    }                                                                     \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                   \
  do {                                                                       \
    long long a_ = (long long)(a), b_ = (long long)(b);                      \
    if (a_ != b_) {                                                          \
      printf("#   %s:%d: %s == %s failed: %lld != %lld\n", __FILE__,         \
             __LINE__, #a, #b, a_, b_);                                      \
      ms_test_failed_ = 1;                                                   \
      return;                                                                \
    }                                                                        \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                    \
  do {                                                                        \
    const char *a_ = (a), *b_ = (b);                                          \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                  \
      printf("#   %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,      \
             __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");       \
      ms_test_failed_ = 1;                                                    \
      return;                                                                 \
    }                                                                         \
  } while (0)

#define CHECK_MEM(a, alen, b, blen)                                        \
  do {                                                                     \
    size_t al_ = (alen), bl_ = (blen);                                     \
    if (al_ != bl_ || memcmp((a), (b), al_) != 0) {                        \
      printf("#   %s:%d: memory %s differs from %s (len %zu vs %zu)\n",    \
             __FILE__, __LINE__, #a, #b, al_, bl_);                        \
      ms_test_failed_ = 1;                                                 \
      return;                                                              \
    }                                                                      \
  } while (0)

typedef struct ms_test_case {
  const char *name;
  void (*fn)(void);
} ms_test_case;

#define TEST(name) {#name, name}

/* Runs the list (or only argv[1] if given); prints TAP. */
static inline int ms_test_run(const ms_test_case *tests, size_t n, int argc,
                              char **argv) {
  size_t planned = 0;
  for (size_t i = 0; i < n; i++)
    if (argc < 2 || strcmp(argv[1], tests[i].name) == 0)
      planned++;
  printf("1..%zu\n", planned);
  int failures = 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (argc >= 2 && strcmp(argv[1], tests[i].name) != 0)
      continue;
    ms_test_failed_ = 0;
    tests[i].fn();
    k++;
    printf("%s %zu - %s\n", ms_test_failed_ ? "not ok" : "ok", k,
           tests[i].name);
    fflush(stdout);
    failures += ms_test_failed_;
  }
  return failures ? 1 : 0;
}

#define MS_TEST_MAIN(list)                                                  \
  int main(int argc, char **argv) {                                         \
    return ms_test_run(list, sizeof(list) / sizeof(list[0]), argc, argv);   \
  }

#endif
