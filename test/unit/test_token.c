/* Access tokens (JWT HS256) and the hub's access control on a fake clock:
 * every refusal reason of the token parser, rotation by kid, scopes and
 * names at HELLO, SUBSCRIBE, REQUEST and LOG, expiry of a live session,
 * the HTTP guard (bearer tokens, Origin, Host) and the per-peer limit. */
#include "ms_test.h"
#include "hubsim.h"

#include <nettle/base64.h>
#include <nettle/hmac.h>

#define MS_ARRAY_LEN_T(a) (sizeof(a) / sizeof((a)[0]))

typedef struct res {
  int done, err;
} res;

static void on_res(ms_client *c, const ms_response_arg *a, void *ud) {
  res *r = ud;
  (void)c;
  r->done++;
  r->err = a->err;
}

static const ms_token_key KEY_A = {"a", (const uint8_t *)"secret-a", 8};
static const ms_token_key KEY_B = {"b", (const uint8_t *)"secret-b", 8};
static const ms_token_key KEY_NONE = {NULL, (const uint8_t *)"plain", 5};

/* ---- raw token building (independent of ms_token_mint) ---- */

static size_t b64u(const void *in, size_t len, char *out) {
  struct base64_encode_ctx ctx;
  base64url_encode_init(&ctx);
  size_t n = base64_encode_update(&ctx, out, len, in);
  n += base64_encode_final(&ctx, out + n);
  while (n && out[n - 1] == '=')
    n--;
  out[n] = '\0';
  return n;
}

/* header.payload signed with secret (NULL: signature "x"). */
static void raw_token(const char *hdr, const char *pay, const char *secret,
                      char *out) {
  size_t o = b64u(hdr, strlen(hdr), out);
  out[o++] = '.';
  o += b64u(pay, strlen(pay), out + o);
  uint8_t sig[32];
  struct hmac_sha256_ctx h;
  hmac_sha256_set_key(&h, secret ? strlen(secret) : 1,
                      (const uint8_t *)(secret ? secret : "x"));
  hmac_sha256_update(&h, o, (const uint8_t *)out);
  hmac_sha256_digest(&h, 32, sig);
  out[o++] = '.';
  b64u(sig, 32, out + o);
}

static int verify(const char *tok, const char **why, ms_token_claims *cl) {
  ms_token_key keys[2] = {KEY_A, KEY_B};
  return ms_token_verify(tok, strlen(tok), keys, 2, 1000, 60, cl, why);
}

static void minted_token_verifies_with_claims(void) {
  char tok[512];
  CHECK_EQ_INT(ms_token_mint(&KEY_A, "billing", MS_SCOPE_SERVICE |
                             MS_SCOPE_WATCH, 900, 2000, tok, sizeof tok), 0);
  ms_token_claims cl;
  const char *why;
  CHECK_EQ_INT(verify(tok, &why, &cl), 0);
  CHECK_EQ_STR(cl.sub, "billing");
  CHECK_EQ_INT(cl.scopes, MS_SCOPE_SERVICE | MS_SCOPE_WATCH);
  CHECK_EQ_INT(cl.exp_s, 2000);
  CHECK_EQ_INT(cl.iat_s, 900);
  CHECK_EQ_STR(cl.kid, "a");
  /* Too small a buffer and bad arguments are refused. */
  CHECK_EQ_INT(ms_token_mint(&KEY_A, "billing", MS_SCOPE_SERVICE, 900, 2000,
                             tok, 20), MS_ERR_LIMIT);
  CHECK_EQ_INT(ms_token_mint(&KEY_A, "bad name", MS_SCOPE_SERVICE, 900, 2000,
                             tok, sizeof tok), MS_ERR_INVALID_ARG);
  CHECK_EQ_INT(ms_token_mint(&KEY_A, "x", 0, 900, 2000, tok, sizeof tok),
               MS_ERR_INVALID_ARG);
  CHECK_EQ_INT(ms_token_mint(&KEY_A, "x", MS_SCOPE_WATCH, 900, 900, tok,
                             sizeof tok), MS_ERR_INVALID_ARG);
}

static void third_party_token_with_array_scope_verifies(void) {
  char tok[1024];
  raw_token("{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"b\"}",
            "{\"sub\":\"w1\",\"scope\":[\"watch\",\"other\"],\"exp\":1500,"
            "\"nbf\":990,\"extra\":{\"x\":1}}",
            "secret-b", tok);
  ms_token_claims cl;
  const char *why;
  CHECK_EQ_INT(verify(tok, &why, &cl), 0);
  CHECK_EQ_INT(cl.scopes, MS_SCOPE_WATCH);
  CHECK_EQ_STR(cl.sub, "w1");
}

