/*
 * The HTTP/1.1 side of ms_conn: the WebSocket upgrade in both roles
 * (RFC 6455 section 4) and plain HTTP requests that the application
 * answers with ms_conn_http_respond().
 */
#include "ms_conn_int.h"

#include <stdio.h>

#include <nettle/base64.h>
#include <nettle/sha1.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const char *ms_conn_enc_name(ms_encoding e) {
  switch (e) {
  case MS_ENC_MSGPACK: return MS_SUBPROTO_MSGPACK;
  case MS_ENC_JSON: return MS_SUBPROTO_JSON;
  default: return NULL;
  }
}

ms_encoding ms_conn_enc_from_name(const char *s, size_t len) {
  /* Subprotocol names are case-sensitive (RFC 6455 section 11.3.4). */
  if (len == strlen(MS_SUBPROTO_MSGPACK) &&
      memcmp(s, MS_SUBPROTO_MSGPACK, len) == 0)
    return MS_ENC_MSGPACK;
  if (len == strlen(MS_SUBPROTO_JSON) && memcmp(s, MS_SUBPROTO_JSON, len) == 0)
    return MS_ENC_JSON;
  return MS_ENC_NONE;
}

/* The HTTP state, made on first use. */
static struct conn_http *http_state(ms_conn *c) {
  if (!c->http) {
    c->http = ms_calloc(c->mem, 1, sizeof *c->http);
    if (c->http)
      ms_buf_init(&c->http->body, c->mem);
  }
  return c->http;
}

void ms_conn_free_head(ms_conn *c) {
  if (!c->http)
    return;
  ms_buf_free(&c->http->body);
  ms_free(c->mem, c->http->head);
  ms_free(c->mem, c->http->hdrs);
  ms_free(c->mem, c->http);
  c->http = NULL;
}

