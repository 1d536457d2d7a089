/* The hub's access control: tokens and scopes for sessions and HTTP, the
 * Origin and Host checks that keep browsers from being turned against the
 * hub, and the per-peer limit on streams without a session. */
#include "ms_hub_int.h"
#include "ms_http.h"

#include <nettle/memops.h>
#include <stdio.h>
#include <strings.h>

/* One source address: its streams without a session, and its bucket of
 * new streams (conn_rate). An entry outlives its streams while its
 * bucket is not full again, else a client that reconnects at once would
 * find a full bucket each time. */
typedef struct peer_ent {
  size_t count;   /* streams from this address without a session */
  int64_t tokens; /* in the bucket, in thousandths of a stream */
  int64_t at;     /* when tokens was last brought up to date */
  size_t len;
  char addr[];
} peer_ent;

/* The table of addresses is swept of entries that no longer matter (no
 * stream, bucket full) when it reaches sweep_at, at most once a second;
 * past PEER_MAX an address that is not in it is let through untracked,
 * so that memory stays bounded whatever the number of addresses. */
#define PEER_SWEEP_MIN 1024
#define PEER_MAX 65536

struct hub_auth {
  ms_token_key *keys;
  size_t nkeys;
  char **origins;
  size_t norigins;
  char **hosts;
  size_t nhosts;
  ms_strmap peers; /* address -> peer_ent */
  size_t sweep_at;
  int64_t next_sweep;
};

static void free_keys(const ms_allocator *mem, ms_token_key *k, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ms_free(mem, (void *)k[i].kid);
    ms_free(mem, (void *)k[i].secret);
  }
  ms_free(mem, k);
}

/* Copies of keys[] plus, when secret_len > 0, the key without kid. */
static int copy_keys(const ms_allocator *mem, const ms_token_key *keys,
                     size_t nkeys, const uint8_t *secret, size_t secret_len,
                     ms_token_key **out, size_t *nout) {
  size_t n = nkeys + (secret_len ? 1 : 0);
  *out = NULL;
  *nout = 0;
  if (!n)
    return 0;
  ms_token_key *k = ms_calloc(mem, n, sizeof *k);
  if (!k)
    return MS_ERR_NOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *kid = i < nkeys ? keys[i].kid : "";
    const uint8_t *sec = i < nkeys ? keys[i].secret : secret;
    size_t len = i < nkeys ? keys[i].secret_len : secret_len;
    kid = kid ? kid : "";
    uint8_t *s = ms_malloc(mem, len ? len : 1);
    k[i].kid = ms_strndup(mem, kid, strlen(kid));
    k[i].secret = s;
    k[i].secret_len = len;
    if (!s || !k[i].kid || (len && !sec)) {
      free_keys(mem, k, i + 1);
      return s && k[i].kid ? MS_ERR_INVALID_ARG : MS_ERR_NOMEM;
    }
    if (len)
      memcpy(s, sec, len);
  }
  *out = k;
  *nout = n;
  return 0;
}

static void free_list(const ms_allocator *mem, char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    ms_free(mem, v[i]);
  ms_free(mem, v);
}

static int copy_list(const ms_allocator *mem, const char *const *in, size_t n,
                     char ***out) {
  *out = NULL;
  if (!n)
    return 0;
  char **v = ms_calloc(mem, n, sizeof *v);
  if (!v)
    return MS_ERR_NOMEM;
  for (size_t i = 0; i < n; i++) {
    v[i] = in[i] ? ms_strndup(mem, in[i], strlen(in[i])) : NULL;
    if (!v[i]) {
      free_list(mem, v, i);
      return MS_ERR_NOMEM;
    }
  }
  *out = v;
  return 0;
}