static void expired_and_skew(void) {
  char tok[1024];
  const char *why;
  /* exp 950 at now 1000 with 60 s skew: still good. */
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":950}", "secret-a",
            tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), 0);
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":940}", "secret-a",
            tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_TOKEN_EXPIRED);
  CHECK_EQ_STR(why, "expired");
}

static void not_yet_valid_nbf_and_iat(void) {
  char tok[1024];
  const char *why;
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":5000,\"nbf\":1100}",
            "secret-a", tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "not_yet_valid");
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":5000,\"iat\":1100}",
            "secret-a", tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "not_yet_valid");
  /* Inside the skew both are fine. */
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":5000,\"iat\":1050,"
            "\"nbf\":1050}",
            "secret-a", tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), 0);
}

static void wrong_signature_unknown_kid_and_bad_alg(void) {
  char tok[1024];
  const char *why;
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":5000}", "secret-b",
            tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "bad_signature");
  raw_token("{\"alg\":\"HS256\",\"kid\":\"zz\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":5000}", "secret-a",
            tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "unknown_kid");
  /* No kid, and no key without one. */
  raw_token("{\"alg\":\"HS256\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":5000}", "secret-a",
            tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "unknown_kid");
  static const char *const algs[] = {
      "{\"alg\":\"none\",\"kid\":\"a\"}", "{\"alg\":\"HS512\",\"kid\":\"a\"}",
      "{\"alg\":\"hs256\",\"kid\":\"a\"}", "{\"kid\":\"a\"}",
      "{\"alg\":256,\"kid\":\"a\"}"};
  for (size_t i = 0; i < 5; i++) {
    raw_token(algs[i], "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":5000}",
              "secret-a", tok);
    CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
    CHECK_EQ_STR(why, "bad_alg");
  }
  /* alg none with an empty signature, the classic downgrade. */
  char none[512];
  const char *nh = "{\"alg\":\"none\"}";
  const char *np = "{\"sub\":\"s\",\"scope\":\"admin\",\"exp\":5000}";
  size_t o = b64u(nh, strlen(nh), none);
  none[o++] = '.';
  o += b64u(np, strlen(np), none + o);
  none[o++] = '.';
  none[o] = '\0';
  CHECK_EQ_INT(verify(none, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "bad_alg");
  /* A tampered payload under a good signature. */
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"watch\",\"exp\":5000}", "secret-a",
            tok);
  char *p1 = strchr(tok, '.') + 1;
  char forged[1024];
  const char *fh = "{\"alg\":\"HS256\",\"kid\":\"a\"}";
  size_t fo = b64u(fh, strlen(fh), forged);
  forged[fo++] = '.';
  fo += b64u(np, strlen(np), forged + fo);
  snprintf(forged + fo, sizeof forged - fo, "%s", strchr(p1, '.'));
  CHECK_EQ_INT(verify(forged, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "bad_signature");
}

static void malformed_tokens_are_refused(void) {
  const char *why;
  static const char *const bad[] = {
      "", "abc", "a.b", "a.b.c.d", "...", "!!!.e30.x",
      "eyJhbGciOiJIUzI1NiJ9==.e30.x", /* padding */
      "eyJhbGc iOiJIUzI1NiJ9.e30.x",  /* whitespace */
      "bm90IGpzb24.e30.x",            /* "not json" */
      "WzFd.e30.x",                   /* [1]: not an object */
  };
  for (size_t i = 0; i < MS_ARRAY_LEN_T(bad); i++) {
    CHECK_EQ_INT(verify(bad[i], &why, NULL), MS_ERR_UNAUTHORIZED);
    CHECK_EQ_STR(why, "malformed");
  }
  char tok[1024];
  /* Payload not JSON, under a valid signature. */
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}", "{\"sub\":", "secret-a", tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "malformed");
  /* Duplicate keys are ambiguous: refused. */
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"sub\":\"t\",\"scope\":\"service\",\"exp\":5000}",
            "secret-a", tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "malformed");
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\"}", "secret-a", tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "missing_exp");
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"s\",\"scope\":\"service\",\"exp\":\"5000\"}",
            "secret-a", tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "malformed");
  raw_token("{\"alg\":\"HS256\",\"kid\":\"a\"}",
            "{\"sub\":\"a b\",\"scope\":\"service\",\"exp\":5000}", "secret-a",
            tok);
  CHECK_EQ_INT(verify(tok, &why, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "bad_sub");
  /* Over the size limit. */
  char *big = malloc(MS_TOKEN_MAX + 2);
  memset(big, 'a', MS_TOKEN_MAX + 1);
  big[MS_TOKEN_MAX + 1] = '\0';
  int rv = verify(big, &why, NULL);
  free(big);
  CHECK_EQ_INT(rv, MS_ERR_UNAUTHORIZED);
}

