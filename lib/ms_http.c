/* Strict HTTP/1.1 head parser for the WebSocket upgrade; see ms_http.h. */
#include "ms_http.h"
#include "ms_internal.h"

static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return 1;
  switch (c) {
  case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
  case '+': case '-': case '.': case '^': case '_': case '`': case '|':
  case '~':
    return 1;
  default:
    return 0;
  }
}

/* field-value and reason-phrase characters: HTAB, SP, VCHAR, obs-text. */
static int is_text(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7F);
}

static unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

int ms_http_ieq(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 0;
  return 1;
}

int ms_http_find_end(const char *buf, size_t len, size_t *scan,
                     size_t *head_len) {
  /* Restart three bytes back so a terminator split across calls is seen. */
  size_t i = *scan > 3 ? *scan - 3 : 0;
  for (; i < len; i++) {
    /* Lines end with CRLF only: a bare LF (or CR) is refused at once
     * rather than waiting for a CRLFCRLF that will never come. */
    if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
      return MS_ERR_HTTP;
    if (buf[i] == '\r' && i + 1 < len && buf[i + 1] != '\n')
      return MS_ERR_HTTP;
    if (i + 4 <= len && buf[i] == '\r' && buf[i + 1] == '\n' &&
        buf[i + 2] == '\r' && buf[i + 3] == '\n') {
      *head_len = i + 4;
      *scan = len;
      return 0;
    }
  }
  *scan = len;
  return MS_ERR_NEED_MORE;
}

/* Locate the complete head within the size limit. */
static int head_bounds(const char *buf, size_t len, size_t max_bytes,
                       size_t *head_len) {
  size_t scan = 0;
  size_t window = MS_MIN(len, max_bytes);
  int rv = ms_http_find_end(buf, window, &scan, head_len);
  if (rv == 0 || rv == MS_ERR_HTTP)
    return rv;
  return len >= max_bytes ? MS_ERR_TOO_BIG : MS_ERR_NEED_MORE;
}

/* Next CRLF-terminated line in [*pos, end): sets [*ls, *le) without the
 * CRLF. A bare CR or LF inside a line is an error. */
static int next_line(const char *buf, size_t end, size_t *pos, size_t *ls,
                     size_t *le) {
  size_t i = *pos;
  *ls = i;
  for (; i < end; i++) {
    if (buf[i] == '\n')
      return MS_ERR_HTTP; /* LF without CR */
    if (buf[i] == '\r') {
      if (i + 1 >= end || buf[i + 1] != '\n')
        return MS_ERR_HTTP;
      *le = i;
      *pos = i + 2;
      return 0;
    }
  }
  return MS_ERR_HTTP;
}

static int parse_version(const char *p, size_t len, int *minor) {
  if (len != 8 || memcmp(p, "HTTP/1.", 7) != 0)
    return MS_ERR_HTTP;
  if (p[7] != '0' && p[7] != '1')
    return MS_ERR_HTTP;
  *minor = p[7] - '0';
  return 0;
}

static int parse_headers(const char *buf, size_t end, size_t *pos,
                         ms_http_header *hdrs, size_t max_headers,
                         size_t *nheaders) {
  size_t n = 0;
  for (;;) {
    size_t ls, le;
    int rv = next_line(buf, end, pos, &ls, &le);
    if (rv)
      return rv;
    if (ls == le)
      break; /* the blank line */
    unsigned char first = (unsigned char)buf[ls];
    if (first == ' ' || first == '\t')
      return MS_ERR_HTTP; /* obs-fold: refused (RFC 9112 5.2) */
    size_t i = ls;
    while (i < le && is_tchar((unsigned char)buf[i]))
      i++;
    /* No whitespace is allowed between the name and the colon. */
    if (i == ls || i >= le || buf[i] != ':')
      return MS_ERR_HTTP;
    size_t name_end = i++;
    while (i < le && (buf[i] == ' ' || buf[i] == '\t'))
      i++;
    size_t vs = i, ve = le;
    while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
      ve--;
    for (size_t k = vs; k < ve; k++)
      if (!is_text((unsigned char)buf[k]))
        return MS_ERR_HTTP;
    if (n >= max_headers)
      return MS_ERR_TOO_BIG;
    hdrs[n].name = buf + ls;
    hdrs[n].name_len = name_end - ls;
    hdrs[n].value = buf + vs;
    hdrs[n].value_len = ve - vs;
    n++;
  }
  *nheaders = n;
  return 0;
}

void ms_http_split_target(const char *target, size_t len, const char **path,
                          size_t *path_len, const char **query,
                          size_t *query_len) {
  const char *q = memchr(target, '?', len);
  *path = target;
  if (!q) {
    *path_len = len;
    *query = target + len;
    *query_len = 0;
    return;
  }
  *path_len = (size_t)(q - target);
  *query = q + 1;
  *query_len = len - *path_len - 1;
}

