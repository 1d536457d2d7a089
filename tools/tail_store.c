/* ms-tail's history from the hub's log store (see tail_store.h). A plain
 * blocking HTTP/1.1 GET, before the program's loop starts; the answer may
 * come with a length or chunked. */
#include "tail_store.h"

#include <errno.h>
#include <jansson.h>
#include <microstream/ms_hub.h> /* ms_buf */
#include <strings.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 10000
#define MAX_ANSWER (256u << 20)
#define PAGE_MAX 10000

static int sb_query_escaped(ms_buf *b, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
                c == '~' || c == ':';
    if (plain ? ms_buf_append(b, s, 1) : ms_buf_appendf(b, "%%%02X", c))
      return -1;
  }
  return 0;
}

static int wait_fd(int fd, short ev) {
  struct pollfd p = {fd, ev, 0};
  int r;
  do
    r = poll(&p, 1, IO_TIMEOUT_MS);
  while (r < 0 && errno == EINTR);
  return r == 1 ? 0 : -1;
}

static int dial(const ms_url *u) {
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char port[16];
  snprintf(port, sizeof port, "%d", u->port);
  if (getaddrinfo(u->host, port, &hints, &ai) != 0)
    return -1;
  int fd = -1;
  for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
      continue;
    int err = 0;
    socklen_t el = sizeof err;
    if ((connect(fd, a->ai_addr, a->ai_addrlen) != 0 &&
         (errno != EINPROGRESS || wait_fd(fd, POLLOUT) != 0 ||
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err))) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(ai);
  return fd;
}

/* The whole answer (the hub closes after it: Connection: close). */
static int exchange(const ms_url *u, const char *req, size_t len, ms_buf *out) {
  int fd = dial(u);
  if (fd < 0)
    return TAIL_STORE_UNREACHABLE;
  size_t off = 0;
  while (off < len) {
    ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
    } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLOUT) != 0)
        break;
    } else {
      break;
    }
  }
  int rv = off == len ? TAIL_STORE_OK : TAIL_STORE_UNREACHABLE;
  char buf[16384];
  while (rv == TAIL_STORE_OK) {
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r > 0) {
      if (out->len + (size_t)r > MAX_ANSWER ||
          ms_buf_append(out, buf, (size_t)r))
        rv = TAIL_STORE_BAD;
    } else if (r == 0) {
      break;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (wait_fd(fd, POLLIN) != 0)
        rv = TAIL_STORE_BAD;
    } else {
      rv = TAIL_STORE_BAD;
    }
  }
  close(fd);
  return rv;
}

/* Undo chunked transfer coding in place; -1 if malformed. */
static int dechunk(char *body, size_t n, size_t *out_n) {
  size_t r = 0, w = 0;
  for (;;) {
    char *end;
    if (r >= n)
      return -1;
    unsigned long sz = strtoul(body + r, &end, 16);
    char *nl = memchr(body + r, '\n', n - r);
    if (!nl || end == body + r)
      return -1;
    r = (size_t)(nl - body) + 1;
    if (sz == 0)
      break;
    if (sz > n - r)
      return -1;
    memmove(body + w, body + r, sz);
    w += sz;
    r += sz;
    if (r < n && body[r] == '\r')
      r++;
    if (r < n && body[r] == '\n')
      r++;
  }
  *out_n = w;
  return 0;
}