static void rotation_with_two_secrets(void) {
  char old_tok[512], new_tok[512];
  CHECK_EQ_INT(ms_token_mint(&KEY_A, "svc", MS_SCOPE_SERVICE, 900, 5000,
                             old_tok, sizeof old_tok), 0);
  CHECK_EQ_INT(ms_token_mint(&KEY_B, "svc", MS_SCOPE_SERVICE, 900, 5000,
                             new_tok, sizeof new_tok), 0);
  ms_token_key both[2] = {KEY_B, KEY_A};
  const char *why;
  CHECK_EQ_INT(ms_token_verify(old_tok, strlen(old_tok), both, 2, 1000, 0,
                               NULL, &why), 0);
  CHECK_EQ_INT(ms_token_verify(new_tok, strlen(new_tok), both, 2, 1000, 0,
                               NULL, &why), 0);
  /* The old secret retired. */
  CHECK_EQ_INT(ms_token_verify(old_tok, strlen(old_tok), both, 1, 1000, 0,
                               NULL, &why), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(why, "unknown_kid");
  /* A key without kid. */
  char plain[512];
  CHECK_EQ_INT(ms_token_mint(&KEY_NONE, "svc", MS_SCOPE_ADMIN, 900, 5000,
                             plain, sizeof plain), 0);
  CHECK_EQ_INT(ms_token_verify(plain, strlen(plain), &KEY_NONE, 1, 1000, 0,
                               NULL, &why), 0);
  CHECK_EQ_INT(ms_token_parse_scopes("service,watch"),
               MS_SCOPE_SERVICE | MS_SCOPE_WATCH);
  CHECK_EQ_INT(ms_token_parse_scopes("admin"), MS_SCOPE_ADMIN);
  CHECK_EQ_INT(ms_token_parse_scopes("root"), 0);
  CHECK_EQ_INT(ms_token_parse_scopes(""), 0);
}

/* ---- the hub ---- */

typedef struct watch_log {
  int state_err;
  uint16_t close_code;
  int ready;
  int live;
  char diag[256];
} watch_log;

static void on_state(ms_client *c, const ms_client_state_arg *a, void *ud) {
  watch_log *w = ud;
  (void)c;
  if (a->state == MS_CLIENT_READY)
    w->ready++;
  if (a->err) {
    w->state_err = a->err;
    w->close_code = a->close_code;
  }
}

static void on_diag(ms_client *c, int64_t ts, int level, const char *msg,
                    const msgpack_object *f, void *ud) {
  watch_log *w = ud;
  (void)c, (void)ts, (void)level, (void)f;
  snprintf(w->diag, sizeof w->diag, "%s", msg);
}

static void on_rec(ms_client *c, const ms_record *r, void *ud) {
  watch_log *w = ud;
  (void)c;
  if (r->kind == MS_RECORD_LIVE)
    w->live++;
}

/* The sim's wall clock is now * 1000 us: now 1000000 ms = 1000 s. */
static ms_client *tok_client(const char *name, int watch, const char *token,
                             watch_log *w) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.watch = watch;
  cfg.token = token;
  cfg.seed = 5;
  cfg.reconnect = 0;
  cfg.on_state = on_state;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, w, NULL) != 0)
    return NULL;
  ms_log_set_sink(c, on_diag, w);
  return c;
}

static void secured_hub(sim *s) {
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  ms_token_key keys[2] = {KEY_A, KEY_B};
  cfg.keys = keys;
  cfg.nkeys = 2;
  cfg.token_skew_s = 1;
  sim_init(s, &cfg);
}

static void mint(const char *sub, unsigned scopes, int64_t ttl, char *out) {
  ms_token_mint(&KEY_A, sub, scopes, 1000, 1000 + ttl, out, 512);
}

static void hello_without_token_is_unauthorized_4001(void) {
  sim s;
  secured_hub(&s);
  watch_log w = {0};
  sim_add(&s, tok_client("svc", 0, NULL, &w));
  sim_advance(&s, 50);
  CHECK_EQ_INT(w.ready, 0);
  CHECK_EQ_INT(w.state_err, MS_ERR_UNAUTHORIZED);
  CHECK_EQ_INT(w.close_code, MS_CLOSE_UNAUTHORIZED);
  CHECK(ms_hub_auth_required(s.hub));
  sim_free(&s);
}

