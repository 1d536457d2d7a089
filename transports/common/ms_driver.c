/*
 * microstream: the loop-agnostic driver core for clients and hubs. See
 * ms_driver.h for the hooks contract.
 *
 * Lifetime (the rule of ms_common.h, with ms_life): every entry from the
 * loop (fd ready, timer, deferred call) enters and leaves; ms_drv_del()
 * only marks the driver deleted and closes its sockets, and the memory
 * (and the adapter's, through hooks->release) goes at the outermost
 * leave. After every call into an engine the core
 * re-checks that it is still attached before touching it again: a
 * callback may have detached it, and freed the engine, in the meantime.
 */
#include "ms_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <ares.h>

#include <microstream/ms_log.h>
#include "ms_driver.h"
#ifdef MS_HAVE_CLUSTER
#include "ms_drv_cluster.h"
#endif

/* Accept at most this many streams per readiness event, so a connection
 * storm cannot starve the connections already open. */
#define HUB_ACCEPT_BATCH 256

enum { KIND_CLIENT = 1, KIND_HUB };
enum { PHASE_NONE = 0, PHASE_RESOLVING, PHASE_CONNECTING, PHASE_OPEN };

/* c-ares sockets watched at once (it uses one or two per server). */
#define RESOLVER_FDS 8
/* While other addresses remain, one that does not answer gets this long
 * before the next is tried; the last gets CONNECT_TIMEOUT_MS. */
#define NEXT_ADDRESS_MS 2000

/* A TCP connect that has not completed by then is abandoned (the client
 * then backs off and tries again) rather than left to the kernel's
 * minutes-long retries. */
#define CONNECT_TIMEOUT_MS 10000

/* A socket as the pump sees it: read(2) on a socket returns less than
 * asked only when nothing more is buffered, so after a short read the
 * next read of the same pump would only return EAGAIN. The driver skips
 * that syscall (one read per readiness event instead of two) and clears
 * `drained` before every pump. */
typedef struct drv_sock {
  ms_transport raw; /* ms_fd_transport() */
  int drained;
} drv_sock;

static ptrdiff_t sock_read(void *self, uint8_t *buf, size_t len) {
  drv_sock *k = self;
  if (k->drained)
    return MS_ERR_WOULDBLOCK;
  ptrdiff_t n = k->raw.vt->read(k->raw.self, buf, len);
  if (n > 0 && (size_t)n < len)
    k->drained = 1;
  return n;
}
static ptrdiff_t sock_write(void *self, const uint8_t *buf, size_t len) {
  drv_sock *k = self;
  return k->raw.vt->write(k->raw.self, buf, len);
}
static int sock_get_fd(void *self) {
  drv_sock *k = self;
  return k->raw.vt->get_fd(k->raw.self);
}
static void sock_close(void *self) {
  drv_sock *k = self;
  k->raw.vt->close(k->raw.self);
}
static const ms_transport_vtable sock_vtable = {sock_read, sock_write,
                                                sock_get_fd, sock_close};

static void sock_transport(ms_fd_stream *s, drv_sock *k, int fd,
                           ms_transport *t) {
  ms_fd_transport(s, fd, &k->raw);
  k->drained = 0;
  t->vt = &sock_vtable;
  t->self = k;
}

typedef struct drv_stream {
  ms_drv_io io;
  ms_hub_conn *hc;
  ms_fd_stream s;
  drv_sock k;
  ms_transport t;
  int eof;
  struct drv_stream *prev, *next;
  /* What the pump drives: the hub connection, or a wrapper (TLS) over it
   * while its handshake is checked against hs_deadline. */
  const ms_engine_ops *ops;
  void *eng;
  const ms_stream_wrap *wrap;
  void *wrapped;
  int64_t hs_deadline;
  struct drv_stream *hs_prev, *hs_next; /* in handshake, oldest first */
} drv_stream;

/* One listening socket; io comes first (the ready callback casts). */
typedef struct drv_listener {
  ms_drv_io io;
  int port;
  const ms_stream_wrap *wrap; /* NULL: plain */
} drv_listener;

struct ms_drv {
  const ms_drv_hooks *hk;
  void *ctx;
  int kind;
  ms_life life; /* the lifetime rule of ms_common.h */
  const ms_allocator *mem; /* the engine's */
  int defer_queued; /* wakeups coalesce into one deferred flush */
  int64_t timer_at; /* what the adapter's timer is armed at */
  /* client */
  ms_client *c; /* NULL once detached */
  ms_url url;
  ms_drv_io cio;
  ms_fd_stream s;
  drv_sock k;
  ms_transport t;
  int phase;
  int64_t connect_deadline; /* PHASE_RESOLVING, PHASE_CONNECTING */
  /* Name resolution (c-ares, on the same loop) and the addresses left. */
  ares_channel ares;      /* created on the first name to resolve */
  ms_drv_io ares_io[RESOLVER_FDS];
  struct ares_addrinfo *addrs;
  struct ares_addrinfo_node *next_addr;
  int resolved;           /* the lookup's callback ran (status below) */
  int resolve_status;
  int eof; /* the stream ended or failed during this pump */
  const ms_stream_wrap *tls; /* wss:// */
  void *wrapped;             /* this connection's TLS stream */
  const ms_engine_ops *ops;  /* cl_ops, or the wrapper's */
  void *eng;
  int64_t hs_deadline;       /* TLS handshake, while not established */
  /* hub */
  ms_hub *hub; /* NULL once detached */
  drv_listener ls[MS_DRV_MAX_LISTENERS];
  size_t nls;
  int spare_fd; /* held back for when the process runs out of fds */
  drv_stream *streams;
  drv_stream *hs_head, *hs_tail; /* TLS streams still in handshake */
  size_t nstreams;
  struct ms_rcl *cl; /* the hub's cluster (Redis), or NULL */
};