static int get_json(const ms_url *u, const char *target, const char *token,
                    json_t **out, char *why, size_t why_size) {
  ms_buf req = {0}, ans = {0};
  int rv = ms_buf_appendf(&req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n", target,
                     u->host, u->port);
  if (rv == 0 && token)
    rv = ms_buf_appendf(&req, "Authorization: Bearer %s\r\n", token);
  if (rv == 0)
    rv = ms_buf_appendf(&req, "Accept: application/json\r\n"
                              "Connection: close\r\n\r\n");
  if (rv != 0) {
    ms_buf_free(&req);
    snprintf(why, why_size, "out of memory");
    return TAIL_STORE_BAD;
  }
  rv = exchange(u, req.data, req.len, &ans);
  ms_buf_free(&req);
  if (rv != TAIL_STORE_OK) {
    snprintf(why, why_size, rv == TAIL_STORE_UNREACHABLE
                                ? "cannot reach the hub"
                                : "no complete answer from the hub");
    ms_buf_free(&ans);
    return rv;
  }
  int status = 0;
  char *head_end = ans.data ? strstr(ans.data, "\r\n\r\n") : NULL;
  if (!head_end || sscanf(ans.data, "HTTP/1.%*d %d", &status) != 1) {
    snprintf(why, why_size, "not an HTTP answer");
    ms_buf_free(&ans);
    return TAIL_STORE_BAD;
  }
  *head_end = 0;
  char *body = head_end + 4;
  size_t blen = ans.len - (size_t)(body - ans.data);
  int chunked = 0;
  for (char *h = strstr(ans.data, "\r\n"); h; h = strstr(h + 2, "\r\n"))
    if (!strncasecmp(h + 2, "transfer-encoding:", 18) &&
        strstr(h + 20, "chunked"))
      chunked = 1;
  if (chunked && dechunk(body, blen, &blen) != 0) {
    snprintf(why, why_size, "a broken chunked answer");
    ms_buf_free(&ans);
    return TAIL_STORE_BAD;
  }
  json_error_t je;
  json_t *j = json_loadb(body, blen, 0, &je);
  if (status != 200) {
    json_t *e = j ? json_object_get(j, "error") : NULL;
    snprintf(why, why_size, "the hub answered %d%s%s", status, e ? ": " : "",
             e && json_is_string(e) ? json_string_value(e) : "");
    json_decref(j);
    ms_buf_free(&ans);
    return status == 400 ? TAIL_STORE_BAD : TAIL_STORE_NONE;
  }
  ms_buf_free(&ans);
  if (!j || !json_is_array(json_object_get(j, "records"))) {
    snprintf(why, why_size, "an answer without records");
    json_decref(j);
    return TAIL_STORE_BAD;
  }
  json_t *err = json_object_get(j, "error");
  if (err && json_is_string(err)) {
    snprintf(why, why_size, "the store failed midway: %s",
             json_string_value(err));
    json_decref(j);
    return TAIL_STORE_BAD;
  }
  *out = j;
  return TAIL_STORE_OK;
}

static int build_target(ms_buf *t, const tail_query *q, uint64_t limit,
                        long long before) {
  int rv = ms_buf_appendf(t, "/api/logs?limit=%llu", (unsigned long long)limit);
  for (size_t i = 0; rv == 0 && i < q->n_services; i++) {
    rv = ms_buf_appendf(t, "&service=");
    if (rv == 0)
      rv = sb_query_escaped(t, q->services[i]);
  }
  if (rv == 0 && q->min_level > 0)
    rv = ms_buf_appendf(t, "&min_level=%lld", (long long)q->min_level);
  if (rv == 0 && q->contains && *q->contains) {
    rv = ms_buf_appendf(t, "&contains=");
    if (rv == 0)
      rv = sb_query_escaped(t, q->contains);
  }
  if (rv == 0 && q->since) {
    rv = ms_buf_appendf(t, "&since=");
    if (rv == 0)
      rv = sb_query_escaped(t, q->since);
  }
  if (rv == 0 && q->until) {
    rv = ms_buf_appendf(t, "&until=");
    if (rv == 0)
      rv = sb_query_escaped(t, q->until);
  }
  if (rv == 0 && before > 0)
    rv = ms_buf_appendf(t, "&before=%lld", before);
  return rv;
}