static void service_token_registers_its_own_name_only(void) {
  sim s;
  secured_hub(&s);
  char t[512];
  mint("svc", MS_SCOPE_SERVICE, 3600, t);
  watch_log w1 = {0}, w2 = {0};
  sim_add(&s, tok_client("svc", 0, t, &w1));
  sim_add(&s, tok_client("other", 0, t, &w2));
  sim_advance(&s, 50);
  CHECK_EQ_INT(w1.ready, 1);
  CHECK_EQ_INT(w2.ready, 0);
  CHECK_EQ_INT(w2.state_err, MS_ERR_FORBIDDEN);
  CHECK_EQ_INT(w2.close_code, MS_CLOSE_FORBIDDEN);
  sim_free(&s);
}

static void watch_token_watches_but_cannot_register_or_call(void) {
  sim s;
  secured_hub(&s);
  char t[512];
  mint("viewer", MS_SCOPE_WATCH, 3600, t);
  watch_log w1 = {0}, w2 = {0};
  ms_client *reg = tok_client("viewer", 0, t, &w1);
  ms_client *wat = tok_client("viewer", 1, t, &w2);
  sim_add(&s, reg);
  sim_add(&s, wat);
  uint64_t sub;
  CHECK_EQ_INT(ms_client_subscribe(wat, "logs", NULL, on_rec, &w2, &sub), 0);
  sim_advance(&s, 50);
  CHECK_EQ_INT(w1.ready, 0);
  CHECK_EQ_INT(w1.state_err, MS_ERR_FORBIDDEN);
  CHECK_EQ_INT(w2.ready, 1);
  CHECK_EQ_INT(w2.live, 1);
  /* A request from a watch-only session: FORBIDDEN for that request. */
  res r = {0};
  CHECK_EQ_INT(ms_client_request(wat, "viewer", "x", NULL, 0, NULL, on_res,
                                 &r, NULL), 0);
  sim_advance(&s, 50);
  CHECK_EQ_INT(r.done, 1);
  CHECK_EQ_INT(r.err, MS_ERR_FORBIDDEN);
  sim_free(&s);
}

static void service_token_cannot_subscribe(void) {
  sim s;
  secured_hub(&s);
  char t[512];
  mint("svc", MS_SCOPE_SERVICE, 3600, t);
  watch_log w = {0};
  ms_client *c = tok_client("svc", 0, t, &w);
  sim_add(&s, c);
  uint64_t sub;
  CHECK_EQ_INT(ms_client_subscribe(c, "presence", NULL, on_rec, &w, &sub), 0);
  sim_advance(&s, 50);
  CHECK_EQ_INT(w.ready, 1);
  CHECK_EQ_INT(w.live, 0);
  CHECK(strstr(w.diag, "FORBIDDEN") || strstr(w.diag, "watch"));
  CHECK_EQ_INT(ms_client_get_state(c), MS_CLIENT_READY);
  sim_free(&s);
}

static void expired_token_at_hello_and_during_session(void) {
  sim s;
  secured_hub(&s);
  char stale[512], t[512];
  ms_token_mint(&KEY_A, "svc", MS_SCOPE_SERVICE, 900, 990, stale, 512);
  mint("svc2", MS_SCOPE_SERVICE, 5, t);
  watch_log w1 = {0}, w2 = {0};
  sim_add(&s, tok_client("svc", 0, stale, &w1));
  sim_add(&s, tok_client("svc2", 0, t, &w2));
  sim_advance(&s, 50);
  CHECK_EQ_INT(w1.state_err, MS_ERR_TOKEN_EXPIRED);
  CHECK_EQ_INT(w1.close_code, MS_CLOSE_TOKEN_EXPIRED);
  CHECK_EQ_INT(w2.ready, 1);
  /* Good for 5 s plus the 1 s skew; the hub closes it at that moment. */
  sim_advance(&s, 5800);
  CHECK_EQ_INT(w2.state_err, 0);
  sim_advance(&s, 400);
  CHECK_EQ_INT(w2.state_err, MS_ERR_TOKEN_EXPIRED);
  CHECK_EQ_INT(w2.close_code, MS_CLOSE_TOKEN_EXPIRED);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.services, 0);
  sim_free(&s);
}

static void keys_replaced_at_run_time(void) {
  sim s;
  secured_hub(&s);
  ms_token_key c = {"c", (const uint8_t *)"secret-c", 8};
  CHECK_EQ_INT(ms_hub_set_keys(s.hub, &c, 1), 0);
  char ta[512], tc[512];
  mint("one", MS_SCOPE_SERVICE, 3600, ta);
  ms_token_mint(&c, "two", MS_SCOPE_SERVICE, 1000, 5000, tc, sizeof tc);
  watch_log w1 = {0}, w2 = {0};
  sim_add(&s, tok_client("one", 0, ta, &w1));
  sim_add(&s, tok_client("two", 0, tc, &w2));
  sim_advance(&s, 50);
  CHECK_EQ_INT(w1.state_err, MS_ERR_UNAUTHORIZED);
  CHECK_EQ_INT(w2.ready, 1);
  sim_free(&s);
}

