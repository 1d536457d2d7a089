/* ChaCha keystream generator; see ms_rand.h for why one per object. */
#include "ms_rand.h"
#include "ms_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

void ms_os_random(void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = getrandom(p, len, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      abort(); /* no entropy source: nothing sensible to do */
    }
    p += r;
    len -= (size_t)r;
  }
}

static void rand_key(ms_rand *r, const uint8_t key[32]) {
  /* A zero nonce is fine: each key is fresh and used for one stream. */
  static const uint8_t nonce[CHACHA_NONCE_SIZE] = {0};
  chacha_set_key(&r->chacha, key);
  chacha_set_nonce(&r->chacha, nonce);
  r->avail = 0;
}

void ms_rand_init(ms_rand *r) {
  uint8_t key[CHACHA_KEY_SIZE];
  ms_os_random(key, sizeof key);
  rand_key(r, key);
  memset(key, 0, sizeof key);
}

void ms_rand_init_seed(ms_rand *r, const uint8_t seed[32]) {
  rand_key(r, seed);
}

static void refill(ms_rand *r) {
  /* Encrypting zeros yields the raw keystream. */
  memset(r->block, 0, sizeof r->block);
  chacha_crypt(&r->chacha, sizeof r->block, r->block, r->block);
  r->avail = sizeof r->block;
}

void ms_rand_bytes(ms_rand *r, void *out, size_t len) {
  uint8_t *p = out;
  while (len > 0) {
    if (r->avail == 0)
      refill(r);
    size_t n = MS_MIN(len, r->avail);
    uint8_t *src = r->block + sizeof r->block - r->avail;
    memcpy(p, src, n);
    /* Erase what was handed out so a later memory leak cannot reveal it. */
    memset(src, 0, n);
    r->avail -= n;
    p += n;
    len -= n;
  }
}

uint64_t ms_rand_u64(ms_rand *r) {
  uint8_t b[8];
  uint64_t v = 0;
  ms_rand_bytes(r, b, sizeof b);
  for (size_t i = 0; i < sizeof b; i++)
    v = (v << 8) | b[i];
  return v;
}