int ms_hub_auth_new(ms_hub *h) {
  hub_auth *a = ms_calloc(h->mem, 1, sizeof *a);
  if (!a)
    return MS_ERR_NOMEM;
  h->auth = a;
  a->sweep_at = PEER_SWEEP_MIN;
  uint64_t seed = 0;
  int srv = ms_random(&seed, sizeof seed);
  ms_strmap_init(&a->peers, h->mem, seed);
  if (srv)
    return srv;
  const ms_hub_config *c = &h->cfg;
  int rv = copy_keys(h->mem, c->keys, c->nkeys, c->secret, c->secret_len,
                     &a->keys, &a->nkeys);
  if (rv == 0)
    rv = copy_list(h->mem, c->allow_origins, c->nallow_origins, &a->origins);
  if (rv == 0)
    a->norigins = c->nallow_origins;
  if (rv == 0)
    rv = copy_list(h->mem, c->allow_hosts, c->nallow_hosts, &a->hosts);
  if (rv == 0)
    a->nhosts = c->nallow_hosts;
  return rv;
}

void ms_hub_auth_del(ms_hub *h) {
  hub_auth *a = h->auth;
  if (!a)
    return;
  size_t pos = 0;
  const ms_strmap_ent *e;
  while ((e = ms_strmap_next(&a->peers, &pos)) != NULL)
    ms_free(h->mem, e->val);
  ms_strmap_free(&a->peers);
  free_keys(h->mem, a->keys, a->nkeys);
  free_list(h->mem, a->origins, a->norigins);
  free_list(h->mem, a->hosts, a->nhosts);
  ms_free(h->mem, a);
  h->auth = NULL;
}

int ms_hub_set_keys(ms_hub *h, const ms_token_key *keys, size_t nkeys) {
  if (!h || (nkeys && !keys))
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  ms_token_key *k;
  size_t n;
  int rv = copy_keys(h->mem, keys, nkeys, NULL, 0, &k, &n);
  if (rv)
    return rv;
  free_keys(h->mem, h->auth->keys, h->auth->nkeys);
  h->auth->keys = k;
  h->auth->nkeys = n;
  return 0;
}

int ms_hub_set_access_lists(ms_hub *h, const char *const *origins,
                            size_t norigins, const char *const *hosts,
                            size_t nhosts) {
  if (!h || (norigins && !origins) || (nhosts && !hosts))
    return MS_ERR_INVALID_ARG;
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  for (size_t i = 0; i < norigins; i++)
    if (!origins[i])
      return MS_ERR_INVALID_ARG;
  for (size_t i = 0; i < nhosts; i++)
    if (!hosts[i])
      return MS_ERR_INVALID_ARG;
  char **o, **ho;
  int rv = copy_list(h->mem, origins, norigins, &o);
  if (rv)
    return rv;
  rv = copy_list(h->mem, hosts, nhosts, &ho);
  if (rv) {
    free_list(h->mem, o, norigins);
    return rv;
  }
  hub_auth *a = h->auth;
  free_list(h->mem, a->origins, a->norigins);
  free_list(h->mem, a->hosts, a->nhosts);
  a->origins = o;
  a->norigins = norigins;
  a->hosts = ho;
  a->nhosts = nhosts;
  /* The hub holds its own copies: the caller's strings may go. */
  h->cfg.allow_origins = NULL;
  h->cfg.nallow_origins = 0;
  h->cfg.allow_hosts = NULL;
  h->cfg.nallow_hosts = 0;
  return 0;
}

void ms_hub_set_wallclock(ms_hub *h, int64_t (*fn)(void *), void *ud) {
  if (ms_life_dead(&h->life))
    return;
  if (h->cfg.wallclock_us && h->cfg.wallclock_us != fn)
    return; /* the configured one wins */
  h->cfg.wallclock_us = fn;
  h->wall_ud = ud;
}

int ms_hub_auth_required(const ms_hub *h) {
  return h->auth->nkeys > 0;
}

/* The legacy secret: the last key without kid (cfg.secret at first,
 * replaced with the keys by ms_hub_set_keys), or NULL. */
static const ms_token_key *legacy_key(const ms_hub *h) {
  const hub_auth *a = h->auth;
  for (size_t i = a->nkeys; i-- > 0;)
    if (!a->keys[i].kid[0] && a->keys[i].secret_len)
      return &a->keys[i];
  return NULL;
}