static void legacy_tokens_only_when_enabled(void) {
  for (int legacy = 0; legacy < 2; legacy++) {
    sim s;
    ms_hub_config cfg;
    ms_hub_config_init(&cfg);
    cfg.secret = (const uint8_t *)"old-secret";
    cfg.secret_len = 10;
    cfg.legacy_tokens = legacy;
    sim_init(&s, &cfg);
    char t[65];
    ms_service_token(cfg.secret, cfg.secret_len, "svc", t);
    watch_log w = {0};
    sim_add(&s, tok_client("svc", 0, t, &w));
    sim_advance(&s, 50);
    CHECK_EQ_INT(w.ready, legacy);
    /* And a JWT made with the same secret (no kid) always works. */
    char j[512];
    ms_token_key k = {NULL, cfg.secret, cfg.secret_len};
    ms_token_mint(&k, "svc2", MS_SCOPE_SERVICE, 1000, 5000, j, sizeof j);
    watch_log w2 = {0};
    sim_add(&s, tok_client("svc2", 0, j, &w2));
    sim_advance(&s, 50);
    CHECK_EQ_INT(w2.ready, 1);
    sim_free(&s);
  }
}

static void legacy_secret_follows_the_keys(void) {
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.secret = (const uint8_t *)"old-secret";
  cfg.secret_len = 10;
  cfg.legacy_tokens = 1;
  sim_init(&s, &cfg);
  char old_t[65], new_t[65];
  ms_service_token((const uint8_t *)"old-secret", 10, "svc", old_t);
  ms_service_token((const uint8_t *)"new-secret", 10, "svc", new_t);
  CHECK_EQ_INT(ms_hub_authorize(s.hub, old_t, 64, "svc", 3, MS_SCOPE_SERVICE,
                                NULL, s.now, NULL), 0);
  /* The secret rotated (SIGHUP): the key without kid is the new secret. */
  ms_token_key nk[2] = {{"k1", (const uint8_t *)"kid-secret", 10},
                        {NULL, (const uint8_t *)"new-secret", 10}};
  CHECK_EQ_INT(ms_hub_set_keys(s.hub, nk, 2), 0);
  CHECK_EQ_INT(ms_hub_authorize(s.hub, old_t, 64, "svc", 3, MS_SCOPE_SERVICE,
                                NULL, s.now, NULL), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_INT(ms_hub_authorize(s.hub, new_t, 64, "svc", 3, MS_SCOPE_SERVICE,
                                NULL, s.now, NULL), 0);
  /* No key without kid any more: no legacy secret either. */
  CHECK_EQ_INT(ms_hub_set_keys(s.hub, nk, 1), 0);
  CHECK_EQ_INT(ms_hub_authorize(s.hub, new_t, 64, "svc", 3, MS_SCOPE_SERVICE,
                                NULL, s.now, NULL), MS_ERR_UNAUTHORIZED);
  sim_free(&s);
}

/* ---- HTTP and upgrades: raw bytes to one hub connection ---- */

static int http_status(ms_hub *h, const char *req, int64_t now,
                       const char *peer, char *body, size_t cap) {
  ms_hub_conn *hc;
  if (ms_hub_accept_peer(h, &hc, NULL, peer, 0, now) != 0)
    return -1;
  ms_hub_conn_feed(hc, (const uint8_t *)req, strlen(req), now);
  size_t len;
  const uint8_t *p = ms_hub_conn_peek(hc, &len);
  int st = 0;
  if (len > 12)
    st = atoi((const char *)p + 9);
  if (body) {
    const char *b = memmem(p, len, "\r\n\r\n", 4);
    size_t bl = b ? len - (size_t)((const uint8_t *)b + 4 - p) : 0;
    snprintf(body, cap, "%.*s", (int)bl, b ? b + 4 : "");
  }
  ms_hub_conn_consume(hc, len);
  ms_hub_conn_eof(hc, now);
  ms_hub_conn_release(hc);
  while (ms_hub_next_dirty(h))
    ;
  return st;
}

#define UPGRADE(extra)                                                     \
  "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:7400\r\nUpgrade: websocket\r\n"     \
  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"                   \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" extra "\r\n"

static void http_api_needs_a_watch_token(void) {
  sim s;
  secured_hub(&s);
  char watch[512], svc[512], body[256], req[1024];
  mint("viewer", MS_SCOPE_WATCH, 3600, watch);
  mint("svc", MS_SCOPE_SERVICE, 3600, svc);
#define GET_API "GET /api/services HTTP/1.1\r\nHost: h\r\n%s\r\n"
  snprintf(req, sizeof req, GET_API, "");
  CHECK_EQ_INT(http_status(s.hub, req, s.now, "10.0.0.1", body, sizeof body),
               401);
  CHECK(strstr(body, "\"unauthorized\"") != NULL);
  char hdr[700];
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", watch);
  snprintf(req, sizeof req, GET_API, hdr);
  CHECK_EQ_INT(http_status(s.hub, req, s.now, "10.0.0.1", body, sizeof body),
               200);
  CHECK(body[0] == '[');
  snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", svc);
  snprintf(req, sizeof req, GET_API, hdr);
  CHECK_EQ_INT(http_status(s.hub, req, s.now, "10.0.0.1", body, sizeof body),
               403);
  CHECK(strstr(body, "wrong_scope") != NULL);
  /* The query parameter works too; /healthz and the page stay open. */
  snprintf(req, sizeof req,
           "GET /api/services?access_token=%s HTTP/1.1\r\nHost: h\r\n\r\n",
           watch);
  CHECK_EQ_INT(http_status(s.hub, req, s.now, NULL, NULL, 0), 200);
  CHECK_EQ_INT(http_status(s.hub, "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n",
                           s.now, NULL, NULL, 0), 200);
  CHECK_EQ_INT(http_status(s.hub, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", s.now,
                           NULL, NULL, 0), 200);
  CHECK_EQ_INT(http_status(s.hub, "GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n",
                           s.now, NULL, NULL, 0), 200);
  sim_free(&s);
}

static void foreign_origin_is_403_and_no_origin_is_fine(void) {
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  const char *allow[] = {"https://ops.example.com"};
  cfg.allow_origins = allow;
  cfg.nallow_origins = 1;
  sim_init(&s, &cfg);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE(""), s.now, NULL, NULL, 0), 101);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: http://127.0.0.1:7400\r\n"),
                           s.now, NULL, NULL, 0), 101);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://ops.example.com\r\n"),
                           s.now, NULL, NULL, 0), 101);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://evil.example\r\n"),
                           s.now, NULL, NULL, 0), 403);
  /* The hub's own origin over plain HTTP is not its https:// one. */
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://127.0.0.1:7400\r\n"),
                           s.now, NULL, NULL, 0), 403);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: null\r\n"), s.now, NULL,
                           NULL, 0), 403);
  CHECK_EQ_INT(http_status(s.hub,
                           "GET /api/services HTTP/1.1\r\nHost: h\r\n"
                           "Origin: https://evil.example\r\n\r\n",
                           s.now, NULL, NULL, 0), 403);
  sim_free(&s);
}