/* ---- Shared plumbing ---------------------------------------------------- */

static int64_t now_of(ms_drv *d) { return d->hk->now(d->ctx); }

static void io_set(ms_drv *d, ms_drv_io *io, unsigned ev) {
  if (ev == io->watched || io->fd < 0)
    return;
  if (d->hk->io_watch(d->ctx, io, ev) == 0)
    io->watched = ev;
}

static void io_init(ms_drv_io *io, ms_drv *d, int fd,
                    void (*ready)(ms_drv_io *, unsigned)) {
  io->fd = fd;
  io->watched = 0;
  io->watcher = NULL;
  io->d = d;
  io->ready = ready;
}

/* Stop watching before the fd goes (libuv requires it). */
static void io_unwatch(ms_drv *d, ms_drv_io *io) {
  if (io->fd >= 0)
    d->hk->io_close(d->ctx, io);
  io->watcher = NULL;
  io->watched = 0;
  io->fd = -1;
}

static void timer_set(ms_drv *d, int64_t at) {
  if (at == d->timer_at)
    return;
  d->timer_at = at;
  d->hk->timer(d->ctx, at);
}

static void stream_free(drv_stream *s, int release);

static void finish(ms_drv *d) {
  while (d->streams)
    stream_free(d->streams, 0);
  if (d->wrapped)
    d->tls->vt->close(d->wrapped);
  if (d->spare_fd >= 0)
    close(d->spare_fd);
#ifdef MS_HAVE_CLUSTER
  ms_rcl_del(d->cl); /* not earlier: a cluster callback may be running */
#endif
  d->hk->release(d->ctx);
  ms_free(d->mem, d);
}

static void enter(ms_drv *d) { ms_life_enter(&d->life); }

static void leave(ms_drv *d) {
  if (ms_life_leave(&d->life))
    finish(d);
}

static void hub_drain(ms_drv *d);
static void hub_handshakes_due(ms_drv *d, int64_t now);
static void client_drive(ms_drv *d, unsigned events);
static void resolver_free(ms_drv *d);

/* Wakeups arrive from inside the engines: only schedule, never call back
 * into them. */
static void want_flush(ms_drv *d) {
  if (d->defer_queued || ms_life_dead(&d->life))
    return;
  if (d->hk->defer(d->ctx) == 0) {
    d->defer_queued = 1;
  } else if (d->kind == KIND_HUB && !ms_life_inside(&d->life)) {
    hub_drain(d); /* no way to defer: flush now */
  }
}

static void on_wakeup(void *ud) { want_flush(ud); }

/* The driver's memory comes from its engine's allocator (the one given to
 * ms_client_new / ms_hub_new). */
static ms_drv *drv_alloc(int kind, const ms_drv_hooks *hooks, void *ctx,
                         const ms_allocator *mem) {
  mem = ms_mem_or_default(mem);
  ms_drv *d = ms_calloc(mem, 1, sizeof(*d));
  if (!d)
    return NULL;
  d->mem = mem;
  d->hk = hooks;
  d->ctx = ctx;
  d->kind = kind;
  d->timer_at = MS_NO_DEADLINE;
  d->cio.fd = -1;
  for (int i = 0; i < RESOLVER_FDS; i++)
    d->ares_io[i].fd = -1;
  for (size_t i = 0; i < MS_DRV_MAX_LISTENERS; i++)
    d->ls[i].io.fd = -1;
  d->spare_fd = -1;
  d->s.fd = -1;
  return d;
}

void ms_drv_io_ready(ms_drv_io *io, unsigned events) {
  ms_drv *d = io->d;
  enter(d);
  if (!ms_life_dead(&d->life))
    io->ready(io, events); /* may free io */
  leave(d);
}

void ms_drv_timer_fired(ms_drv *d) {
  d->timer_at = MS_NO_DEADLINE; /* the adapter's timer is one-shot */
  enter(d);
  if (d->kind == KIND_CLIENT) {
    if (d->c)
      ms_client_tick(d->c, now_of(d));
    if (d->c)
      client_drive(d, 0);
  } else if (d->hub) {
#ifdef MS_HAVE_CLUSTER
    if (d->cl)
      ms_rcl_tick(d->cl, now_of(d));
#endif
    if (d->hub)
      ms_hub_tick(d->hub, now_of(d));
    if (d->hub)
      hub_handshakes_due(d, now_of(d));
    if (d->hub)
      hub_drain(d);
  }
  leave(d);
}

void ms_drv_run_deferred(ms_drv *d) {
  d->defer_queued = 0;
  enter(d);
  if (d->kind == KIND_CLIENT) {
    if (d->c)
      client_drive(d, 0);
  } else if (d->hub) {
    /* Once per loop turn: input the feed budget held back gets one more
     * share, and while some is left the next turn comes back here (the
     * adapters' defer runs after the next poll for I/O, so every other
     * connection is served in between). */
    int more = ms_hub_resume_input(d->hub, now_of(d));
    if (d->hub)
      hub_drain(d);
    if (more && d->hub)
      want_flush(d);
  }
  leave(d);
}

