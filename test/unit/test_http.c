/* HTTP head parser, UTF-8 validator and CSPRNG: scripted inputs. */
#include "ms_http.h"
#include "ms_internal.h"
#include "ms_rand.h"
#include "ms_utf8.h"
#include "ms_test.h"

#define S(lit) lit, sizeof(lit) - 1

static ms_http_header hdrs[16];

static int parse_req(const char *s, size_t len, ms_http_request *req,
                     size_t *head_len) {
  return ms_http_parse_request(s, len, 8192, hdrs, 16, req, head_len);
}

static void request_line_headers_and_query_are_parsed(void) {
  static const char r[] = "GET /ws/x?a=1&b=2 HTTP/1.1\r\n"
                          "Host: example.com\r\n"
                          "UPGRADE:   websocket  \r\n"
                          "Connection: keep-alive, Upgrade\r\n"
                          "X-Empty:\r\n"
                          "\r\n"
                          "tail";
  ms_http_request req;
  size_t hl = 0;
  CHECK_EQ_INT(parse_req(r, sizeof r - 1, &req, &hl), 0);
  CHECK_EQ_INT(hl, sizeof r - 1 - 4);
  CHECK_MEM(req.method, req.method_len, "GET", 3);
  CHECK_MEM(req.target, req.target_len, "/ws/x?a=1&b=2", 13);
  CHECK_MEM(req.path, req.path_len, "/ws/x", 5);
  CHECK_MEM(req.query, req.query_len, "a=1&b=2", 7);
  CHECK_EQ_INT(req.minor_version, 1);
  CHECK_EQ_INT(req.nheaders, 4);
  size_t vl;
  const char *v = ms_http_header_get(&req, "upgrade", &vl);
  CHECK(v != NULL);
  CHECK_MEM(v, vl, "websocket", 9);
  v = ms_http_header_get(&req, "x-empty", &vl);
  CHECK(v != NULL);
  CHECK_EQ_INT(vl, 0);
  CHECK(ms_http_header_get(&req, "Missing", &vl) == NULL);
  CHECK(ms_http_headers_have_token(req.headers, req.nheaders, "connection",
                                   "upgrade"));
  CHECK(!ms_http_headers_have_token(req.headers, req.nheaders, "connection",
                                    "close"));
}

static void path_without_query_has_empty_query(void) {
  ms_http_request req;
  size_t hl;
  CHECK_EQ_INT(parse_req(S("GET /healthz HTTP/1.0\r\n\r\n"), &req, &hl), 0);
  CHECK_MEM(req.path, req.path_len, "/healthz", 8);
  CHECK_EQ_INT(req.query_len, 0);
  CHECK_EQ_INT(req.minor_version, 0);
  CHECK_EQ_INT(req.nheaders, 0);
}