static void host_check_stops_dns_rebinding(void) {
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.check_host = 1;
  const char *hosts[] = {"hub.internal"};
  cfg.allow_hosts = hosts;
  cfg.nallow_hosts = 1;
  sim_init(&s, &cfg);
  static const char *const ok[] = {"127.0.0.1:7400", "localhost:7400",
                                   "[::1]:7400", "hub.internal:7400",
                                   "LOCALHOST"};
  char req[256];
  for (size_t i = 0; i < 5; i++) {
    snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n",
             ok[i]);
    CHECK_EQ_INT(http_status(s.hub, req, s.now, NULL, NULL, 0), 200);
  }
  CHECK_EQ_INT(http_status(s.hub,
                           "GET /healthz HTTP/1.1\r\nHost: attacker.example:7400"
                           "\r\n\r\n",
                           s.now, NULL, NULL, 0), 403);
  sim_free(&s);
}

static void access_lists_change_while_running(void) {
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.check_host = 1;
  const char *allow[] = {"https://old.example"};
  cfg.allow_origins = allow;
  cfg.nallow_origins = 1;
  sim_init(&s, &cfg);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://old.example\r\n"),
                           s.now, NULL, NULL, 0), 101);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://new.example\r\n"),
                           s.now, NULL, NULL, 0), 403);
  /* Copied: the caller's strings may be gone by the next request. */
  char o[32] = "https://new.example", h[32] = "hub.internal";
  const char *origins[] = {o}, *hosts[] = {h};
  CHECK_EQ_INT(ms_hub_set_access_lists(s.hub, origins, 1, hosts, 1), 0);
  memset(o, 'x', sizeof o - 1);
  memset(h, 'x', sizeof h - 1);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://new.example\r\n"),
                           s.now, NULL, NULL, 0), 101);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://old.example\r\n"),
                           s.now, NULL, NULL, 0), 403);
  CHECK_EQ_INT(http_status(s.hub,
                           "GET /healthz HTTP/1.1\r\nHost: hub.internal\r\n"
                           "\r\n", s.now, NULL, NULL, 0), 200);
  CHECK_EQ_INT(ms_hub_set_access_lists(s.hub, NULL, 1, NULL, 0),
               MS_ERR_INVALID_ARG);
  const char *nul[] = {NULL};
  CHECK_EQ_INT(ms_hub_set_access_lists(s.hub, nul, 1, NULL, 0),
               MS_ERR_INVALID_ARG);
  /* Empty lists: only the hub's own origin and loopback names. */
  CHECK_EQ_INT(ms_hub_set_access_lists(s.hub, NULL, 0, NULL, 0), 0);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: https://new.example\r\n"),
                           s.now, NULL, NULL, 0), 403);
  CHECK_EQ_INT(http_status(s.hub,
                           "GET /healthz HTTP/1.1\r\nHost: hub.internal\r\n"
                           "\r\n", s.now, NULL, NULL, 0), 403);
  CHECK_EQ_INT(http_status(s.hub, UPGRADE("Origin: http://127.0.0.1:7400\r\n"),
                           s.now, NULL, NULL, 0), 101);
  sim_free(&s);
}