static int legacy_ok(const ms_hub *h, const char *tok, size_t len,
                     const char *name, size_t name_len) {
  if (!h->cfg.legacy_tokens || !name || len != 64 || name_len > 128)
    return 0;
  const ms_token_key *k = legacy_key(h);
  if (!k)
    return 0;
  char n[129], want[65];
  memcpy(n, name, name_len);
  n[name_len] = '\0';
  ms_service_token(k->secret, k->secret_len, n, want);
  return memeql_sec(want, tok, 64);
}

int ms_hub_authorize(ms_hub *h, const char *token, size_t len,
                     const char *name, size_t name_len, unsigned need,
                     const char *peer, int64_t now, ms_hub_auth *out) {
  ms_hub_auth tmp;
  if (!out)
    out = &tmp;
  memset(out, 0, sizeof *out);
  out->expires_at = MS_NO_DEADLINE;
  out->why = "ok";
  if (ms_life_dead(&h->life)) {
    out->why = "hub deleted";
    return MS_ERR_STATE;
  }
  if (!ms_hub_auth_required(h)) {
    out->scopes = MS_SCOPE_SERVICE | MS_SCOPE_WATCH | MS_SCOPE_ADMIN;
    return 0;
  }
  const char *who = peer ? peer : "unknown address";
  char nm[130];
  snprintf(nm, sizeof nm, "%.*s", name ? (int)MS_MIN(name_len, 128) : 1,
           name ? name : "-");
  if (!token || !len) {
    out->why = "missing";
    ms_hub_event_limited(h, MS_HUB_EVK_AUTH, MS_LEVEL_WARN,
                         "auth failed from %s for %s: no token", who, nm);
    return MS_ERR_UNAUTHORIZED;
  }
  if (legacy_ok(h, token, len, name, name_len)) {
    out->scopes = MS_SCOPE_SERVICE;
    memcpy(out->sub, name, name_len);
    out->sub[name_len] = '\0';
  } else {
    ms_token_claims cl;
    int64_t wall_ms = ms_hub_wall_us(h, now) / 1000;
    int64_t skew = h->cfg.token_skew_s > 0 ? h->cfg.token_skew_s : 0;
    int rv = ms_token_verify(token, len, h->auth->keys, h->auth->nkeys,
                             wall_ms / 1000, skew, &cl, &out->why);
    if (rv) {
      ms_hub_event_limited(h, MS_HUB_EVK_AUTH, MS_LEVEL_WARN,
                           "auth failed from %s for %s: %s", who, nm,
                           out->why);
      return rv;
    }
    out->scopes = cl.scopes;
    memcpy(out->sub, cl.sub, sizeof cl.sub);
    int64_t left = (cl.exp_s + skew) * 1000 - wall_ms;
    out->expires_at = now + (left > 0 ? left : 0);
  }
  int admin = (out->scopes & MS_SCOPE_ADMIN) != 0;
  if (name && !admin &&
      (strlen(out->sub) != name_len || memcmp(out->sub, name, name_len))) {
    out->why = "wrong_name";
  } else if (need && !admin && !(out->scopes & need)) {
    out->why = "wrong_scope";
  } else {
    return 0;
  }
  ms_hub_event_limited(h, MS_HUB_EVK_AUTH, MS_LEVEL_WARN,
                       "auth failed from %s for %s: %s (token for %s)", who,
                       nm, out->why, out->sub);
  return MS_ERR_FORBIDDEN;
}

