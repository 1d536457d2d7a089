/*
 * microstream: access tokens (JWT, RFC 7519, signed with HS256).
 *
 * A token is "header.payload.signature", each part base64url without
 * padding. The header must say {"alg":"HS256"} and may name the secret
 * with "kid"; the payload carries:
 *   sub    the service (or watcher) name, 1..128 bytes of [A-Za-z0-9._:-]
 *   scope  space-separated words (or an array of strings): "service"
 *          (register under sub, send requests, log), "watch" (subscribe to
 *          logs and presence, read /api/logs and /api/services), "admin"
 *          (everything); unknown words are ignored
 *   exp    required, seconds since the Unix epoch
 *   nbf    optional: not valid before
 *   iat    optional: refused when it lies in the future
 * Times are compared with a small allowed clock skew.
 *
 * Pure functions of bytes, secrets and the time passed in: no clock, no
 * I/O. The signature is checked (constant-time) before the payload is
 * read.
 */
#ifndef MICROSTREAM_MS_TOKEN_H
#define MICROSTREAM_MS_TOKEN_H

#include <microstream/ms_common.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  MS_SCOPE_SERVICE = 1,
  MS_SCOPE_WATCH = 2,
  MS_SCOPE_ADMIN = 4
};

/* Longest token accepted (bytes). */
#define MS_TOKEN_MAX 4096

/* One secret. kid NULL or "" is the key for tokens without "kid". Several
 * keys let a secret be rotated: mint with the new one while tokens made
 * with the old one are still accepted. */
typedef struct ms_token_key {
  const char *kid;
  const uint8_t *secret;
  size_t secret_len;
} ms_token_key;

typedef struct ms_token_claims {
  char sub[129];      /* NUL-terminated */
  unsigned scopes;    /* MS_SCOPE_* bits */
  int64_t exp_s;      /* expiry, seconds since the epoch */
  int64_t nbf_s, iat_s; /* 0 when absent */
  char kid[65];       /* the key that verified it ("" for none) */
} ms_token_claims;

/*
 * Verify tok[0..len) against keys at wall time now_s, allowing skew_s
 * seconds of clock difference either way. On success fills *out (may be
 * NULL) and returns 0. Otherwise returns MS_ERR_TOKEN_EXPIRED (exp passed)
 * or MS_ERR_UNAUTHORIZED (anything else), and *why (may be NULL) gets a
 * short static reason: "malformed", "bad_alg", "unknown_kid",
 * "bad_signature", "expired", "not_yet_valid", "missing_exp", "bad_sub".
 */
MS_EXTERN int ms_token_verify(const char *tok, size_t len,
                              const ms_token_key *keys, size_t nkeys,
                              int64_t now_s, int64_t skew_s,
                              ms_token_claims *out, const char **why);

/*
 * Mint a token for sub with the given scopes, issued at iat_s, expiring at
 * exp_s, signed with key (its kid goes into the header when non-empty).
 * Writes a NUL-terminated token into out[0..cap). Returns 0,
 * MS_ERR_INVALID_ARG (bad sub, no scope, exp_s <= iat_s) or MS_ERR_LIMIT
 * (cap too small).
 */
MS_EXTERN int ms_token_mint(const ms_token_key *key, const char *sub,
                            unsigned scopes, int64_t iat_s, int64_t exp_s,
                            char *out, size_t cap);

/* Parse "service", "watch", "admin" or a comma/space-separated list of
 * them into MS_SCOPE_* bits; 0 when a word is unknown or none is given. */
MS_EXTERN unsigned ms_token_parse_scopes(const char *s);

#ifdef __cplusplus
}
#endif

#endif