static void incomplete_head_needs_more_at_every_length(void) {
  static const char r[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  ms_http_request req;
  size_t hl;
  for (size_t n = 0; n < sizeof r - 1; n++)
    CHECK_EQ_INT(parse_req(r, n, &req, &hl), MS_ERR_NEED_MORE);
  CHECK_EQ_INT(parse_req(r, sizeof r - 1, &req, &hl), 0);
}

static void find_end_is_incremental(void) {
  static const char r[] = "GET / HTTP/1.1\r\nA: b\r\n\r\nxyz";
  size_t scan = 0, hl = 0;
  size_t i;
  for (i = 1; i <= sizeof r - 1; i++)
    if (ms_http_find_end(r, i, &scan, &hl) == 0)
      break;
  CHECK_EQ_INT(i, sizeof r - 1 - 3);
  CHECK_EQ_INT(hl, sizeof r - 1 - 3);
}

static void find_end_refuses_bare_lf_and_cr(void) {
  size_t scan = 0, hl = 0;
  CHECK_EQ_INT(ms_http_find_end("GET / HTTP/1.1\n", 15, &scan, &hl),
               MS_ERR_HTTP);
  scan = 0;
  CHECK_EQ_INT(ms_http_find_end("GET / HTTP/1.1\rX", 16, &scan, &hl),
               MS_ERR_HTTP);
  scan = 0; /* a CR at the end may still be followed by LF */
  CHECK_EQ_INT(ms_http_find_end("GET / HTTP/1.1\r", 15, &scan, &hl),
               MS_ERR_NEED_MORE);
}

static void malformed_requests_are_rejected(void) {
  static const char *bad[] = {
      "GET / HTTP/1.1\nHost: a\r\n\r\n",          /* bare LF */
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",       /* space before colon */
      "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",  /* obs-fold */
      "GET / HTTP/2.0\r\n\r\n",                   /* version */
      "GET  / HTTP/1.1\r\n\r\n",                  /* double space */
      "GET / HTTP/1.1 \r\n\r\n",                  /* trailing space */
      "G(T / HTTP/1.1\r\n\r\n",                   /* bad method */
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",        /* no colon */
      "GET / HTTP/1.1\r\n: v\r\n\r\n",            /* empty name */
      "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",       /* control char */
      "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",        /* bare CR */
      "\r\n\r\n",                                 /* empty request line */
  };
  for (size_t i = 0; i < MS_ARRAY_LEN(bad); i++) {
    ms_http_request req;
    size_t hl;
    int rv = parse_req(bad[i], strlen(bad[i]), &req, &hl);
    if (rv != MS_ERR_HTTP)
      printf("# case %zu: %d\n", i, rv);
    CHECK_EQ_INT(rv, MS_ERR_HTTP);
  }
}

static void limits_give_too_big(void) {
  ms_http_request req;
  size_t hl;
  /* Head longer than the byte limit, complete or not. */
  char big[200];
  memset(big, 'a', sizeof big);
  memcpy(big, "GET /", 5);
  CHECK_EQ_INT(ms_http_parse_request(big, sizeof big, 64, hdrs, 16, &req, &hl),
               MS_ERR_TOO_BIG);
  static const char r[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
  CHECK_EQ_INT(ms_http_parse_request(r, sizeof r - 1, 20, hdrs, 16, &req, &hl),
               MS_ERR_TOO_BIG);
  /* More headers than allowed. */
  CHECK_EQ_INT(ms_http_parse_request(r, sizeof r - 1, 8192, hdrs, 2, &req, &hl),
               MS_ERR_TOO_BIG);
  CHECK_EQ_INT(ms_http_parse_request(r, sizeof r - 1, 8192, hdrs, 3, &req, &hl),
               0);
  CHECK_EQ_INT(req.nheaders, 3);
}

static void response_status_line_is_parsed(void) {
  static const char r[] = "HTTP/1.1 101 Switching Protocols\r\n"
                          "Upgrade: websocket\r\n\r\n";
  ms_http_response res;
  size_t hl;
  CHECK_EQ_INT(ms_http_parse_response(r, sizeof r - 1, 8192, hdrs, 16, &res,
                                      &hl),
               0);
  CHECK_EQ_INT(res.status, 101);
  CHECK_MEM(res.reason, res.reason_len, "Switching Protocols", 19);
  CHECK_EQ_INT(res.nheaders, 1);
  static const char r2[] = "HTTP/1.1 404\r\n\r\n";
  CHECK_EQ_INT(ms_http_parse_response(r2, sizeof r2 - 1, 8192, hdrs, 16, &res,
                                      &hl),
               0);
  CHECK_EQ_INT(res.status, 404);
  CHECK_EQ_INT(res.reason_len, 0);
  static const char bad[] = "HTTP/1.1 1x1 OK\r\n\r\n";
  CHECK_EQ_INT(ms_http_parse_response(bad, sizeof bad - 1, 8192, hdrs, 16,
                                      &res, &hl),
               MS_ERR_HTTP);
}

static void token_lists_trim_and_ignore_case(void) {
  static const char v[] = " a ,, Keep-Alive ,Upgrade\t,";
  CHECK(ms_http_list_has(v, sizeof v - 1, "upgrade"));
  CHECK(ms_http_list_has(v, sizeof v - 1, "keep-alive"));
  CHECK(ms_http_list_has(v, sizeof v - 1, "A"));
  CHECK(!ms_http_list_has(v, sizeof v - 1, "keep"));
  size_t pos = 0, n = 0, tl;
  const char *t;
  while (ms_http_list_next(v, sizeof v - 1, &pos, &t, &tl))
    n++;
  CHECK_EQ_INT(n, 3);
  CHECK(!ms_http_list_has("", 0, "x"));
}

static void utf8_validator_follows_rfc3629(void) {
  CHECK(ms_utf8_valid((const uint8_t *)"", 0));
  CHECK(ms_utf8_valid((const uint8_t *)"plain ascii", 11));
  CHECK(ms_utf8_valid((const uint8_t *)"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
                      9));
  CHECK(ms_utf8_valid((const uint8_t *)"\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
  CHECK(ms_utf8_valid((const uint8_t *)"\xed\x9f\xbf", 3));     /* U+D7FF */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xc0\xaf", 2));        /* overlong */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xe0\x80\xaf", 3));    /* overlong */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xf0\x80\x80\xaf", 4)); /* overlong */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));    /* surrogate */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > max */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xf5\x80\x80\x80", 4));
  CHECK(!ms_utf8_valid((const uint8_t *)"\x80", 1));   /* lone continuation */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xc3", 1));   /* truncated */
  CHECK(!ms_utf8_valid((const uint8_t *)"\xc3\x28", 2));
  /* Incremental: a sequence split across chunks. */
  ms_utf8_state s;
  ms_utf8_init(&s);
  CHECK_EQ_INT(ms_utf8_feed(&s, (const uint8_t *)"a\xf0\x9f", 3), 0);
  CHECK(!ms_utf8_complete(&s));
  CHECK_EQ_INT(ms_utf8_feed(&s, (const uint8_t *)"\x98", 1), 0);
  CHECK_EQ_INT(ms_utf8_feed(&s, (const uint8_t *)"\x80z", 2), 0);
  CHECK(ms_utf8_complete(&s));
  CHECK_EQ_INT(ms_utf8_feed(&s, (const uint8_t *)"\xff", 1), -1);
  CHECK_EQ_INT(ms_utf8_feed(&s, (const uint8_t *)"a", 1), -1); /* sticky */
  /* Long ASCII runs (read eight bytes at a time) with a sequence or a
   * bad byte at every offset, and ending at every offset. */
  for (size_t at = 0; at < 40; at++) {
    uint8_t buf[64];
    memset(buf, 'a', sizeof buf);
    memcpy(buf + at, "\xe2\x82\xac", 3);
    CHECK(ms_utf8_valid(buf, sizeof buf));
    CHECK(ms_utf8_valid(buf, at + 3));
    CHECK(!ms_utf8_valid(buf, at + 2)); /* cut inside the sequence */
    buf[at + 1] = 'x';                  /* E2 then ASCII */
    CHECK(!ms_utf8_valid(buf, sizeof buf));
    buf[at] = 0x80; /* a lone continuation byte */
    CHECK(!ms_utf8_valid(buf, sizeof buf));
    buf[at] = 0xff;
    CHECK(!ms_utf8_valid(buf, sizeof buf));
    CHECK(ms_utf8_valid(buf, at));
  }
}

