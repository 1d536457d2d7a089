/*
 * HTTP/1.1 head parsing for the WebSocket upgrade (RFC 9112 subset).
 *
 * Strict on purpose: CRLF line ends only, no obs-fold, token-only header
 * names, no control characters, bounded size and header count. A head is
 * parsed once it is complete; ms_http_find_end() lets a caller that
 * receives bytes in pieces look for the end without rescanning.
 *
 * Parsed strings point into the caller's buffer; nothing is allocated.
 */
#ifndef MS_HTTP_H
#define MS_HTTP_H

#include <microstream/ms_conn.h>

#include <stddef.h>

typedef struct ms_http_response {
  int minor_version;
  int status;
  const char *reason;
  size_t reason_len;
  const ms_http_header *headers;
  size_t nheaders;
} ms_http_response;

/* Look for the blank line ending a head in buf[0..len). *scan is where the
 * previous call stopped (start at 0); it is advanced so that feeding a byte
 * at a time stays linear. Returns 0 and *head_len (including the final
 * CRLFCRLF), MS_ERR_NEED_MORE, or MS_ERR_HTTP at a bare LF or CR (no
 * CRLF head can follow: the caller refuses at once). */
int ms_http_find_end(const char *buf, size_t len, size_t *scan,
                     size_t *head_len);

/* Parse a request head at the start of buf. hdrs has room for max_headers.
 * Returns 0 with *head_len set; MS_ERR_NEED_MORE when no complete head is
 * within the first max_header_bytes; MS_ERR_TOO_BIG when the head exceeds
 * max_header_bytes or has more than max_headers headers; MS_ERR_HTTP when
 * it is malformed. */
int ms_http_parse_request(const char *buf, size_t len, size_t max_header_bytes,
                          ms_http_header *hdrs, size_t max_headers,
                          ms_http_request *req, size_t *head_len);

/* The same for a response head (client role). */
int ms_http_parse_response(const char *buf, size_t len,
                           size_t max_header_bytes, ms_http_header *hdrs,
                           size_t max_headers, ms_http_response *res,
                           size_t *head_len);

/* Case-insensitive comparison of a (ptr, len) string with a C string. */
int ms_http_ieq(const char *a, size_t alen, const char *b);

/* First header named name (case-insensitive) in hdrs[0..n), or NULL. */
const char *ms_http_find_header(const ms_http_header *hdrs, size_t n,
                                const char *name, size_t *value_len);

/* Number of headers named name. */
size_t ms_http_count_header(const ms_http_header *hdrs, size_t n,
                            const char *name);

/* Iterate a comma-separated list ("a, b ,c"): returns 1 with the next
 * non-empty element (OWS trimmed) in *tok and *tok_len, advances *pos, or
 * 0 at the end. Start with *pos = 0. */
int ms_http_list_next(const char *value, size_t len, size_t *pos,
                      const char **tok, size_t *tok_len);

/* Non-zero if the comma-separated list contains token (case-insensitive). */
int ms_http_list_has(const char *value, size_t len, const char *token);

/* Non-zero if any header named name holds token in its list. */
int ms_http_headers_have_token(const ms_http_header *hdrs, size_t n,
                               const char *name, const char *token);

/* Split a request-target into path and query (after '?', without it). */
void ms_http_split_target(const char *target, size_t len, const char **path,
                          size_t *path_len, const char **query,
                          size_t *query_len);

/* The standard reason phrase of a status code ("Not Found"), or "Error". */
const char *ms_http_reason(int status);

#endif