static void hand_over(json_t *rec, void (*fn)(const ms_record *, void *),
                      void *ud) {
  ms_record r;
  memset(&r, 0, sizeof r);
  r.seq = (uint64_t)json_integer_value(json_object_get(rec, "seq"));
  r.ts_us = (int64_t)json_integer_value(json_object_get(rec, "ts_us"));
  r.level = (int64_t)json_integer_value(json_object_get(rec, "level"));
  json_t *hub = json_object_get(rec, "hub_id");
  r.hub_id = json_is_string(hub) ? json_string_value(hub) : "";
  json_t *s = json_object_get(rec, "service");
  json_t *m = json_object_get(rec, "message");
  r.service.ptr = json_is_string(s) ? json_string_value(s) : "";
  r.service.len = json_is_string(s) ? json_string_length(s) : 0;
  r.message.ptr = json_is_string(m) ? json_string_value(m) : "";
  r.message.len = json_is_string(m) ? json_string_length(m) : 0;
  json_t *fields = json_object_get(rec, "fields");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_zone z;
  msgpack_zone_init(&z, 1024);
  msgpack_object fo;
  fo.type = MSGPACK_OBJECT_MAP;
  fo.via.map.size = 0;
  fo.via.map.ptr = NULL;
  char *fjs = fields ? json_dumps(fields, JSON_COMPACT | JSON_ENCODE_ANY)
                     : NULL;
  size_t off = 0;
  if (fjs && ms_json_to_msgpack(fjs, strlen(fjs), &sb, NULL, 0) == 0 &&
      msgpack_unpack(sb.data, sb.size, &off, &z, &fo) !=
          MSGPACK_UNPACK_SUCCESS) {
    fo.type = MSGPACK_OBJECT_MAP;
    fo.via.map.size = 0;
  }
  free(fjs);
  r.fields = &fo;
  r.kind = MS_RECORD_LOG;
  if (r.level == 0) { /* a gap the store marked */
    r.kind = MS_RECORD_GAP;
    json_t *missed = fields ? json_object_get(fields, "missed") : NULL;
    r.missed = missed ? (uint64_t)json_integer_value(missed) : 0;
  }
  fn(&r, ud);
  msgpack_zone_destroy(&z);
  msgpack_sbuffer_destroy(&sb);
}

int tail_store_fetch(const ms_url *hub, const tail_query *q,
                     void (*fn)(const ms_record *r, void *ud), void *ud,
                     char *why, size_t why_size) {
  /* Newest pages first (the store answers at most PAGE_MAX at once),
   * walking back with the `next` cursor where the hub gives one; then
   * handed over oldest first. */
  json_t *pages[64];
  size_t npages = 0;
  uint64_t want = q->limit, got = 0;
  long long before = 0;
  int rv = TAIL_STORE_OK;
  while (got < want && npages < 64) {
    uint64_t lim = want - got > PAGE_MAX ? PAGE_MAX : want - got;
    ms_buf target = {0};
    if (build_target(&target, q, lim, before) != 0) {
      ms_buf_free(&target);
      snprintf(why, why_size, "out of memory");
      rv = TAIL_STORE_BAD;
      break;
    }
    json_t *j = NULL;
    rv = get_json(hub, target.data, q->token, &j, why, why_size);
    ms_buf_free(&target);
    if (rv != TAIL_STORE_OK)
      break;
    pages[npages++] = j;
    size_t n = json_array_size(json_object_get(j, "records"));
    got += n;
    json_t *next = json_object_get(j, "next");
    json_t *nb = json_is_object(next) ? json_object_get(next, "before") : NULL;
    if (n == 0 || n < lim || !json_is_integer(nb))
      break;
    before = (long long)json_integer_value(nb);
  }
  for (size_t p = npages; rv == TAIL_STORE_OK && p-- > 0;) {
    json_t *recs = json_object_get(pages[p], "records");
    for (size_t i = 0; i < json_array_size(recs); i++)
      hand_over(json_array_get(recs, i), fn, ud);
  }
  for (size_t p = 0; p < npages; p++)
    json_decref(pages[p]);
  return rv;
}