void ms_drv_del(ms_drv *d) {
  if (!d || ms_life_dead(&d->life))
    return;
  int free_now = ms_life_del(&d->life);
  if (d->c)
    ms_client_set_wakeup(d->c, NULL, NULL);
  if (d->hub)
    ms_hub_set_wakeup(d->hub, NULL, NULL);
  d->c = NULL;
  d->hub = NULL;
  if (d->cio.fd >= 0) {
    io_unwatch(d, &d->cio);
    d->t.vt->close(d->t.self);
    d->s.fd = -1;
  }
  resolver_free(d);
  ms_drv_hub_stop_listening(d);
#ifdef MS_HAVE_CLUSTER
  ms_rcl_detach(d->cl); /* from now on no callback reaches the hub */
#endif
  /* The hub frees its connections in ms_hub_del(); the streams are only
   * closed here (their records go with the driver, as a pump may still
   * be using one), so the hub sees no calls from a half-torn driver. */
  for (drv_stream *s = d->streams; s; s = s->next) {
    if (s->io.fd >= 0) {
      io_unwatch(d, &s->io);
      s->t.vt->close(s->t.self);
    }
  }
  timer_set(d, MS_NO_DEADLINE);
  if (free_now)
    finish(d);
}

/* ---- Client ------------------------------------------------------------- */

/* The driver calls the client through its own ops so that it stops the
 * moment the client is detached, even in the middle of a pump. */
static int cl_feed(void *e, const uint8_t *b, size_t n, int64_t now) {
  ms_drv *d = e;
  return d->c ? ms_client_feed(d->c, b, n, now) : 0;
}
static const uint8_t *cl_peek(void *e, size_t *len) {
  ms_drv *d = e;
  if (!d->c) {
    *len = 0;
    return NULL;
  }
  return ms_client_peek(d->c, len);
}
static void cl_consume(void *e, size_t n) {
  ms_drv *d = e;
  if (d->c)
    ms_client_consume(d->c, n);
}
static int cl_want_read(const void *e) {
  const ms_drv *d = e;
  return d->c && !d->eof ? ms_client_want_read(d->c) : 0;
}
static int cl_want_write(const void *e) {
  const ms_drv *d = e;
  return d->c && !d->eof ? ms_client_want_write(d->c) : 0;
}
/* Reported with ms_client_disconnected() once the pump is over and the
 * fd closed, not from inside the pump. */
static void cl_eof(void *e, int64_t now) {
  ms_drv *d = e;
  MS_UNUSED(now);
  d->eof = 1;
}
static const ms_engine_ops cl_ops = {cl_feed,       cl_peek, cl_consume,
                                     cl_want_read,  cl_want_write, cl_eof,
                                     NULL,          NULL};

static void client_close_fd(ms_drv *d) {
  if (d->cio.fd >= 0) {
    io_unwatch(d, &d->cio);
    d->t.vt->close(d->t.self);
  }
  if (d->wrapped) {
    d->tls->vt->close(d->wrapped);
    d->wrapped = NULL;
  }
  d->ops = &cl_ops;
  d->eng = d;
  d->s.fd = -1;
  d->phase = PHASE_NONE;
  d->eof = 0;
}

/* err: why, when the TLS layer knows (the client reports it). */
static void drop_stream_err(ms_drv *d, int64_t now, int err) {
  if (d->wrapped && d->c) {
    const char *why = d->tls->vt->error(d->wrapped);
    if (why) {
      ms_log(d->c, MS_LEVEL_ERROR, "%s (%s:%d)", why, d->url.host,
             d->url.port);
      if (!err)
        err = MS_ERR_TLS;
    }
  }
  client_close_fd(d);
  if (d->c)
    ms_client_disconnected_err(d->c, now, err);
}

static void drop_stream(ms_drv *d, int64_t now) { drop_stream_err(d, now, 0); }

static void client_ready(ms_drv_io *io, unsigned events) {
  client_drive(io->d, events);
}

/* ---- Name resolution and connecting (c-ares on the driver's loop) ---- */

static void resolver_ready(ms_drv_io *io, unsigned events);

/* c-ares opens, watches and closes its sockets through this. */
static void ares_sock_state(void *data, ares_socket_t fd, int readable,
                            int writable) {
  ms_drv *d = data;
  ms_drv_io *slot = NULL, *free_slot = NULL;
  for (int i = 0; i < RESOLVER_FDS; i++) {
    if (d->ares_io[i].fd == fd)
      slot = &d->ares_io[i];
    else if (d->ares_io[i].fd < 0 && !free_slot)
      free_slot = &d->ares_io[i];
  }
  if (!readable && !writable) {
    if (slot)
      io_unwatch(d, slot);
    return;
  }
  if (!slot) {
    if (!free_slot)
      return; /* more sockets than slots: its timeouts still run */
    slot = free_slot;
    io_init(slot, d, fd, resolver_ready);
  }
  io_set(d, slot,
         (readable ? MS_DRV_READ : 0u) | (writable ? MS_DRV_WRITE : 0u));
}

int ms_drv_ares_channel(struct ares_channeldata **channel,
                        void (*cb)(void *data, int fd, int readable,
                                   int writable),
                        void *data) {
  static int library_ready;
  if (!library_ready) {
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
      return MS_ERR_NOMEM;
    library_ready = 1;
  }
  struct ares_options o;
  memset(&o, 0, sizeof o);
  o.sock_state_cb = cb;
  o.sock_state_cb_data = data;
  int st = ares_init_options(channel, &o, ARES_OPT_SOCK_STATE_CB);
  if (st != ARES_SUCCESS) {
    *channel = NULL;
    return st == ARES_ENOMEM ? MS_ERR_NOMEM : MS_ERR_ADDRESS;
  }
  return 0;
}