int ms_hub_auth_hello(ms_hub *h, ms_hub_conn *hc, const ms_msg *m, int watch,
                      int64_t now, const char **code, char *msg,
                      size_t msg_cap) {
  ms_hub_auth g;
  unsigned need = watch ? (MS_SCOPE_SERVICE | MS_SCOPE_WATCH)
                        : MS_SCOPE_SERVICE;
  int rv = ms_hub_authorize(h, m->token.ptr, m->token.ptr ? m->token.len : 0,
                            hc->name, hc->name_len, need, hc->peer, now, &g);
  if (rv == 0) {
    hc->scopes = g.scopes;
    hc->expires_at = g.expires_at;
    return 0;
  }
  *code = ms_err_to_wire(rv);
  if (rv == MS_ERR_FORBIDDEN && !strcmp(g.why, "wrong_name"))
    snprintf(msg, msg_cap, "the token is for '%s', not '%s'", g.sub,
             hc->name);
  else if (rv == MS_ERR_FORBIDDEN)
    snprintf(msg, msg_cap, "the token's scope does not allow %s",
             watch ? "watching" : "registering a service");
  else
    snprintf(msg, msg_cap, "token refused: %s", g.why);
  return rv;
}

int ms_hub_auth_watch_sub(ms_hub *h, const char *tok, size_t len, int64_t now,
                          char sub[129]) {
  sub[0] = '\0';
  if (!ms_hub_auth_required(h) || !tok || !len)
    return MS_ERR_UNAUTHORIZED;
  ms_token_claims cl;
  int64_t wall_ms = ms_hub_wall_us(h, now) / 1000;
  int64_t skew = h->cfg.token_skew_s > 0 ? h->cfg.token_skew_s : 0;
  int rv = ms_token_verify(tok, len, h->auth->keys, h->auth->nkeys,
                           wall_ms / 1000, skew, &cl, NULL);
  if (rv)
    return rv;
  if (!(cl.scopes & (MS_SCOPE_WATCH | MS_SCOPE_ADMIN)))
    return MS_ERR_FORBIDDEN;
  memcpy(sub, cl.sub, sizeof cl.sub);
  return 0;
}

void ms_hub_auth_event_tls_on_plain(ms_hub *h, const ms_hub_conn *hc) {
  h->stats.tls_failures++;
  ms_hub_event_limited(h, MS_HUB_EVK_TLS, MS_LEVEL_WARN,
                       "closed a TLS handshake from %s on a plain port",
                       hc->peer ? hc->peer : "unknown address");
}

int ms_hub_may(const ms_hub *h, const ms_hub_conn *hc, unsigned scope) {
  if (!ms_hub_auth_required(h))
    return 1;
  return (hc->scopes & (scope | MS_SCOPE_ADMIN)) != 0;
}

/* ---- per-peer limits ---- */

static int is_loopback(const char *a) {
  return !strncmp(a, "127.", 4) || !strcmp(a, "::1") ||
         !strncmp(a, "::ffff:127.", 11);
}

static int rate_applies(const ms_hub *h, const char *addr) {
  return h->cfg.conn_rate &&
         (h->cfg.conn_rate_loopback || !is_loopback(addr));
}

static int64_t bucket_cap(const ms_hub *h) {
  return (int64_t)h->cfg.conn_burst * 1000;
}

/* Refill e's bucket up to now (conn_rate streams a second is conn_rate
 * thousandths a millisecond). */
static void refill(const ms_hub *h, peer_ent *e, int64_t now) {
  if (now > e->at) {
    int64_t dt = MS_MIN(now - e->at, (int64_t)100000000);
    e->tokens = MS_MIN(bucket_cap(h), e->tokens + dt * h->cfg.conn_rate);
  }
  e->at = now;
}

/* Whether e no longer matters: no stream, and a full bucket (or none). */
static int peer_spent(const ms_hub *h, peer_ent *e, int64_t now) {
  if (e->count)
    return 0;
  if (!rate_applies(h, e->addr))
    return 1;
  refill(h, e, now);
  return e->tokens >= bucket_cap(h);
}

static void peer_sweep(ms_hub *h, int64_t now) {
  hub_auth *a = h->auth;
  size_t pos = 0;
  const ms_strmap_ent *me;
  while ((me = ms_strmap_next(&a->peers, &pos)) != NULL) {
    peer_ent *e = me->val;
    if (!peer_spent(h, e, now))
      continue;
    ms_strmap_del(&a->peers, e->addr, e->len);
    ms_free(h->mem, e);
    pos--; /* deleting may have moved the next entry into this slot */
  }
  a->sweep_at = MS_MAX((size_t)PEER_SWEEP_MIN, 2 * a->peers.n);
  a->next_sweep = now + 1000;
}