static void unauthenticated_connections_are_limited_per_peer(void) {
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  cfg.max_unauth_per_peer = 3;
  sim_init(&s, &cfg);
  ms_hub_conn *hc[4];
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(ms_hub_accept_peer(s.hub, &hc[i], NULL, "192.0.2.7", 0, s.now),
                 0);
  CHECK_EQ_INT(ms_hub_accept_peer(s.hub, &hc[3], NULL, "192.0.2.7", 0, s.now),
               MS_ERR_LIMIT);
  /* Another address is not affected; a freed slot is usable again. */
  CHECK_EQ_INT(ms_hub_accept_peer(s.hub, &hc[3], NULL, "192.0.2.8", 0, s.now),
               0);
  ms_hub_conn_eof(hc[0], s.now);
  ms_hub_conn_release(hc[0]);
  CHECK_EQ_INT(ms_hub_accept_peer(s.hub, &hc[0], NULL, "192.0.2.7", 0, s.now),
               0);
  for (int i = 0; i < 4; i++) {
    ms_hub_conn_eof(hc[i], s.now);
    ms_hub_conn_release(hc[i]);
  }
  while (ms_hub_next_dirty(s.hub))
    ;
  sim_free(&s);
}

typedef struct ev_lines {
  int refusing, held_back;
} ev_lines;

static void count_events(ms_hub *h, int level, const char *text, void *ud) {
  ev_lines *l = ud;
  (void)h;
  (void)level;
  if (strstr(text, "refusing a connection from 192.0.2.9: more than 2 new"))
    l->refusing++;
  if (strstr(text, "more refused connection line(s) not logged"))
    l->held_back++;
}

/* Accept one stream from addr and end it at once; the accept's result. */
static int accept_once(sim *s, const char *addr) {
  ms_hub_conn *hc;
  int rv = ms_hub_accept_peer(s->hub, &hc, NULL, addr, 1, s->now);
  if (rv == 0) {
    ms_hub_conn_eof(hc, s->now);
    ms_hub_conn_release(hc);
    while (ms_hub_next_dirty(s->hub))
      ;
  }
  return rv;
}

static void new_connections_are_rate_limited_per_peer(void) {
  ev_lines lines = {0, 0};
  sim s;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  CHECK_EQ_INT(cfg.conn_rate, 50);
  CHECK_EQ_INT(cfg.conn_burst, 200);
  cfg.conn_rate = 2;
  cfg.conn_burst = 3;
  cfg.on_event = count_events;
  memset(&s, 0, sizeof s);
  s.now = 1000000;
  CHECK_EQ_INT(ms_hub_new(&s.hub, &cfg, &lines, NULL), 0);
  /* The burst, even though each stream ends at once, then a refusal. */
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), 0);
  CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), MS_ERR_LIMIT);
  ms_hub_stats st;
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.refused_rate, 1);
  CHECK_EQ_INT(st.accepted_total, 3);
  /* Other addresses have their own bucket; loopback is exempt. */
  CHECK_EQ_INT(accept_once(&s, "192.0.2.10"), 0);
  for (int i = 0; i < 20; i++)
    CHECK_EQ_INT(accept_once(&s, "127.0.0.1"), 0);
  CHECK_EQ_INT(accept_once(&s, "::1"), 0);
  /* Half a second refills one (2 a second). */
  s.now += 500;
  CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), 0);
  CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), MS_ERR_LIMIT);
  /* A flood: a few lines, the rest counted, one line at the window's end
   * (the hub asks for the time to write it). */
  for (int i = 0; i < 100; i++)
    CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), MS_ERR_LIMIT);
  CHECK_EQ_INT(lines.refusing, 10);
  ms_hub_get_stats(s.hub, &st);
  CHECK_EQ_INT(st.refused_rate, 102);
  CHECK_EQ_INT(st.events_suppressed, 92);
  int64_t at = ms_hub_next_deadline(s.hub);
  CHECK(at <= s.now + 10000 && at > s.now);
  CHECK_EQ_INT(lines.held_back, 0);
  s.now = at;
  ms_hub_tick(s.hub, s.now);
  CHECK_EQ_INT(lines.held_back, 1);
  /* A long pause fills the bucket again, up to the burst. */
  s.now += 60000;
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), 0);
  CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), MS_ERR_LIMIT);
  /* Many addresses: the table is swept of the spent ones (ASan checks
   * that nothing leaks or is used after being freed). */
  char addr[64];
  for (int i = 0; i < 5000; i++) {
    snprintf(addr, sizeof addr, "10.%d.%d.1", i / 256, i % 256);
    CHECK_EQ_INT(accept_once(&s, addr), 0);
    if (i % 1000 == 999)
      s.now += 2000;
  }
  CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), 0);
  sim_free(&s);

  /* Loopback too when asked; rate 0 is no limit. */
  ms_hub_config_init(&cfg);
  cfg.conn_rate = 1;
  cfg.conn_burst = 1;
  cfg.conn_rate_loopback = 1;
  sim_init(&s, &cfg);
  CHECK_EQ_INT(accept_once(&s, "127.0.0.1"), 0);
  CHECK_EQ_INT(accept_once(&s, "127.0.0.1"), MS_ERR_LIMIT);
  sim_free(&s);
  ms_hub_config_init(&cfg);
  cfg.conn_rate = 0;
  sim_init(&s, &cfg);
  for (int i = 0; i < 500; i++)
    CHECK_EQ_INT(accept_once(&s, "192.0.2.9"), 0);
  sim_free(&s);
}