static int resolver_init(ms_drv *d) {
  int st = ms_drv_ares_channel(&d->ares, ares_sock_state, d);
  if (st < 0)
    return st;
  const char *servers = d->c ? ms_client_dns_servers(d->c) : NULL;
  if (servers && *servers) {
    st = ares_set_servers_ports_csv(d->ares, servers);
    if (st != ARES_SUCCESS) {
      ares_destroy(d->ares);
      d->ares = NULL;
      return st == ARES_ENOMEM ? MS_ERR_NOMEM : MS_ERR_ADDRESS;
    }
  }
  return 0;
}

static void resolver_free(ms_drv *d) {
  if (d->ares) {
    ares_destroy(d->ares); /* a pending lookup ends with ARES_EDESTRUCTION */
    d->ares = NULL;
  }
  for (int i = 0; i < RESOLVER_FDS; i++)
    io_unwatch(d, &d->ares_io[i]);
  if (d->addrs) {
    ares_freeaddrinfo(d->addrs);
    d->addrs = NULL;
  }
  d->next_addr = NULL;
}

static void on_resolved(void *arg, int status, int timeouts,
                        struct ares_addrinfo *res) {
  ms_drv *d = arg;
  MS_UNUSED(timeouts);
  if (status == ARES_EDESTRUCTION) {
    if (res)
      ares_freeaddrinfo(res);
    return;
  }
  if (d->addrs)
    ares_freeaddrinfo(d->addrs);
  d->addrs = status == ARES_SUCCESS ? res : NULL;
  if (status != ARES_SUCCESS && res)
    ares_freeaddrinfo(res);
  d->next_addr = d->addrs ? d->addrs->nodes : NULL;
  d->resolved = 1;
  d->resolve_status = status;
}

/* The lookup's timers: c-ares says how long it may wait. */
static int64_t resolver_deadline(ms_drv *d, int64_t now) {
  struct timeval tv;
  if (!d->ares || !ares_timeout(d->ares, NULL, &tv))
    return MS_NO_DEADLINE;
  return now + (int64_t)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
}

static void resolver_ready(ms_drv_io *io, unsigned events) {
  ms_drv *d = io->d;
  if (!d->ares)
    return;
  ares_socket_t fd = io->fd;
  ares_process_fd(d->ares, (events & MS_DRV_READ) ? fd : ARES_SOCKET_BAD,
                  (events & MS_DRV_WRITE) ? fd : ARES_SOCKET_BAD);
  if (d->c)
    client_drive(d, 0);
}

/* A non-blocking connect to one address; -1 when it failed at once. */
static int connect_one(const struct sockaddr *sa, socklen_t len) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, sa, len) == 0 || errno == EINPROGRESS)
    return fd;
  close(fd);
  return -1;
}

/* Connect to the next address that takes a connect; 0 when one is under
 * way, -1 when none is left (the attempt failed). */
static int connect_next(ms_drv *d, int64_t now) {
  while (d->next_addr) {
    struct ares_addrinfo_node *n = d->next_addr;
    d->next_addr = n->ai_next;
    int fd = connect_one(n->ai_addr, n->ai_addrlen);
    if (fd < 0)
      continue;
    sock_transport(&d->s, &d->k, fd, &d->t);
    io_init(&d->cio, d, fd, client_ready);
    d->phase = PHASE_CONNECTING;
    d->connect_deadline =
        now + (d->next_addr ? NEXT_ADDRESS_MS : CONNECT_TIMEOUT_MS);
    return 0;
  }
  return -1;
}

/* The current address did not work: the next one, or give up. */
static void connect_failed(ms_drv *d, int64_t now) {
  if (d->cio.fd >= 0) {
    io_unwatch(d, &d->cio);
    d->t.vt->close(d->t.self);
  }
  d->s.fd = -1;
  d->phase = PHASE_NONE;
  if (connect_next(d, now) == 0)
    return;
  if (d->c)
    ms_client_disconnected(d->c, now);
}

/* An address literal becomes the only address, without a lookup. */
static int literal_address(ms_drv *d) {
  struct sockaddr_in6 a6;
  struct sockaddr_in a4;
  memset(&a6, 0, sizeof a6);
  memset(&a4, 0, sizeof a4);
  if (inet_pton(AF_INET, d->url.host, &a4.sin_addr) == 1) {
    a4.sin_family = AF_INET;
    a4.sin_port = htons((uint16_t)d->url.port);
    return connect_one((struct sockaddr *)&a4, sizeof a4);
  }
  if (inet_pton(AF_INET6, d->url.host, &a6.sin6_addr) == 1) {
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons((uint16_t)d->url.port);
    return connect_one((struct sockaddr *)&a6, sizeof a6);
  }
  return -2; /* a name */
}

static void start_connect(ms_drv *d, int64_t now) {
  ms_client_connecting(d->c, now);
  if (!d->c)
    return;
  if (d->addrs) {
    ares_freeaddrinfo(d->addrs);
    d->addrs = NULL;
  }
  d->next_addr = NULL;
  int fd = literal_address(d);
  if (fd >= 0) {
    sock_transport(&d->s, &d->k, fd, &d->t);
    io_init(&d->cio, d, fd, client_ready);
    d->phase = PHASE_CONNECTING;
    d->connect_deadline = now + CONNECT_TIMEOUT_MS;
    return;
  }
  if (fd == -1 || (!d->ares && resolver_init(d) < 0)) {
    ms_client_disconnected(d->c, now);
    return;
  }
  /* A name: look it up on the loop (never blocking it), then try every
   * address it has, IPv6 and IPv4, in the resolver's order. */
  char port[8];
  snprintf(port, sizeof port, "%d", d->url.port);
  struct ares_addrinfo_hints hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = ARES_AI_NUMERICSERV;
  d->resolved = 0;
  d->phase = PHASE_RESOLVING;
  d->connect_deadline = now + CONNECT_TIMEOUT_MS;
  ares_getaddrinfo(d->ares, d->url.host, port, &hints, on_resolved, d);
  /* The answer may be known at once (hosts file): client_drive goes on. */
}