void ms_ws_accept_key(const char *key, size_t key_len, char out[29]) {
  struct sha1_ctx sha;
  uint8_t digest[SHA1_DIGEST_SIZE];
  sha1_init(&sha);
  sha1_update(&sha, key_len, (const uint8_t *)key);
  sha1_update(&sha, strlen(WS_GUID), (const uint8_t *)WS_GUID);
  sha1_digest(&sha, sizeof digest, digest);
  base64_encode_raw(out, sizeof digest, digest);
  out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

/* Sec-WebSocket-Key must be the base64 form of 16 bytes (RFC 6455 4.1). */
static int key_valid(const char *key, size_t len) {
  if (len != 24 || key[22] != '=' || key[23] != '=')
    return 0;
  for (size_t i = 0; i < 22; i++) {
    char ch = key[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
      return 0;
  }
  struct base64_decode_ctx b64;
  uint8_t raw[BASE64_DECODE_LENGTH(24)];
  size_t n = sizeof raw;
  base64_decode_init(&b64);
  if (!base64_decode_update(&b64, &n, raw, len, key) ||
      !base64_decode_final(&b64))
    return 0;
  return n == 16;
}

/* A complete HTTP response with a plain body (errors and the user's). */
static int write_response_k(ms_conn *c, int status, const char *content_type,
                            const char *extra, const void *body,
                            size_t body_len, int with_body, int keep) {
  /* body NULL with body_len SIZE_MAX: a streamed body (chunked). */
  int rv = body_len == SIZE_MAX && !body
               ? ms_buf_appendf(&c->out,
                                "HTTP/1.1 %d %s\r\nTransfer-Encoding: chunked\r\n"
                                "Connection: close\r\n",
                                status, ms_http_reason(status))
               : ms_buf_appendf(&c->out,
                                "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s",
                                status, ms_http_reason(status), body_len,
                                keep ? "" : "Connection: close\r\n");
  if (!rv && content_type)
    rv = ms_buf_appendf(&c->out, "Content-Type: %s\r\n", content_type);
  if (!rv && extra && extra[0]) {
    size_t n = strlen(extra);
    rv = ms_buf_append(&c->out, extra, n);
    if (!rv && (n < 2 || extra[n - 2] != '\r' || extra[n - 1] != '\n'))
      rv = ms_buf_append(&c->out, "\r\n", 2);
  }
  if (!rv)
    rv = ms_buf_append(&c->out, "\r\n", 2);
  if (!rv && with_body && body_len && body)
    rv = ms_buf_append(&c->out, body, body_len);
  return rv;
}

static int write_response(ms_conn *c, int status, const char *content_type,
                          const char *extra, const void *body,
                          size_t body_len, int with_body) {
  return write_response_k(c, status, content_type, extra, body, body_len,
                          with_body, 0);
}

/* Server: refuse the upgrade with status and a one-line reason. */
static int refuse(ms_conn *c, int status, const char *reason,
                  const char *extra) {
  char body[160];
  int n = snprintf(body, sizeof body, "%s\n", reason);
  if (n < 0)
    n = 0;
  int rv = write_response(c, status, "text/plain; charset=utf-8", extra, body,
                          MS_MIN((size_t)n, sizeof body - 1), 1);
  if (rv) {
    ms_conn_set_fatal(c, rv);
    return rv;
  }
  ms_conn_report_close(c, MS_ERR_HANDSHAKE, 0, reason, strlen(reason), 0, status);
  return 0;
}

/* Server: pick the subprotocol. Returns 0 (enc set, MS_ENC_NONE when none
 * was offered) or -1 when only unsupported ones were offered. */
static int pick_subprotocol(ms_conn *c, const ms_http_request *req,
                            ms_encoding *enc) {
  int offered = 0;
  *enc = MS_ENC_NONE;
  for (size_t i = 0; i < req->nheaders; i++) {
    const ms_http_header *h = &req->headers[i];
    if (!ms_http_ieq(h->name, h->name_len, "Sec-WebSocket-Protocol"))
      continue;
    size_t pos = 0;
    const char *t;
    size_t tl;
    while (ms_http_list_next(h->value, h->value_len, &pos, &t, &tl)) {
      offered = 1;
      ms_encoding e = ms_conn_enc_from_name(t, tl);
      if (e != MS_ENC_NONE && (c->cfg.accept_mask & (1u << e))) {
        *enc = e;
        return 0;
      }
    }
  }
  return offered ? -1 : 0;
}

static int open_ws(ms_conn *c, ms_encoding enc, int echoed,
                   const ms_http_request *req) {
  c->state = ST_OPEN;
  c->enc = enc == MS_ENC_NONE ? MS_ENC_MSGPACK : enc;
  c->hs_deadline = MS_NO_DEADLINE;
  if (c->cb.on_open && !c->life.dead) {
    ms_conn_open_arg arg = {c->enc, echoed, req};
    c->cb.on_open(c, &arg, c->user_data);
  }
  return 0;
}

/* Hand a complete plain request to the application. */
static int http_deliver(ms_conn *c, const ms_http_request *req) {
  c->state = ST_HTTP_WAIT;
  if (c->cb.on_http_request) {
    c->cb.on_http_request(c, req, c->user_data);
    return c->fatal;
  }
  static const char nf[] = "not found\n";
  return ms_conn_http_respond(c, 404, "text/plain; charset=utf-8", NULL, nf,
                              sizeof nf - 1);
}

int ms_conn_feed_body(ms_conn *c, const uint8_t *data, size_t len) {
  if (c->state != ST_HTTP_BODY)
    return 0; /* anything after the body is dropped */
  size_t take = MS_MIN(len, c->http->body_need - c->http->body.len);
  if (take < len)
    c->http->http_keep = 0; /* pipelined: dropped, so the answer closes */
  if (take && ms_buf_append(&c->http->body, data, take)) {
    ms_conn_set_fatal(c, MS_ERR_NOMEM);
    return MS_ERR_NOMEM;
  }
  if (c->http->body.len < c->http->body_need)
    return 0;
  ms_http_request req = c->http->body_req;
  req.body = (const uint8_t *)c->http->body.data;
  req.body_len = c->http->body.len;
  return http_deliver(c, &req);
}

static int server_head(ms_conn *c, size_t head_len) {
  ms_http_request req;
  size_t hl;
  int rv = ms_http_parse_request(c->http->head, head_len, c->cfg.max_header_bytes,
                                 c->http->hdrs, c->cfg.max_headers, &req, &hl);
  if (rv == MS_ERR_TOO_BIG)
    return refuse(c, 431, "too many header fields", NULL);
  if (rv)
    return refuse(c, 400, "malformed HTTP request", NULL);

  size_t up_len;
  const char *up = ms_http_find_header(req.headers, req.nheaders, "Upgrade",
                                       &up_len);
  if (!up) {
    /* A plain request: the application answers it, once its body (if
     * any) is in. */
    c->head_method = ms_http_ieq(req.method, req.method_len, "HEAD");
    /* Persistent only when nothing was sent after this request (pipelined
     * bytes would be lost: such a request is answered with a close). */
    c->http->http_keep =
        req.minor_version >= 1 &&
        !ms_http_headers_have_token(req.headers, req.nheaders, "Connection",
                                    "close") &&
        c->http->http_served + 1 < MS_CONN_HTTP_MAX_KEEP;
    if (ms_http_find_header(req.headers, req.nheaders, "Transfer-Encoding",
                            NULL))
      return refuse(c, 411, "a body needs Content-Length", NULL);
    size_t cl_len;
    const char *cl = ms_http_find_header(req.headers, req.nheaders,
                                         "Content-Length", &cl_len);
    if (cl) {
      uint64_t n = 0;
      if (cl_len == 0 || cl_len > 19 ||
          ms_http_count_header(req.headers, req.nheaders,
                               "Content-Length") != 1)
        return refuse(c, 400, "bad Content-Length", NULL);
      for (size_t i = 0; i < cl_len; i++) {
        if (cl[i] < '0' || cl[i] > '9')
          return refuse(c, 400, "bad Content-Length", NULL);
        n = n * 10 + (uint64_t)(cl[i] - '0');
      }
      if (n > c->cfg.max_message)
        return refuse(c, 413, "request body too large", NULL);
      if (c->http->http_extra > n)
        c->http->http_keep = 0;
      if (n > 0) {
        c->state = ST_HTTP_BODY;
        c->http->body_req = req;
        c->http->body_need = (size_t)n;
        return 0;
      }
    }
    if (c->http->http_extra > 0)
      c->http->http_keep = 0; /* a request without a body, and more after it */
    return http_deliver(c, &req);
  }
  if (!ms_http_ieq(req.method, req.method_len, "GET"))
    return refuse(c, 400, "a WebSocket upgrade must use GET", NULL);
  if (req.minor_version < 1)
    return refuse(c, 400, "a WebSocket upgrade needs HTTP/1.1", NULL);
  size_t host_len;
  if (!ms_http_find_header(req.headers, req.nheaders, "Host", &host_len) ||
      ms_http_count_header(req.headers, req.nheaders, "Host") != 1)
    return refuse(c, 400, "a WebSocket upgrade needs one Host header", NULL);
  if (!ms_http_list_has(up, up_len, "websocket"))
    return refuse(c, 400, "only the websocket upgrade is supported", NULL);
  if (!ms_http_headers_have_token(req.headers, req.nheaders, "Connection",
                                  "upgrade"))
    return refuse(c, 400, "Connection header lacks upgrade", NULL);
  size_t vlen;
  const char *ver = ms_http_find_header(req.headers, req.nheaders,
                                        "Sec-WebSocket-Version", &vlen);
  if (!ver || vlen != 2 || memcmp(ver, "13", 2) != 0 ||
      ms_http_count_header(req.headers, req.nheaders,
                           "Sec-WebSocket-Version") != 1)
    return refuse(c, 426, "unsupported WebSocket version",
                  "Sec-WebSocket-Version: 13\r\n");
  size_t klen;
  const char *key = ms_http_find_header(req.headers, req.nheaders,
                                        "Sec-WebSocket-Key", &klen);
  if (!key || !key_valid(key, klen) ||
      ms_http_count_header(req.headers, req.nheaders, "Sec-WebSocket-Key") !=
          1)
    return refuse(c, 400, "missing or invalid Sec-WebSocket-Key", NULL);
  ms_encoding enc;
  if (pick_subprotocol(c, &req, &enc) != 0)
    return refuse(c, 400,
                  "no supported subprotocol (" MS_SUBPROTO_MSGPACK
                  " or " MS_SUBPROTO_JSON ")",
                  NULL);
  if (c->cb.on_upgrade) {
    int st = c->cb.on_upgrade(c, &req, c->user_data);
    if (c->life.dead)
      return 0;
    if (st != 0) {
      if (st < 400 || st > 599)
        st = 500;
      return refuse(c, st, "upgrade refused", NULL);
    }
  }

  char accept[29];
  ms_ws_accept_key(key, klen, accept);
  rv = ms_buf_appendf(&c->out,
                      "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n",
                      accept);
  if (!rv && enc != MS_ENC_NONE)
    rv = ms_buf_appendf(&c->out, "Sec-WebSocket-Protocol: %s\r\n",
                        ms_conn_enc_name(enc));
  if (!rv)
    rv = ms_buf_append(&c->out, "\r\n", 2);
  if (rv) {
    ms_conn_set_fatal(c, rv);
    return rv;
  }
  /* wslay's context (some KiB) waits until something needs it: whole
   * data frames both ways do not (ms_conn_ws.c). */
  c->asleep = 1;
  return open_ws(c, enc, enc != MS_ENC_NONE, &req);
}

static int client_fail(ms_conn *c, int status, const char *why) {
  ms_conn_report_close(c, MS_ERR_HANDSHAKE, 0, why, strlen(why), 0, status);
  return 0;
}

static int client_head(ms_conn *c, size_t head_len) {
  ms_http_response res;
  size_t hl;
  int rv = ms_http_parse_response(c->http->head, head_len, c->cfg.max_header_bytes,
                                  c->http->hdrs, c->cfg.max_headers, &res, &hl);
  if (rv)
    return client_fail(c, 0, "malformed HTTP response");
  if (res.status != 101)
    return client_fail(c, res.status, "upgrade refused");
  size_t n;
  const char *v = ms_http_find_header(res.headers, res.nheaders, "Upgrade", &n);
  if (!v || !ms_http_list_has(v, n, "websocket") ||
      !ms_http_headers_have_token(res.headers, res.nheaders, "Connection",
                                  "upgrade"))
    return client_fail(c, 101, "response lacks Upgrade/Connection");
  v = ms_http_find_header(res.headers, res.nheaders, "Sec-WebSocket-Accept",
                          &n);
  if (!v || n != 28 || memcmp(v, c->http->key_accept, 28) != 0 ||
      ms_http_count_header(res.headers, res.nheaders,
                           "Sec-WebSocket-Accept") != 1)
    return client_fail(c, 101, "bad Sec-WebSocket-Accept");
  /* We offer no extension, so none may be accepted (RFC 6455 4.1). */
  if (ms_http_find_header(res.headers, res.nheaders, "Sec-WebSocket-Extensions",
                          &n))
    return client_fail(c, 101, "unexpected extension");
  ms_encoding enc = MS_ENC_NONE;
  size_t np = ms_http_count_header(res.headers, res.nheaders,
                                   "Sec-WebSocket-Protocol");
  if (np > 1)
    return client_fail(c, 101, "more than one subprotocol");
  if (np == 1) {
    v = ms_http_find_header(res.headers, res.nheaders, "Sec-WebSocket-Protocol",
                            &n);
    enc = ms_conn_enc_from_name(v, n);
    int offered = 0;
    for (size_t i = 0; i < MS_ARRAY_LEN(c->cfg.offer); i++) {
      if (c->cfg.offer[i] == MS_ENC_NONE)
        break;
      if (c->cfg.offer[i] == enc)
        offered = 1;
    }
    if (enc == MS_ENC_NONE || !offered)
      return client_fail(c, 101, "subprotocol not offered");
  }
  if ((rv = ms_conn_ws_create(c)) != 0) {
    ms_conn_set_fatal(c, rv);
    return rv;
  }
  return open_ws(c, enc, enc != MS_ENC_NONE, NULL);
}

/* Heads start in this much and grow (doubling) up to max_header_bytes:
 * an upgrade request is a few hundred bytes. */
#define HEAD_FIRST 1024

int ms_conn_feed_head(ms_conn *c, const uint8_t *data, size_t len) {
  size_t max = c->cfg.max_header_bytes;
  if (!http_state(c)) {
    ms_conn_set_fatal(c, MS_ERR_NOMEM);
    return MS_ERR_NOMEM;
  }
  if (c->http->head_len == 0 && c->http->body.cap) /* the previous request's body */
    ms_buf_free(&c->http->body);
  size_t take = MS_MIN(len, max - c->http->head_len);
  if (c->http->head_len + take > c->http->head_cap) {
    size_t cap = c->http->head_cap ? c->http->head_cap : MS_MIN(max, HEAD_FIRST);
    while (cap < c->http->head_len + take)
      cap = MS_MIN(max, cap * 2);
    char *p = ms_realloc(c->mem, c->http->head, cap);
    if (!p) {
      ms_conn_set_fatal(c, MS_ERR_NOMEM);
      return MS_ERR_NOMEM;
    }
    c->http->head = p;
    c->http->head_cap = cap;
  }
  if (!c->http->hdrs) {
    c->http->hdrs = ms_calloc(c->mem, c->cfg.max_headers, sizeof *c->http->hdrs);
    if (!c->http->hdrs) {
      ms_conn_set_fatal(c, MS_ERR_NOMEM);
      return MS_ERR_NOMEM;
    }
  }
  if (take)
    memcpy(c->http->head + c->http->head_len, data, take);
  c->http->head_len += take;
  size_t hl;
  int end = ms_http_find_end(c->http->head, c->http->head_len, &c->http->head_scan, &hl);
  if (end == MS_ERR_HTTP) {
    if (c->cfg.role == MS_CONN_SERVER)
      return refuse(c, 400, "malformed HTTP request (lines must end with CRLF)",
                    NULL);
    return client_fail(c, 0, "malformed HTTP response");
  }
  if (end != 0) {
    if (c->http->head_len < max)
      return 0;
    if (c->cfg.role == MS_CONN_SERVER)
      return refuse(c, 431, "request head too large", NULL);
    return client_fail(c, 0, "response head too large");
  }
  c->http->http_extra = (c->http->head_len - hl) + (len - take);
  int rv = c->cfg.role == MS_CONN_SERVER ? server_head(c, hl)
                                         : client_head(c, hl);
  if (rv || c->life.dead)
    return rv;
  if (c->state == ST_HTTP_BODY) {
    rv = ms_conn_feed_body(c, (const uint8_t *)c->http->head + hl, c->http->head_len - hl);
    if (!rv && !c->life.dead)
      rv = ms_conn_feed_body(c, data + take, len - take);
    return rv;
  }
  if (c->state == ST_OPEN || c->state == ST_CLOSING) {
    /* Bytes after the head belong to the WebSocket: first what was copied
     * into the head buffer, then the rest of this feed. */
    rv = ms_conn_feed_ws(c, (const uint8_t *)c->http->head + hl, c->http->head_len - hl);
    if (!rv && !c->life.dead)
      rv = ms_conn_feed_ws(c, data + take, len - take);
    ms_conn_free_head(c);
  }
  return rv;
}

int ms_conn_http_respond(ms_conn *c, int status, const char *content_type,
                         const char *extra_headers, const void *body,
                         size_t body_len) {
  if (!c || (!body && body_len) || status < 100 || status > 999)
    return MS_ERR_INVALID_ARG;
  if (c->life.dead)
    return MS_ERR_STATE;
  if (c->fatal)
    return c->fatal;
  if (c->cfg.role != MS_CONN_SERVER || c->state != ST_HTTP_WAIT)
    return MS_ERR_STATE;
  int rv = write_response(c, status, content_type, extra_headers, body,
                          body_len, !c->head_method);
  if (rv) {
    ms_conn_set_fatal(c, rv);
    return rv;
  }
  conn_enter(c);
  ms_conn_report_close(c, 0, 0, NULL, 0, 0, status);
  ms_conn_leave(c);
  return 0;
}

int ms_conn_http_respond_keep(ms_conn *c, int status,
                              const char *content_type,
                              const char *extra_headers, const void *body,
                              size_t body_len) {
  if (!c || (!body && body_len) || status < 100 || status > 999)
    return MS_ERR_INVALID_ARG;
  if (c->fatal)
    return c->fatal;
  if (c->cfg.role != MS_CONN_SERVER || c->state != ST_HTTP_WAIT)
    return MS_ERR_STATE;
  if (!c->http->http_keep)
    return ms_conn_http_respond(c, status, content_type, extra_headers, body,
                                body_len);
  int rv = write_response_k(c, status, content_type, extra_headers, body,
                            body_len, !c->head_method, 1);
  if (rv) {
    ms_conn_set_fatal(c, rv);
    return rv;
  }
  /* Back to reading a head. The buffers are kept (not freed): the caller
   * may still read the request it is answering; the next feed reuses them
   * (and lets go of a body). */
  c->http->http_served++;
  c->http->http_keep = 0;
  c->http->head_len = c->http->head_scan = 0;
  c->head_method = 0;
  c->http->body_need = 0;
  c->state = ST_HEAD;
  int rearm;
  c->hs_deadline = ms_conn_arm(c, c->cfg.handshake_timeout_ms, &rearm);
  c->rearm_hs = rearm != 0;
  return 1;
}

int ms_conn_http_begin(ms_conn *c, int status, const char *content_type,
                       const char *extra_headers) {
  if (!c || status < 100 || status > 999)
    return MS_ERR_INVALID_ARG;
  if (c->life.dead)
    return MS_ERR_STATE;
  if (c->fatal)
    return c->fatal;
  if (c->cfg.role != MS_CONN_SERVER || c->state != ST_HTTP_WAIT ||
      c->http_streaming)
    return MS_ERR_STATE;
  int rv = write_response(c, status, content_type, extra_headers, NULL,
                          SIZE_MAX, 0);
  if (rv) {
    ms_conn_set_fatal(c, rv);
    return rv;
  }
  c->http_streaming = 1;
  c->http_status = status;
  /* The answer has started: the request deadline no longer applies (the
   * application bounds a stalled reader itself). */
  c->hs_deadline = MS_NO_DEADLINE;
  return 0;
}

int ms_conn_http_write(ms_conn *c, const void *data, size_t len) {
  if (!c || (!data && len))
    return MS_ERR_INVALID_ARG;
  if (c->life.dead)
    return MS_ERR_STATE;
  if (c->fatal)
    return c->fatal;
  if (c->state != ST_HTTP_WAIT || !c->http_streaming)
    return MS_ERR_STATE;
  if (len == 0 || c->head_method)
    return 0;
  int rv = ms_buf_appendf(&c->out, "%zx\r\n", len);
  if (!rv)
    rv = ms_buf_append(&c->out, data, len);
  if (!rv)
    rv = ms_buf_append(&c->out, "\r\n", 2);
  if (rv)
    ms_conn_set_fatal(c, rv);
  return rv;
}

int ms_conn_http_end(ms_conn *c, int complete) {
  if (!c)
    return MS_ERR_INVALID_ARG;
  if (c->life.dead)
    return MS_ERR_STATE;
  if (c->fatal)
    return c->fatal;
  if (c->state != ST_HTTP_WAIT || !c->http_streaming)
    return MS_ERR_STATE;
  /* Without the last chunk the body is visibly cut: a reader of chunked
   * coding knows it did not get the whole answer. */
  if (complete && !c->head_method &&
      ms_buf_append(&c->out, "0\r\n\r\n", 5) != 0) {
    ms_conn_set_fatal(c, MS_ERR_NOMEM);
    return MS_ERR_NOMEM;
  }
  conn_enter(c);
  ms_conn_report_close(c, complete ? 0 : MS_ERR_CLOSED, 0, NULL, 0, 0,
                       c->http_status);
  ms_conn_leave(c);
  return 0;
}

/* Client: queue the upgrade request (a fresh key; the accept value it
 * implies is kept for the response). */
int ms_conn_write_upgrade_request(ms_conn *c) {
  uint8_t raw[16];
  char key[25];
  if (!http_state(c))
    return MS_ERR_NOMEM;
  ms_rand_bytes(c->rng, raw, sizeof raw);
  base64_encode_raw(key, sizeof raw, raw);
  key[24] = '\0';
  ms_ws_accept_key(key, 24, c->http->key_accept);
  int rv = ms_buf_appendf(&c->out,
                          "GET %s HTTP/1.1\r\nHost: %s\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: %s\r\n"
                          "Sec-WebSocket-Version: 13\r\n",
                          c->cfg.path, c->cfg.host, key);
  if (!rv && c->cfg.offer[0] != MS_ENC_NONE) {
    rv = ms_buf_append(&c->out, "Sec-WebSocket-Protocol: ", 24);
    for (size_t i = 0; !rv && i < MS_ARRAY_LEN(c->cfg.offer); i++) {
      if (c->cfg.offer[i] == MS_ENC_NONE)
        break;
      rv = ms_buf_appendf(&c->out, "%s%s", i ? ", " : "",
                          ms_conn_enc_name(c->cfg.offer[i]));
    }
    if (!rv)
      rv = ms_buf_append(&c->out, "\r\n", 2);
  }
  if (!rv && c->cfg.origin)
    rv = ms_buf_appendf(&c->out, "Origin: %s\r\n", c->cfg.origin);
  if (!rv)
    rv = ms_buf_append(&c->out, "\r\n", 2);
  return rv;
}
