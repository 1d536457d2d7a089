/* JWT HS256 access tokens: verification and minting (see ms_token.h). */
#include "ms_internal.h"
#include "ms_wire.h"

#include <microstream/ms_token.h>

#include <jansson.h>
#include <nettle/base64.h>
#include <nettle/hmac.h>
#include <nettle/memops.h>
#include <stdio.h>

#define SIG_LEN SHA256_DIGEST_SIZE

/* base64url without padding, as JWT uses it. Returns the decoded length
 * or -1 (bad alphabet, padding, trailing bits, too long). */
static ptrdiff_t b64url_decode(const char *in, size_t len, uint8_t *out,
                               size_t cap) {
  if (BASE64_DECODE_LENGTH(len) > cap || len % 4 == 1)
    return -1;
  for (size_t i = 0; i < len; i++) {
    char ch = in[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
      return -1; /* no padding, no whitespace, no standard alphabet */
  }
  struct base64_decode_ctx ctx;
  base64url_decode_init(&ctx);
  size_t n = cap;
  if (!base64_decode_update(&ctx, &n, out, len, in))
    return -1;
  /* Without padding nettle leaves the last partial group pending; it is
   * complete for lengths 2 and 3 mod 4 as long as the unused bits are 0. */
  if (ctx.bits >= 8 || (ctx.word & ((1u << ctx.bits) - 1)) != 0)
    return -1;
  return (ptrdiff_t)n;
}

static size_t b64url_encode(const uint8_t *in, size_t len, char *out) {
  struct base64_encode_ctx ctx;
  base64url_encode_init(&ctx);
  size_t n = base64_encode_update(&ctx, out, len, in);
  n += base64_encode_final(&ctx, out + n);
  while (n > 0 && out[n - 1] == '=')
    n--;
  return n;
}

static void hs256(const ms_token_key *k, const char *data, size_t len,
                  uint8_t out[SIG_LEN]) {
  struct hmac_sha256_ctx ctx;
  hmac_sha256_set_key(&ctx, k->secret_len, k->secret);
  hmac_sha256_update(&ctx, len, (const uint8_t *)data);
  hmac_sha256_digest(&ctx, SIG_LEN, out);
}

static int kid_is(const ms_token_key *k, const char *kid) {
  const char *mine = k->kid ? k->kid : "";
  return strcmp(mine, kid) == 0;
}

unsigned ms_token_parse_scopes(const char *s) {
  unsigned bits = 0;
  if (!s)
    return 0;
  while (*s) {
    while (*s == ' ' || *s == ',')
      s++;
    size_t n = strcspn(s, " ,");
    if (n == 0)
      break;
    if (n == 7 && !memcmp(s, "service", 7))
      bits |= MS_SCOPE_SERVICE;
    else if (n == 5 && !memcmp(s, "watch", 5))
      bits |= MS_SCOPE_WATCH;
    else if (n == 5 && !memcmp(s, "admin", 5))
      bits |= MS_SCOPE_ADMIN;
    else
      return 0;
    s += n;
  }
  return bits;
}

/* Scope words a token carries; unknown words grant nothing. */
static unsigned scope_word(const char *w, size_t n) {
  if (n == 7 && !memcmp(w, "service", 7))
    return MS_SCOPE_SERVICE;
  if (n == 5 && !memcmp(w, "watch", 5))
    return MS_SCOPE_WATCH;
  if (n == 5 && !memcmp(w, "admin", 5))
    return MS_SCOPE_ADMIN;
  return 0;
}

static int claim_scopes(json_t *v, unsigned *bits) {
  *bits = 0;
  if (!v)
    return 0;
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    size_t i = 0;
    while (i < len) {
      while (i < len && s[i] == ' ')
        i++;
      size_t j = i;
      while (j < len && s[j] != ' ')
        j++;
      *bits |= scope_word(s + i, j - i);
      i = j;
    }
    return 0;
  }
  if (json_is_array(v)) {
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      if (!json_is_string(e))
        return -1;
      *bits |= scope_word(json_string_value(e), json_string_length(e));
    }
    return 0;
  }
  return -1;
}

/* A NumericDate: an integer (or a number, truncated) within a sane range.
 * Returns 1 present, 0 absent, -1 invalid. */
static int claim_time(json_t *v, int64_t *out) {
  *out = 0;
  if (!v)
    return 0;
  double d;
  if (json_is_integer(v))
    d = (double)json_integer_value(v);
  else if (json_is_real(v))
    d = json_real_value(v);
  else
    return -1;
  if (!(d >= 0 && d < 253402300800.0)) /* year 10000 */
    return -1;
  *out = (int64_t)d;
  return 1;
}

static int fail(const char **why, const char *reason, int err) {
  if (why)
    *why = reason;
  return err;
}