int ms_hub_peer_add(ms_hub *h, ms_hub_conn *hc, const char *peer,
                    int64_t now) {
  if (!peer || !*peer)
    return 0;
  size_t len = strnlen(peer, 255);
  hub_auth *a = h->auth;
  peer_ent *e = ms_strmap_get(&a->peers, peer, len);
  int rate = rate_applies(h, peer);
  if (e && rate)
    refill(h, e, now);
  if (e && h->cfg.max_unauth_per_peer &&
      e->count >= h->cfg.max_unauth_per_peer) {
    h->stats.refused_unauth++;
    ms_hub_event_limited(h, MS_HUB_EVK_REFUSED, MS_LEVEL_WARN,
                         "refusing a connection from %s: %zu without a "
                         "session", e->addr, e->count);
    return MS_ERR_LIMIT;
  }
  if (e && rate && e->tokens < 1000) {
    h->stats.refused_rate++;
    ms_hub_event_limited(h, MS_HUB_EVK_REFUSED, MS_LEVEL_WARN,
                         "refusing a connection from %s: more than %u new "
                         "connections a second (burst %u)", e->addr,
                         h->cfg.conn_rate, h->cfg.conn_burst);
    return MS_ERR_LIMIT;
  }
  hc->peer = ms_strndup(h->mem, peer, len);
  if (!hc->peer)
    return MS_ERR_NOMEM;
  if (!e) {
    if (a->peers.n >= a->sweep_at && now >= a->next_sweep)
      peer_sweep(h, now);
    if (a->peers.n >= PEER_MAX)
      return 0; /* untracked (see PEER_MAX) */
    e = ms_malloc(h->mem, sizeof *e + len + 1);
    if (!e)
      return MS_ERR_NOMEM;
    e->count = 0;
    e->tokens = bucket_cap(h);
    e->at = now;
    e->len = len;
    memcpy(e->addr, peer, len);
    e->addr[len] = '\0';
    if (ms_strmap_put(&a->peers, e->addr, len, e)) {
      ms_free(h->mem, e);
      return MS_ERR_NOMEM;
    }
  }
  if (rate)
    e->tokens -= 1000;
  e->count++;
  hc->peer_counted = 1;
  return 0;
}

void ms_hub_peer_done(ms_hub *h, ms_hub_conn *hc) {
  if (!hc->peer_counted)
    return;
  hc->peer_counted = 0;
  hub_auth *a = h->auth;
  size_t len = strlen(hc->peer);
  peer_ent *e = ms_strmap_get(&a->peers, hc->peer, len);
  if (!e)
    return;
  e->count--;
  if (peer_spent(h, e, h->last_now)) {
    ms_strmap_del(&a->peers, hc->peer, len);
    ms_free(h->mem, e);
  }
}

/* ---- Origin and Host ---- */

static int ieq(const char *a, size_t alen, const char *b) {
  return ms_http_ieq(a, alen, b);
}

/* The host name of a Host header value, without port or brackets. */
static void host_name(const char *v, size_t len, const char **name,
                      size_t *nlen) {
  if (len && v[0] == '[') {
    const char *end = memchr(v, ']', len);
    *name = v + 1;
    *nlen = end ? (size_t)(end - v - 1) : len - 1;
    return;
  }
  const char *colon = memchr(v, ':', len);
  *name = v;
  *nlen = colon ? (size_t)(colon - v) : len;
}

static int is_ip_literal(const char *s, size_t n, int bracketed) {
  if (!n)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    int ok = (ch >= '0' && ch <= '9') || ch == '.';
    if (bracketed)
      ok = ok || ch == ':' || (ch >= 'a' && ch <= 'f') ||
           (ch >= 'A' && ch <= 'F');
    if (!ok)
      return 0;
  }
  return 1;
}

