/* ChaCha keystream generator; see ms_rand.h for why one per object. */
#include "ms_rand.h"
#include "ms_internal.h"

#include <string.h>

static ms_random_fn source;
static void *source_ud;

void ms_set_random(ms_random_fn fn, void *user_data) {
  source = fn;
  source_ud = user_data;
}

int ms_random_is_set(void) { return source != NULL; }

/* No source, no randomness: a fixed key would give every hub the same
 * id and every session id away. The caller fails with MS_ERR_RANDOM. */
int ms_random(void *buf, size_t len) {
  memset(buf, 0, len);
  if (!source)
    return MS_ERR_RANDOM;
  return source(buf, len, source_ud) == 0 ? 0 : MS_ERR_RANDOM;
}

static void rand_key(ms_rand *r, const uint8_t key[32]) {
  /* A zero nonce is fine: each key is fresh and used for one stream. */
  static const uint8_t nonce[CHACHA_NONCE_SIZE] = {0};
  chacha_set_key(&r->chacha, key);
  chacha_set_nonce(&r->chacha, nonce);
  r->avail = 0;
}

int ms_rand_init(ms_rand *r) {
  uint8_t key[CHACHA_KEY_SIZE];
  int rv = ms_random(key, sizeof key);
  rand_key(r, key);
  memset(key, 0, sizeof key);
  return rv;
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
