/* The OS random source the drivers install for the library. */
#include "ms_internal.h"

#include <microstream/ms_posix.h>

#include <errno.h>
#include <sys/random.h>

int ms_posix_random(void *buf, size_t len, void *user_data) {
  MS_UNUSED(user_data);
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = getrandom(p, len, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return MS_ERR_RANDOM;
    }
    p += r;
    len -= (size_t)r;
  }
  return 0;
}