int ms_http_parse_request(const char *buf, size_t len, size_t max_header_bytes,
                          ms_http_header *hdrs, size_t max_headers,
                          ms_http_request *req, size_t *head_len) {
  size_t end;
  int rv = head_bounds(buf, len, max_header_bytes, &end);
  if (rv)
    return rv;
  memset(req, 0, sizeof *req);
  size_t pos = 0, ls, le;
  if ((rv = next_line(buf, end, &pos, &ls, &le)) != 0)
    return rv;
  /* method SP request-target SP HTTP-version */
  size_t i = ls;
  while (i < le && is_tchar((unsigned char)buf[i]))
    i++;
  if (i == ls || i >= le || buf[i] != ' ')
    return MS_ERR_HTTP;
  req->method = buf + ls;
  req->method_len = i - ls;
  size_t ts = ++i;
  while (i < le && buf[i] > 0x20 && buf[i] < 0x7F)
    i++;
  if (i == ts || i >= le || buf[i] != ' ')
    return MS_ERR_HTTP;
  req->target = buf + ts;
  req->target_len = i - ts;
  i++;
  if ((rv = parse_version(buf + i, le - i, &req->minor_version)) != 0)
    return rv;
  ms_http_split_target(req->target, req->target_len, &req->path,
                       &req->path_len, &req->query, &req->query_len);
  if ((rv = parse_headers(buf, end, &pos, hdrs, max_headers,
                          &req->nheaders)) != 0)
    return rv;
  req->headers = hdrs;
  *head_len = end;
  return 0;
}

int ms_http_parse_response(const char *buf, size_t len,
                           size_t max_header_bytes, ms_http_header *hdrs,
                           size_t max_headers, ms_http_response *res,
                           size_t *head_len) {
  size_t end;
  int rv = head_bounds(buf, len, max_header_bytes, &end);
  if (rv)
    return rv;
  memset(res, 0, sizeof *res);
  size_t pos = 0, ls, le;
  if ((rv = next_line(buf, end, &pos, &ls, &le)) != 0)
    return rv;
  /* HTTP-version SP 3DIGIT SP reason-phrase */
  if (le - ls < 12)
    return MS_ERR_HTTP;
  if ((rv = parse_version(buf + ls, 8, &res->minor_version)) != 0)
    return rv;
  if (buf[ls + 8] != ' ')
    return MS_ERR_HTTP;
  int status = 0;
  for (size_t k = ls + 9; k < ls + 12; k++) {
    if (buf[k] < '0' || buf[k] > '9')
      return MS_ERR_HTTP;
    status = status * 10 + (buf[k] - '0');
  }
  if (status < 100)
    return MS_ERR_HTTP;
  res->status = status;
  size_t i = ls + 12;
  if (i < le) {
    if (buf[i] != ' ')
      return MS_ERR_HTTP;
    i++;
    for (size_t k = i; k < le; k++)
      if (!is_text((unsigned char)buf[k]))
        return MS_ERR_HTTP;
  }
  res->reason = buf + i;
  res->reason_len = le - i;
  if ((rv = parse_headers(buf, end, &pos, hdrs, max_headers,
                          &res->nheaders)) != 0)
    return rv;
  res->headers = hdrs;
  *head_len = end;
  return 0;
}

const char *ms_http_find_header(const ms_http_header *hdrs, size_t n,
                                const char *name, size_t *value_len) {
  for (size_t i = 0; i < n; i++) {
    if (ms_http_ieq(hdrs[i].name, hdrs[i].name_len, name)) {
      if (value_len)
        *value_len = hdrs[i].value_len;
      return hdrs[i].value;
    }
  }
  if (value_len)
    *value_len = 0;
  return NULL;
}

size_t ms_http_count_header(const ms_http_header *hdrs, size_t n,
                            const char *name) {
  size_t count = 0;
  for (size_t i = 0; i < n; i++)
    if (ms_http_ieq(hdrs[i].name, hdrs[i].name_len, name))
      count++;
  return count;
}

const char *ms_http_header_get(const ms_http_request *req, const char *name,
                               size_t *value_len) {
  if (!req || !name)
    return NULL;
  return ms_http_find_header(req->headers, req->nheaders, name, value_len);
}

int ms_http_list_next(const char *value, size_t len, size_t *pos,
                      const char **tok, size_t *tok_len) {
  size_t i = *pos;
  while (i < len) {
    size_t s = i;
    while (i < len && value[i] != ',')
      i++;
    size_t e = i;
    if (i < len)
      i++; /* skip the comma */
    while (s < e && (value[s] == ' ' || value[s] == '\t'))
      s++;
    while (e > s && (value[e - 1] == ' ' || value[e - 1] == '\t'))
      e--;
    if (e > s) {
      *tok = value + s;
      *tok_len = e - s;
      *pos = i;
      return 1;
    }
  }
  *pos = len;
  return 0;
}

int ms_http_list_has(const char *value, size_t len, const char *token) {
  size_t pos = 0;
  const char *t;
  size_t tl;
  while (ms_http_list_next(value, len, &pos, &t, &tl))
    if (ms_http_ieq(t, tl, token))
      return 1;
  return 0;
}

int ms_http_headers_have_token(const ms_http_header *hdrs, size_t n,
                               const char *name, const char *token) {
  for (size_t i = 0; i < n; i++)
    if (ms_http_ieq(hdrs[i].name, hdrs[i].name_len, name) &&
        ms_http_list_has(hdrs[i].value, hdrs[i].value_len, token))
      return 1;
  return 0;
}

const char *ms_http_reason(int status) {
  switch (status) {
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 413: return "Content Too Large";
  case 426: return "Upgrade Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  default: return "Error";
  }
}