static int host_allowed(const ms_hub *h, const char *v, size_t len) {
  const char *n;
  size_t nl;
  host_name(v, len, &n, &nl);
  if (ieq(n, nl, "localhost") || is_ip_literal(n, nl, len && v[0] == '['))
    return 1;
  for (size_t i = 0; i < h->auth->nhosts; i++)
    if (ieq(n, nl, h->auth->hosts[i]))
      return 1;
  return 0;
}

static int origin_allowed(const ms_hub *h, const char *o, size_t olen,
                          const char *host, size_t hlen, int secure) {
  for (size_t i = 0; i < h->auth->norigins; i++) {
    const char *a = h->auth->origins[i];
    if (!strcmp(a, "*") || ieq(o, olen, a))
      return 1;
  }
  if (!host)
    return 0;
  const char *scheme = secure ? "https://" : "http://";
  size_t sl = strlen(scheme);
  if (olen != sl + hlen || strncasecmp(o, scheme, sl) != 0)
    return 0;
  return strncasecmp(o + sl, host, hlen) == 0;
}

/* Host and Origin: 0 or 403. */
static int browser_checks(ms_hub *h, const ms_http_request *req, int secure,
                          const char *peer, const char **why) {
  size_t hl = 0, ol = 0;
  const char *host = ms_http_header_get(req, "Host", &hl);
  const char *origin = ms_http_header_get(req, "Origin", &ol);
  if (h->cfg.check_host && (!host || !host_allowed(h, host, hl))) {
    *why = "host not allowed";
    ms_hub_event(h, MS_LEVEL_WARN, "refused a request from %s: Host %.*s",
                   peer ? peer : "unknown address", (int)MS_MIN(hl, 200),
                   host ? host : "");
    return 403;
  }
  if (origin && !origin_allowed(h, origin, ol, host, hl, secure)) {
    *why = "origin not allowed";
    ms_hub_event(h, MS_LEVEL_WARN, "refused a request from %s: Origin %.*s",
                   peer ? peer : "unknown address", (int)MS_MIN(ol, 200),
                   origin);
    return 403;
  }
  return 0;
}

int ms_hub_upgrade_check(ms_hub *h, ms_hub_conn *hc,
                         const ms_http_request *req) {
  const char *why;
  return browser_checks(h, req, hc->secure, hc->peer, &why);
}

/* A bearer token from Authorization or ?access_token=. */
static const char *request_token(const ms_http_request *req, size_t *len) {
  size_t vl = 0;
  const char *v = ms_http_header_get(req, "Authorization", &vl);
  if (v && vl > 7 && ieq(v, 7, "Bearer ")) {
    v += 7;
    vl -= 7;
    while (vl && *v == ' ')
      v++, vl--;
    *len = vl;
    return v;
  }
  const char *q = req->query;
  size_t ql = req->query_len;
  size_t i = 0;
  while (q && i < ql) {
    size_t j = i;
    while (j < ql && q[j] != '&')
      j++;
    if (j - i > 13 && !memcmp(q + i, "access_token=", 13)) {
      *len = j - i - 13;
      return q + i + 13;
    }
    i = j + 1;
  }
  *len = 0;
  return NULL;
}

int ms_hub_http_guard(ms_hub *h, const ms_http_request *req, unsigned need,
                      int secure, const char *peer, int64_t now,
                      const char **why) {
  const char *dummy;
  if (!why)
    why = &dummy;
  *why = "ok";
  if (ms_life_dead(&h->life)) {
    *why = "hub deleted";
    return 503;
  }
  int st = browser_checks(h, req, secure, peer, why);
  if (st || !need || !ms_hub_auth_required(h))
    return st;
  size_t tl;
  const char *tok = request_token(req, &tl);
  ms_hub_auth g;
  int rv = ms_hub_authorize(h, tok, tl, NULL, 0, need, peer, now, &g);
  *why = g.why;
  if (rv == 0)
    return 0;
  return rv == MS_ERR_FORBIDDEN ? 403 : 401;
}