static void authorize_is_usable_by_other_session_kinds(void) {
  sim s;
  secured_hub(&s);
  char t[512];
  mint("app", MS_SCOPE_SERVICE | MS_SCOPE_WATCH, 60, t);
  ms_hub_auth g;
  CHECK_EQ_INT(ms_hub_authorize(s.hub, t, strlen(t), "app", 3,
                                MS_SCOPE_SERVICE, "10.1.1.1", s.now, &g), 0);
  CHECK_EQ_INT(g.scopes, MS_SCOPE_SERVICE | MS_SCOPE_WATCH);
  CHECK_EQ_INT(g.expires_at, s.now + 61000);
  CHECK_EQ_STR(g.sub, "app");
  CHECK_EQ_INT(ms_hub_authorize(s.hub, t, strlen(t), "bpp", 3,
                                MS_SCOPE_SERVICE, NULL, s.now, &g),
               MS_ERR_FORBIDDEN);
  CHECK_EQ_STR(g.why, "wrong_name");
  CHECK_EQ_INT(ms_hub_authorize(s.hub, NULL, 0, NULL, 0, MS_SCOPE_WATCH, NULL,
                                s.now, &g), MS_ERR_UNAUTHORIZED);
  CHECK_EQ_STR(g.why, "missing");
  sim_free(&s);
  /* No keys: everything is allowed. */
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  sim_init(&s, &cfg);
  CHECK(!ms_hub_auth_required(s.hub));
  CHECK_EQ_INT(ms_hub_authorize(s.hub, NULL, 0, "x", 1, MS_SCOPE_ADMIN, NULL,
                                s.now, &g), 0);
  CHECK_EQ_INT(g.expires_at, MS_NO_DEADLINE);
  sim_free(&s);
}

static const ms_test_case tests[] = {
    TEST(minted_token_verifies_with_claims),
    TEST(third_party_token_with_array_scope_verifies),
    TEST(expired_and_skew),
    TEST(not_yet_valid_nbf_and_iat),
    TEST(wrong_signature_unknown_kid_and_bad_alg),
    TEST(malformed_tokens_are_refused),
    TEST(rotation_with_two_secrets),
    TEST(hello_without_token_is_unauthorized_4001),
    TEST(service_token_registers_its_own_name_only),
    TEST(watch_token_watches_but_cannot_register_or_call),
    TEST(service_token_cannot_subscribe),
    TEST(expired_token_at_hello_and_during_session),
    TEST(keys_replaced_at_run_time),
    TEST(legacy_tokens_only_when_enabled),
    TEST(http_api_needs_a_watch_token),
    TEST(foreign_origin_is_403_and_no_origin_is_fine),
    TEST(host_check_stops_dns_rebinding),
    TEST(access_lists_change_while_running),
    TEST(unauthenticated_connections_are_limited_per_peer),
    TEST(new_connections_are_rate_limited_per_peer),
    TEST(legacy_secret_follows_the_keys),
    TEST(authorize_is_usable_by_other_session_kinds),
};

MS_TEST_MAIN(tests)
