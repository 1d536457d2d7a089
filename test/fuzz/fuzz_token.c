/* Fuzz the token parser. The first byte picks how the rest is used:
 * even: the whole token as given (base64url, JSON header, signature);
 * odd: "header\npayload" JSON texts that the target signs itself with a
 * known key, so the payload's claims parser is reached past the HMAC. */
#include <microstream/ms_token.h>

#include "ms_internal.h"

#include <nettle/base64.h>
#include <nettle/hmac.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ms_token_key keys[] = {
    {"a", (const uint8_t *)"secret-a", 8},
    {NULL, (const uint8_t *)"plain", 5},
};

static size_t b64u(const uint8_t *in, size_t len, char *out) {
  struct base64_encode_ctx ctx;
  base64url_encode_init(&ctx);
  size_t n = base64_encode_update(&ctx, out, len, in);
  n += base64_encode_final(&ctx, out + n);
  while (n && out[n - 1] == '=')
    n--;
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 3 * MS_TOKEN_MAX)
    return 0;
  ms_token_claims cl;
  const char *why;
  if ((data[0] & 1) == 0) {
    ms_token_verify((const char *)data + 1, size - 1, keys, 2, 1000000,
                    data[0], &cl, &why);
    return 0;
  }
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  const uint8_t *nl = memchr(p, '\n', n);
  size_t hl = nl ? (size_t)(nl - p) : n;
  const uint8_t *pay = nl ? nl + 1 : p + n;
  size_t pl = nl ? n - hl - 1 : 0;
  char *tok = malloc(BASE64_ENCODE_LENGTH(n) + 64);
  if (!tok)
    return 0;
  size_t o = b64u(p, hl, tok);
  tok[o++] = '.';
  o += b64u(pay, pl, tok + o);
  uint8_t sig[32];
  struct hmac_sha256_ctx h;
  hmac_sha256_set_key(&h, 8, (const uint8_t *)"secret-a");
  hmac_sha256_update(&h, o, (const uint8_t *)tok);
  hmac_sha256_digest(&h, 32, sig);
  tok[o++] = '.';
  o += b64u(sig, 32, tok + o);
  int rv = ms_token_verify(tok, o, keys, 2, 1000000, 60, &cl, &why);
  if (rv == 0 && strlen(cl.sub) == 0)
    abort(); /* a verified token always names someone */
  free(tok);
  return 0;
}