/* A finished lookup: connect to its first address, or fail the attempt. */
static void resolved(ms_drv *d, int64_t now) {
  d->resolved = 0;
  d->phase = PHASE_NONE;
  if (d->resolve_status != ARES_SUCCESS || connect_next(d, now) < 0)
    ms_client_disconnected(d->c, now);
}

/* One step: finish a connect, pump, notice the end of the stream, open a
 * new one if the client wants it, then re-arm the watch and the timer
 * (the client's deadline may have moved). */
static void client_drive(ms_drv *d, unsigned events) {
  int64_t now = now_of(d);
  if (d->c && d->phase == PHASE_RESOLVING) {
    if (!d->resolved && d->ares && now >= resolver_deadline(d, now))
      ares_process_fd(d->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    if (d->resolved) {
      resolved(d, now);
    } else if (now >= d->connect_deadline) {
      /* The lookup takes too long: drop it, back off, try again. */
      ares_cancel(d->ares);
      d->resolved = 0;
      d->phase = PHASE_NONE;
      ms_client_disconnected(d->c, now);
    }
  }
  if (d->c && d->phase == PHASE_CONNECTING && events) {
    if (ms_tcp_connect_result(d->s.fd) < 0) {
      connect_failed(d, now); /* the next address, or give up */
    } else if (d->tls && d->tls->vt->open(d->tls->self, 0, d->url.host,
                                          &cl_ops, d, &d->wrapped) != 0) {
      d->wrapped = NULL;
      drop_stream_err(d, now, MS_ERR_TLS);
    } else {
      d->phase = PHASE_OPEN;
      if (d->wrapped) {
        d->ops = d->tls->ops;
        d->eng = d->wrapped;
        d->hs_deadline = d->tls->handshake_timeout_ms > 0
                             ? now + d->tls->handshake_timeout_ms
                             : MS_NO_DEADLINE;
      }
      ms_client_connected(d->c, now);
      events = MS_DRV_WRITE; /* the upgrade request is queued */
    }
  } else if (d->c && d->phase == PHASE_CONNECTING &&
             now >= d->connect_deadline) {
    connect_failed(d, now); /* never completed: the next address */
  }
  if (d->c && d->phase == PHASE_OPEN) {
    int mask;
    d->k.drained = 0;
    if (events & MS_DRV_READ)
      mask = ms_pump(d->ops, d->eng, &d->t, 0, now);
    else
      mask = ms_pump_write(d->ops, d->eng, &d->t, now);
    if (d->c && (d->eof || mask < 0 || (mask & MS_PUMP_DONE)))
      drop_stream(d, now);
    else if (d->c && d->wrapped && !d->tls->vt->established(d->wrapped) &&
             now >= d->hs_deadline) {
      ms_log(d->c, MS_LEVEL_ERROR, "TLS handshake with %s:%d timed out",
             d->url.host, d->url.port);
      client_close_fd(d);
      ms_client_disconnected_err(d->c, now, MS_ERR_TLS_TIMEOUT);
    }
  }
  if (d->c && d->phase == PHASE_NONE && ms_client_want_connect(d->c, now)) {
    start_connect(d, now);
    if (d->c && d->phase == PHASE_RESOLVING && d->resolved)
      resolved(d, now);
  }
  if (!d->c)
    return;

  unsigned ev = 0;
  if (d->phase == PHASE_CONNECTING) {
    ev = MS_DRV_WRITE;
  } else if (d->phase == PHASE_OPEN) {
    size_t pending = 0;
    d->ops->peek(d->eng, &pending);
    if (d->ops->want_read(d->eng))
      ev |= MS_DRV_READ;
    if (pending > 0)
      ev |= MS_DRV_WRITE;
  }
  io_set(d, &d->cio, ev);
  int64_t at = ms_client_next_deadline(d->c);
  if ((d->phase == PHASE_CONNECTING || d->phase == PHASE_RESOLVING) &&
      d->connect_deadline < at)
    at = d->connect_deadline;
  if (d->phase == PHASE_RESOLVING) {
    int64_t r = resolver_deadline(d, now);
    if (r < at)
      at = r;
  }
  if (d->phase == PHASE_OPEN && d->wrapped &&
      !d->tls->vt->established(d->wrapped) && d->hs_deadline < at)
    at = d->hs_deadline;
  timer_set(d, at);
}

static int64_t wall_clock(void *ud) {
  MS_UNUSED(ud);
  return ms_wall_us();
}

int ms_drv_client_new(ms_drv **out, ms_client *c, const char *url,
                      const ms_drv_hooks *hooks, void *ctx) {
  if (!out || !c || !url || !hooks)
    return MS_ERR_INVALID_ARG;
  ms_drv_default_random();
  ms_url u;
  int rv = ms_url_parse(url, &u);
  if (rv < 0)
    return rv;
  /* wss:// needs a TLS layer from the client's config: never plain. */
  if (u.tls && !ms_client_tls(c))
    return MS_ERR_INVALID_ARG;
  /* The URL is where we connect: the Host header and path follow it. */
  char hostport[300];
  snprintf(hostport, sizeof hostport,
           strchr(u.host, ':') ? "[%s]:%d" : "%s:%d", u.host, u.port);
  rv = ms_client_set_endpoint(c, hostport, u.path);
  if (rv < 0)
    return rv;
  ms_drv *d = drv_alloc(KIND_CLIENT, hooks, ctx, ms_client_allocator(c));
  if (!d)
    return MS_ERR_NOMEM;
  d->c = c;
  d->url = u;
  d->tls = u.tls ? ms_client_tls(c) : NULL;
  d->ops = &cl_ops;
  d->eng = d;
  /* A server list c-ares does not take is refused here, not at the first
   * lookup. */
  if (ms_client_dns_servers(c) && (rv = resolver_init(d)) < 0) {
    ms_free(d->mem, d);
    return rv == MS_ERR_NOMEM ? rv : MS_ERR_INVALID_ARG;
  }
  /* The first connect happens from the loop, once the caller holds the
   * handle. */
  rv = hooks->defer(ctx);
  if (rv < 0) {
    resolver_free(d);
    ms_free(d->mem, d);
    return rv;
  }
  d->defer_queued = 1;
  ms_client_set_wakeup(c, on_wakeup, d);
  /* Log records carry the time they were made, not when they reach the
   * hub (they may wait in the ring while the hub is away); local output
   * goes to stderr unless the application chose otherwise. */
  ms_log_set_defaults(c, ms_log_stderr_sink, NULL, wall_clock, NULL);
  *out = d;
  return 0;
}

ms_client *ms_drv_client(const ms_drv *d) { return d ? d->c : NULL; }

int ms_drv_client_flush(ms_drv *d, int64_t timeout_ms,
                        void (*run_once)(void *ctx, int64_t max_ms)) {
  if (!d || !d->c || ms_life_dead(&d->life) || !run_once || timeout_ms < 0)
    return MS_ERR_INVALID_ARG;
  enter(d);
  int64_t end = now_of(d) + timeout_ms;
  int rv, asked = 0;
  for (;;) {
    if (!d->c || ms_life_dead(&d->life)) {
      rv = MS_ERR_CLOSED;
      break;
    }
    if (ms_log_queued(d->c) == 0 && !ms_client_want_write(d->c)) {
      /* Written is not received: the hub confirms what it has read (a
       * PING behind the records). A connection that ends first fails the
       * flush: its last records may be lost (ms_log_unconfirmed_lost). */
      int st = asked ? ms_log_sync_state(d->c) : 0;
      if (asked && st == 1) {
        rv = 0;
        break;
      }
      if (asked && st == MS_ERR_CLOSED) {
        rv = MS_ERR_CLOSED;
        break;
      }
      if (!asked && ms_log_sync(d->c) == 0) {
        asked = 1;
        if (ms_log_sync_state(d->c) == 1) {
          rv = 0;
          break;
        }
      }
    }
    int64_t left = end - now_of(d);
    if (left <= 0) {
      rv = MS_ERR_TIMEOUT;
      break;
    }
    run_once(d->ctx, left < 20 ? left : 20);
  }
  leave(d);
  return rv;
}

void ms_drv_default_random(void) {
  if (!ms_random_is_set())
    ms_set_random(ms_posix_random, NULL);
}

/* ---- Hub ---------------------------------------------------------------- */

/* Engine ops over a stream, so the driver sees end of stream itself and
 * never reads a socket again after it, nor touches a detached hub. */
static int hs_feed(void *e, const uint8_t *b, size_t n, int64_t now) {
  drv_stream *s = e;
  return s->io.d->hub ? ms_hub_conn_feed(s->hc, b, n, now) : 0;
}
static const uint8_t *hs_peek(void *e, size_t *len) {
  drv_stream *s = e;
  if (!s->io.d->hub) {
    *len = 0;
    return NULL;
  }
  return ms_hub_conn_peek(s->hc, len);
}
static void hs_consume(void *e, size_t n) {
  drv_stream *s = e;
  if (s->io.d->hub)
    ms_hub_conn_consume(s->hc, n);
}
static int hs_want_read(const void *e) {
  const drv_stream *s = e;
  return s->io.d->hub && !s->eof && ms_hub_conn_want_read(s->hc);
}
static int hs_want_write(const void *e) {
  const drv_stream *s = e;
  return s->io.d->hub && ms_hub_conn_want_write(s->hc);
}
static void hs_eof(void *e, int64_t now) {
  drv_stream *s = e;
  if (s->eof || !s->io.d->hub)
    return;
  s->eof = 1;
  ms_hub_conn_eof(s->hc, now);
}
static const ms_engine_ops hs_ops = {hs_feed,       hs_peek, hs_consume,
                                     hs_want_read,  hs_want_write, hs_eof,
                                     NULL,          NULL};

static void hs_unlink(ms_drv *d, drv_stream *s) {
  if (!s->hs_deadline)
    return;
  if (s->hs_prev)
    s->hs_prev->hs_next = s->hs_next;
  else
    d->hs_head = s->hs_next;
  if (s->hs_next)
    s->hs_next->hs_prev = s->hs_prev;
  else
    d->hs_tail = s->hs_prev;
  s->hs_prev = s->hs_next = NULL;
  s->hs_deadline = 0;
}

static void stream_free(drv_stream *s, int release) {
  ms_drv *d = s->io.d;
  if (s->io.fd >= 0) {
    io_unwatch(d, &s->io);
    s->t.vt->close(s->t.self);
  }
  hs_unlink(d, s);
  if (s->wrapped)
    s->wrap->vt->close(s->wrapped);
  if (s->prev)
    s->prev->next = s->next;
  else
    d->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  d->nstreams--;
  if (release)
    ms_hub_conn_release(s->hc);
  ms_free(d->mem, s);
}

/* Close a finished stream, or watch what it waits for: reading only while
 * the hub takes input (backpressure), writing only while a write would
 * have blocked. */
static void stream_update(drv_stream *s) {
  if (!s->io.d->hub)
    return; /* detached: the stream goes with the driver */
  int r = s->ops->want_read(s->eng);
  int w = s->ops->want_write(s->eng);
  if (!r && !w) {
    const char *why = s->wrapped ? s->wrap->vt->error(s->wrapped) : NULL;
    if (why)
      ms_hub_conn_stream_failed(s->hc, why);
    stream_free(s, 1);
    return;
  }
  if (s->hs_deadline && s->wrap->vt->established(s->wrapped))
    hs_unlink(s->io.d, s);
  size_t pending = 0;
  s->ops->peek(s->eng, &pending);
  io_set(s->io.d, &s->io,
         (r ? MS_DRV_READ : 0u) | (pending ? MS_DRV_WRITE : 0u));
}

static int64_t hub_deadline(ms_drv *d) {
  int64_t at = ms_hub_next_deadline(d->hub);
#ifdef MS_HAVE_CLUSTER
  if (d->cl) {
    int64_t c = ms_rcl_next_deadline(d->cl);
    if (c < at)
      at = c;
  }
#endif
  return at;
}

/* The hub's next deadline, or the oldest TLS handshake's if earlier. */
static void hub_timer(ms_drv *d) {
  if (!d->hub)
    return;
  int64_t at = hub_deadline(d);
  if (d->hs_head && d->hs_head->hs_deadline < at)
    at = d->hs_head->hs_deadline;
  timer_set(d, at);
}

/* Streams whose TLS handshake is overdue are closed (oldest first: they
 * all got the same time). */
static void hub_handshakes_due(ms_drv *d, int64_t now) {
  while (d->hub && d->hs_head && d->hs_head->hs_deadline <= now) {
    drv_stream *s = d->hs_head;
    hs_unlink(d, s);
    if (!s->wrap->vt->established(s->wrapped)) {
      char why[80];
      snprintf(why, sizeof why, "TLS handshake not complete after %lld ms",
               (long long)s->wrap->handshake_timeout_ms);
      ms_hub_conn_stream_failed(s->hc, why);
      stream_free(s, 1);
    }
  }
}

static void hub_drain(ms_drv *d) {
  ms_hub_conn *hc;
#ifdef MS_HAVE_CLUSTER
  /* What this iteration made for other hubs leaves in one batch. */
  if (d->cl && d->hub)
    ms_rcl_flush(d->cl);
#endif
  while (d->hub && (hc = ms_hub_next_dirty(d->hub)) != NULL) {
    drv_stream *s = ms_hub_conn_transport_data(hc);
    if (!s)
      continue;
    ms_pump_write(s->ops, s->eng, &s->t, now_of(d));
    stream_update(s);
  }
  hub_timer(d);
}

static void stream_ready(ms_drv_io *io, unsigned events) {
  drv_stream *s = (drv_stream *)io;
  ms_drv *d = io->d;
  int64_t now = now_of(d);
  s->k.drained = 0;
  if (events & MS_DRV_READ)
    ms_pump(s->ops, s->eng, &s->t, MS_HUB_FEED_BYTES, now);
  else
    ms_pump_write(s->ops, s->eng, &s->t, now);
  stream_update(s); /* may free s */
  /* Routing put output on other connections: flush them all at the end
   * of this iteration, once per connection. */
  want_flush(d);
}

/* The address of an accepted stream as text ("" if not IP). */
static void peer_name(const struct sockaddr_storage *sa, char *out,
                      size_t cap) {
  out[0] = '\0';
  if (sa->ss_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out,
              (socklen_t)cap);
  else if (sa->ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out,
              (socklen_t)cap);
}

static void listen_ready(ms_drv_io *io, unsigned events) {
  ms_drv *d = io->d;
  drv_listener *l = (drv_listener *)io;
  MS_UNUSED(events);
  for (int i = 0; i < HUB_ACCEPT_BATCH && d->hub && l->io.fd >= 0; i++) {
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    int cfd = accept4(l->io.fd, (struct sockaddr *)&sa, &salen,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if ((errno == EMFILE || errno == ENFILE) && d->spare_fd >= 0) {
        /* Out of fds: the listener would stay readable and the loop would
         * spin. Use the spare fd to take the connection off the queue and
         * refuse it, then hold a spare again. */
        close(d->spare_fd);
        d->spare_fd = -1;
        int x = accept4(l->io.fd, NULL, NULL, SOCK_CLOEXEC);
        if (x >= 0)
          close(x);
        d->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        continue;
      }
      break; /* EAGAIN (or no spare): try again next time */
    }
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    drv_stream *s = ms_calloc(d->mem, 1, sizeof(*s));
    if (!s) {
      close(cfd);
      continue;
    }
    sock_transport(&s->s, &s->k, cfd, &s->t);
    io_init(&s->io, d, cfd, stream_ready);
    char peer[INET6_ADDRSTRLEN];
    peer_name(&sa, peer, sizeof peer);
    int arv = ms_hub_accept_peer(d->hub, &s->hc, s, peer[0] ? peer : NULL,
                                 l->wrap != NULL, now_of(d));
    if (arv < 0) {
      if (arv == MS_ERR_LIMIT) {
        /* Refused (a flood, most likely): a reset leaves no TIME_WAIT
         * behind on our side. */
        struct linger lg = {1, 0};
        setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      }
      close(cfd); /* MS_ERR_LIMIT or out of memory */
      ms_free(d->mem, s);
      continue;
    }
    s->ops = &hs_ops;
    s->eng = s;
    if (l->wrap) {
      if (l->wrap->vt->open(l->wrap->self, 1, NULL, &hs_ops, s,
                            &s->wrapped) != 0) {
        close(cfd);
        ms_hub_conn_release(s->hc);
        ms_free(d->mem, s);
        continue;
      }
      s->wrap = l->wrap;
      s->ops = l->wrap->ops;
      s->eng = s->wrapped;
      if (l->wrap->handshake_timeout_ms > 0) {
        s->hs_deadline = now_of(d) + l->wrap->handshake_timeout_ms;
        s->hs_prev = d->hs_tail;
        if (d->hs_tail)
          d->hs_tail->hs_next = s;
        else
          d->hs_head = s;
        d->hs_tail = s;
      }
    }
    s->next = d->streams;
    if (d->streams)
      d->streams->prev = s;
    d->streams = s;
    d->nstreams++;
    io_set(d, &s->io, MS_DRV_READ);
  }
  want_flush(d);
}

int ms_drv_hub_listen(ms_drv *d, const char *host, int port,
                      const ms_stream_wrap *tls, int *bound) {
  if (!d || d->kind != KIND_HUB || !d->hub)
    return MS_ERR_INVALID_ARG;
  if (d->nls >= MS_DRV_MAX_LISTENERS)
    return MS_ERR_LIMIT;
  drv_listener *l = &d->ls[d->nls];
  int fd = -1;
  int rv = ms_tcp_listen(host, port, &fd, &l->port);
  if (rv < 0)
    return rv;
  io_init(&l->io, d, fd, listen_ready);
  l->wrap = tls;
  rv = d->hk->io_watch(d->ctx, &l->io, MS_DRV_READ);
  if (rv < 0) {
    d->hk->io_close(d->ctx, &l->io);
    close(fd);
    l->io.fd = -1;
    return rv;
  }
  l->io.watched = MS_DRV_READ;
  d->nls++;
  if (bound)
    *bound = l->port;
  return 0;
}

int ms_drv_hub_new(ms_drv **out, ms_hub *h, const char *host, int port,
                   const ms_drv_hooks *hooks, void *ctx) {
  if (!out || !h || !hooks)
    return MS_ERR_INVALID_ARG;
  ms_drv_default_random();
  ms_drv *d = drv_alloc(KIND_HUB, hooks, ctx, ms_hub_allocator(h));
  if (!d)
    return MS_ERR_NOMEM;
  d->hub = h;
  int rv = host ? ms_drv_hub_listen(d, host, port, NULL, NULL) : 0;
  if (rv < 0) {
    ms_free(d->mem, d);
    return rv;
  }
  d->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ms_hub_set_wallclock(h, wall_clock, d);
  hub_timer(d);
  ms_hub_set_wakeup(h, on_wakeup, d);
  *out = d;
  return 0;
}

int ms_drv_hub_port(const ms_drv *d) {
  return d && d->nls ? d->ls[0].port : -1;
}

void ms_drv_hub_stop_listening(ms_drv *d) {
  if (!d)
    return;
  for (size_t i = 0; i < d->nls; i++) {
    int fd = d->ls[i].io.fd;
    if (fd < 0)
      continue;
    io_unwatch(d, &d->ls[i].io);
    close(fd);
  }
}

size_t ms_drv_hub_streams(const ms_drv *d) { return d ? d->nstreams : 0; }

/* ---- Cluster ------------------------------------------------------------ */

void ms_cluster_config_init(ms_cluster_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->prefix = "microstream";
  cfg->lease_ms = 3000;
  cfg->stream_max = 10000;
}

#ifdef MS_HAVE_CLUSTER
int ms_cluster_available(void) { return 1; }

void ms_drv_watch(ms_drv *d, ms_drv_io *io, unsigned events) {
  io_set(d, io, events);
}
void ms_drv_unwatch(ms_drv *d, ms_drv_io *io) { io_unwatch(d, io); }
void ms_drv_io_setup(ms_drv_io *io, ms_drv *d, int fd,
                     void (*ready)(ms_drv_io *, unsigned)) {
  io_init(io, d, fd, ready);
}
int64_t ms_drv_now(ms_drv *d) { return now_of(d); }
void ms_drv_want_flush(ms_drv *d) { want_flush(d); }

int ms_drv_hub_cluster(ms_drv *d, const ms_cluster_config *cfg) {
  if (!d || d->kind != KIND_HUB || !d->hub || d->cl)
    return MS_ERR_STATE;
  int rv = ms_rcl_new(&d->cl, d, d->hub, cfg);
  if (rv == 0)
    hub_timer(d);
  return rv;
}

void ms_drv_hub_cluster_leave(ms_drv *d) {
  if (d && d->cl)
    ms_rcl_leave(d->cl);
  if (d)
    want_flush(d);
}

size_t ms_drv_hub_cluster_pending(const ms_drv *d) {
  return d && d->cl ? ms_rcl_pending(d->cl) : 0;
}

int ms_drv_hub_cluster_stats(const ms_drv *d, ms_cluster_stats *st) {
  if (!d || !d->cl)
    return MS_ERR_STATE;
  ms_rcl_stats(d->cl, st);
  return 0;
}
#else
int ms_cluster_available(void) { return 0; }
int ms_drv_hub_cluster(ms_drv *d, const ms_cluster_config *cfg) {
  MS_UNUSED(d);
  MS_UNUSED(cfg);
  return MS_ERR_STATE;
}
void ms_drv_hub_cluster_leave(ms_drv *d) { MS_UNUSED(d); }
size_t ms_drv_hub_cluster_pending(const ms_drv *d) {
  MS_UNUSED(d);
  return 0;
}
int ms_drv_hub_cluster_stats(const ms_drv *d, ms_cluster_stats *st) {
  MS_UNUSED(d);
  MS_UNUSED(st);
  return MS_ERR_STATE;
}
#endif
