/*
 * microstream: URLs and non-blocking TCP sockets, and the fd transport.
 */
#include "ms_internal.h"

#include <microstream/ms_posix.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int ms_url_parse(const char *url, ms_url *out) {
  if (!url || !out)
    return MS_ERR_INVALID_ARG;
  memset(out, 0, sizeof(*out));
  const char *p = url;
  if (strncmp(p, "ws://", 5) == 0) {
    p += 5;
  } else if (strncmp(p, "wss://", 6) == 0) {
    p += 6;
    out->tls = 1;
  } else if (strstr(p, "://")) {
    return MS_ERR_INVALID_ARG; /* another scheme */
  }

  const char *host, *host_end, *after;
  if (*p == '[') {
    host = p + 1;
    host_end = strchr(host, ']');
    if (!host_end)
      return MS_ERR_INVALID_ARG;
    after = host_end + 1;
  } else {
    host = p;
    host_end = p + strcspn(p, ":/?");
    after = host_end;
  }
  size_t hlen = (size_t)(host_end - host);
  if (hlen == 0 || hlen >= sizeof(out->host))
    return MS_ERR_INVALID_ARG;
  memcpy(out->host, host, hlen);
  out->host[hlen] = '\0';

  out->port = out->tls ? 443 : 80;
  if (*after == ':') {
    const char *ps = after + 1;
    char *end;
    if (*ps < '0' || *ps > '9')
      return MS_ERR_INVALID_ARG;
    errno = 0;
    long port = strtol(ps, &end, 10);
    if (errno || port < 0 || port > 65535 || (*end && *end != '/' && *end != '?'))
      return MS_ERR_INVALID_ARG;
    out->port = (int)port;
    after = end;
  } else if (*after && *after != '/' && *after != '?') {
    return MS_ERR_INVALID_ARG;
  }

  if (*after == '\0') {
    strcpy(out->path, "/ws");
  } else {
    size_t plen = strlen(after);
    if (plen + 1 >= sizeof(out->path))
      return MS_ERR_INVALID_ARG;
    if (*after == '?') {
      /* a query without a path: the path is "/" */
      out->path[0] = '/';
      memcpy(out->path + 1, after, plen + 1);
    } else {
      memcpy(out->path, after, plen + 1);
    }
  }
  return 0;
}

/* getaddrinfo for an address literal first (AI_NUMERICHOST: never a
 * lookup, never blocking); only a name goes to the system resolver, which
 * may block. */
static int lookup(const char *host, const char *service, int flags,
                  struct addrinfo **res) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags | AI_NUMERICSERV | AI_NUMERICHOST;
  *res = NULL;
  int gai = getaddrinfo(host, service, &hints, res);
  if (gai == EAI_NONAME && host) {
    hints.ai_flags &= ~AI_NUMERICHOST;
    gai = getaddrinfo(host, service, &hints, res);
  }
  return gai == 0 && *res ? 0 : MS_ERR_ADDRESS;
}

int ms_tcp_connect(const char *host, int port, int *fd_out) {
  if (!host || !fd_out || port <= 0 || port > 65535)
    return MS_ERR_INVALID_ARG;
  char service[16];
  snprintf(service, sizeof(service), "%d", port);
  struct addrinfo *res = NULL;
  if (lookup(host, service, AI_ADDRCONFIG, &res) != 0)
    return MS_ERR_ADDRESS;

  int rv = MS_ERR_IO;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
      continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
      *fd_out = fd;
      rv = 0;
      break;
    }
    close(fd);
  }
  freeaddrinfo(res);
  return rv;
}

int ms_tcp_connect_result(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
    return MS_ERR_IO;
  return 0;
}

int ms_tcp_listen(const char *host, int port, int *fd_out, int *bound_port) {
  if (!fd_out || port < 0 || port > 65535)
    return MS_ERR_INVALID_ARG;
  char service[16];
  snprintf(service, sizeof(service), "%d", port);
  struct addrinfo *res = NULL;
  if (host && (*host == '\0' || strcmp(host, "*") == 0))
    host = NULL;
  if (lookup(host, service, AI_PASSIVE, &res) != 0)
    return MS_ERR_ADDRESS;

  int rv = MS_ERR_IO;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
      continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
      rv = errno == EADDRINUSE || errno == EADDRNOTAVAIL ? MS_ERR_ADDRESS
                                                         : MS_ERR_IO;
      close(fd);
      continue;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (bound_port) {
      *bound_port = port;
      if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
          *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
          *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
      }
    }
    *fd_out = fd;
    rv = 0;
    break;
  }
  freeaddrinfo(res);
  return rv;
}

/* ---- fd transport ---------------------------------------------------------- */

static ptrdiff_t fd_read(void *self, uint8_t *buf, size_t len) {
  ms_fd_stream *s = self;
  for (;;) {
    ssize_t n = read(s->fd, buf, len);
    if (n >= 0)
      return (ptrdiff_t)n;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return MS_ERR_WOULDBLOCK;
    return MS_ERR_IO;
  }
}

static ptrdiff_t fd_write(void *self, const uint8_t *buf, size_t len) {
  ms_fd_stream *s = self;
  for (;;) {
    /* send() with MSG_NOSIGNAL: a peer that went away must not kill the
     * process with SIGPIPE. Fall back to write() for non-sockets. */
    ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK)
      n = write(s->fd, buf, len);
    if (n >= 0)
      return (ptrdiff_t)n;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return MS_ERR_WOULDBLOCK;
    return MS_ERR_IO;
  }
}

static int fd_get_fd(void *self) { return ((ms_fd_stream *)self)->fd; }

static void fd_close(void *self) {
  ms_fd_stream *s = self;
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
}

static const ms_transport_vtable fd_vtable = {fd_read, fd_write, fd_get_fd,
                                              fd_close};

void ms_fd_transport(ms_fd_stream *s, int fd, ms_transport *t) {
  s->fd = fd;
  t->vt = &fd_vtable;
  t->self = s;
}