static void rand_seeded_is_deterministic_and_chunking_free(void) {
  uint8_t seed[32] = {1, 2, 3};
  ms_rand a, b;
  ms_rand_init_seed(&a, seed);
  ms_rand_init_seed(&b, seed);
  uint8_t x[200], y[200];
  ms_rand_bytes(&a, x, sizeof x);
  /* The same stream whatever the request sizes. */
  size_t off = 0, step = 1;
  while (off < sizeof y) {
    size_t n = MS_MIN(step, sizeof y - off);
    ms_rand_bytes(&b, y + off, n);
    off += n;
    step = step * 3 + 1;
  }
  CHECK_MEM(x, sizeof x, y, sizeof y);
  /* Not all zero, and another seed differs. */
  int nonzero = 0;
  for (size_t i = 0; i < sizeof x; i++)
    nonzero |= x[i];
  CHECK(nonzero);
  seed[0] = 9;
  ms_rand_init_seed(&a, seed);
  ms_rand_bytes(&a, y, sizeof y);
  CHECK(memcmp(x, y, sizeof x) != 0);
  /* OS-seeded generators differ from each other. */
  ms_rand_init(&a);
  ms_rand_init(&b);
  CHECK(ms_rand_u64(&a) != ms_rand_u64(&b));
}

static const ms_test_case tests[] = {
    TEST(request_line_headers_and_query_are_parsed),
    TEST(path_without_query_has_empty_query),
    TEST(incomplete_head_needs_more_at_every_length),
    TEST(find_end_is_incremental),
    TEST(find_end_refuses_bare_lf_and_cr),
    TEST(malformed_requests_are_rejected),
    TEST(limits_give_too_big),
    TEST(response_status_line_is_parsed),
    TEST(token_lists_trim_and_ignore_case),
    TEST(utf8_validator_follows_rfc3629),
    TEST(rand_seeded_is_deterministic_and_chunking_free),
};

MS_TEST_MAIN(tests)