int ms_token_verify(const char *tok, size_t len, const ms_token_key *keys,
                    size_t nkeys, int64_t now_s, int64_t skew_s,
                    ms_token_claims *out, const char **why) {
  if (!tok || len == 0 || len > MS_TOKEN_MAX)
    return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
  const char *d1 = memchr(tok, '.', len);
  if (!d1)
    return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
  const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok));
  if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
    return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
  size_t hlen = (size_t)(d1 - tok);
  size_t plen = (size_t)(d2 - d1 - 1);
  size_t slen = len - (size_t)(d2 + 1 - tok);

  uint8_t buf[MS_TOKEN_MAX];
  ptrdiff_t n = b64url_decode(tok, hlen, buf, sizeof buf);
  if (n <= 0)
    return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
  json_t *hdr = json_loadb((const char *)buf, (size_t)n,
                           JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object(hdr)) {
    json_decref(hdr);
    return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
  }
  json_t *alg = json_object_get(hdr, "alg");
  if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0 ||
      json_string_length(alg) != 5) {
    json_decref(hdr);
    return fail(why, "bad_alg", MS_ERR_UNAUTHORIZED);
  }
  json_t *jkid = json_object_get(hdr, "kid");
  char kid[65] = "";
  if (jkid) {
    if (!json_is_string(jkid) || json_string_length(jkid) >= sizeof kid ||
        strlen(json_string_value(jkid)) != json_string_length(jkid)) {
      json_decref(hdr);
      return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
    }
    memcpy(kid, json_string_value(jkid), json_string_length(jkid) + 1);
  }
  json_decref(hdr);
  const ms_token_key *key = NULL;
  for (size_t i = 0; i < nkeys && !key; i++)
    if (kid_is(&keys[i], kid))
      key = &keys[i];
  if (!key)
    return fail(why, "unknown_kid", MS_ERR_UNAUTHORIZED);

  uint8_t sig[SIG_LEN + 3], want[SIG_LEN];
  n = b64url_decode(d2 + 1, slen, sig, sizeof sig);
  hs256(key, tok, (size_t)(d2 - tok), want);
  if (n != SIG_LEN || !memeql_sec(sig, want, SIG_LEN))
    return fail(why, "bad_signature", MS_ERR_UNAUTHORIZED);

  n = b64url_decode(d1 + 1, plen, buf, sizeof buf);
  if (n <= 0)
    return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
  json_t *p = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES,
                         NULL);
  if (!json_is_object(p)) {
    json_decref(p);
    return fail(why, "malformed", MS_ERR_UNAUTHORIZED);
  }
  ms_token_claims c;
  memset(&c, 0, sizeof c);
  memcpy(c.kid, kid, sizeof kid);
  const char *reason = NULL;
  int err = MS_ERR_UNAUTHORIZED;
  json_t *sub = json_object_get(p, "sub");
  int r_exp = claim_time(json_object_get(p, "exp"), &c.exp_s);
  int r_nbf = claim_time(json_object_get(p, "nbf"), &c.nbf_s);
  int r_iat = claim_time(json_object_get(p, "iat"), &c.iat_s);
  if (!json_is_string(sub) ||
      !ms_valid_service_name(json_string_value(sub), json_string_length(sub)))
    reason = "bad_sub";
  else if (claim_scopes(json_object_get(p, "scope"), &c.scopes) < 0 ||
           r_nbf < 0 || r_iat < 0 || r_exp < 0)
    reason = "malformed";
  else if (r_exp == 0)
    reason = "missing_exp";
  else if (now_s >= c.exp_s + skew_s) {
    reason = "expired";
    err = MS_ERR_TOKEN_EXPIRED;
  } else if ((r_nbf > 0 && now_s + skew_s < c.nbf_s) ||
             (r_iat > 0 && now_s + skew_s < c.iat_s))
    reason = "not_yet_valid";
  if (!reason)
    memcpy(c.sub, json_string_value(sub), json_string_length(sub) + 1);
  json_decref(p);
  if (reason)
    return fail(why, reason, err);
  if (out)
    *out = c;
  if (why)
    *why = "ok";
  return 0;
}

int ms_token_mint(const ms_token_key *key, const char *sub, unsigned scopes,
                  int64_t iat_s, int64_t exp_s, char *out, size_t cap) {
  if (!key || !key->secret || !sub || !out ||
      !ms_valid_service_name(sub, strlen(sub)) ||
      (scopes & (MS_SCOPE_SERVICE | MS_SCOPE_WATCH | MS_SCOPE_ADMIN)) == 0 ||
      exp_s <= iat_s || iat_s < 0)
    return MS_ERR_INVALID_ARG;
  const char *kid = key->kid ? key->kid : "";
  if (strlen(kid) > 64)
    return MS_ERR_INVALID_ARG;
  for (const char *q = kid; *q; q++)
    if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
      return MS_ERR_INVALID_ARG;
  char hdr[128], pay[400], scope[32] = "";
  if (kid[0])
    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
             kid);
  else
    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}");
  static const char *const words[] = {"service", "watch", "admin"};
  for (unsigned i = 0; i < 3; i++) {
    if (!(scopes & (1u << i)))
      continue;
    if (scope[0])
      strcat(scope, " ");
    strcat(scope, words[i]);
  }
  /* sub is [A-Za-z0-9._:-]: nothing to escape. */
  int pn = snprintf(pay, sizeof pay,
                    "{\"sub\":\"%s\",\"scope\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
                    sub, scope, (long long)iat_s, (long long)exp_s);
  if (pn < 0 || (size_t)pn >= sizeof pay)
    return MS_ERR_INVALID_ARG;
  size_t hl = strlen(hdr);
  size_t need = BASE64_ENCODE_RAW_LENGTH(hl) + 1 +
                BASE64_ENCODE_RAW_LENGTH((size_t)pn) + 1 +
                BASE64_ENCODE_RAW_LENGTH(SIG_LEN) + 1;
  if (cap < need)
    return MS_ERR_LIMIT;
  size_t o = b64url_encode((const uint8_t *)hdr, hl, out);
  out[o++] = '.';
  o += b64url_encode((const uint8_t *)pay, (size_t)pn, out + o);
  uint8_t sig[SIG_LEN];
  hs256(key, out, o, sig);
  out[o++] = '.';
  o += b64url_encode(sig, SIG_LEN, out + o);
  out[o] = '\0';
  return 0;
}
