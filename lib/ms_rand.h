/*
 * A small CSPRNG: a ChaCha keystream (nettle) keyed once from the
 * installed random source.
 *
 * Used for WebSocket masking keys, Sec-WebSocket-Key and random starting
 * points (request ids). One generator per engine object, so objects on
 * different threads never share state and no lock is needed.
 */
#ifndef MS_RAND_H
#define MS_RAND_H

#include <stddef.h>
#include <stdint.h>

#include <nettle/chacha.h>

typedef struct ms_rand {
  struct chacha_ctx chacha;
  uint8_t block[64]; /* keystream not yet handed out */
  size_t avail;      /* bytes left at the end of block */
} ms_rand;

/* Key the generator from the random source (ms_set_random). Returns 0
 * or MS_ERR_RANDOM (the generator is then keyed, but not secretly). */
int ms_rand_init(ms_rand *r);

/* Key the generator from a fixed seed: the same seed gives the same
 * stream. For tests and fuzzing only. */
void ms_rand_init_seed(ms_rand *r, const uint8_t seed[32]);

/* Fill out with len random bytes. */
void ms_rand_bytes(ms_rand *r, void *out, size_t len);

/* A random 64-bit value. */
uint64_t ms_rand_u64(ms_rand *r);

#endif
