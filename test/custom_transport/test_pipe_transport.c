/* A transport written outside the library from the public vtable alone:
 * each client talks to an in-process hub through two pipe(2) pairs, and a
 * small poll(2) loop drives every engine with ms_pump(). Only the public
 * headers and the shared library's exported symbols are used. Checks
 * registration, a request/response between two services, an error from
 * the hub, and a clean close seen by the hub as end of stream. */
#include "ms_test.h"

#include <microstream/microstream.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

/* ---- The transport: read one pipe, write the other ---------------------- */

typedef struct pipe_stream {
  int rfd; /* bytes from the peer */
  int wfd; /* bytes to the peer */
} pipe_stream;

static ptrdiff_t pipe_read(void *self, uint8_t *buf, size_t len) {
  pipe_stream *ps = self;
  ssize_t n = read(ps->rfd, buf, len);
  if (n >= 0)
    return (ptrdiff_t)n; /* 0: the writer closed its end */
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return MS_ERR_WOULDBLOCK;
  return MS_ERR_IO;
}

static ptrdiff_t pipe_write(void *self, const uint8_t *buf, size_t len) {
  pipe_stream *ps = self;
  ssize_t n = write(ps->wfd, buf, len);
  if (n >= 0)
    return (ptrdiff_t)n;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return MS_ERR_WOULDBLOCK;
  return MS_ERR_IO; /* EPIPE: the reader is gone */
}

static int pipe_get_fd(void *self) { return ((pipe_stream *)self)->rfd; }

static void pipe_close(void *self) {
  pipe_stream *ps = self;
  close(ps->rfd);
  close(ps->wfd);
  ps->rfd = ps->wfd = -1;
}

static const ms_transport_vtable pipe_vtable = {pipe_read, pipe_write,
                                                pipe_get_fd, pipe_close};

static int nonblocking_pipe(int fds[2]) {
  if (pipe(fds) != 0)
    return -1;
  for (int i = 0; i < 2; i++)
    if (fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) != 0)
      return -1;
  return 0;
}

/* Two pipe pairs make one duplex stream: a client end and a hub end. */
static int stream_pair(pipe_stream *client_end, pipe_stream *hub_end) {
  int up[2], down[2]; /* up: client to hub; down: hub to client */
  if (nonblocking_pipe(up) != 0 || nonblocking_pipe(down) != 0)
    return -1;
  client_end->rfd = down[0];
  client_end->wfd = up[1];
  hub_end->rfd = up[0];
  hub_end->wfd = down[1];
  return 0;
}

/* ---- A poll(2) loop over a hub and its clients -------------------------- */

typedef struct pipe_link {
  ms_client *c;
  pipe_stream cs, hs; /* client end, hub end */
  ms_transport ct, ht;
  ms_hub_conn *hc;
  int open;          /* the streams exist */
  int client_done;   /* the client side closed its end */
} pipe_link;

typedef struct world {
  ms_hub *hub;
  pipe_link l[2];
  int n;
} world;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void link_connect(world *w, pipe_link *k, int64_t now) {
  ms_client_connecting(k->c, now);
  if (stream_pair(&k->cs, &k->hs) != 0 ||
      ms_hub_accept(w->hub, &k->hc, k, now) != 0) {
    ms_client_disconnected(k->c, now);
    return;
  }
  k->ct.vt = &pipe_vtable;
  k->ct.self = &k->cs;
  k->ht.vt = &pipe_vtable;
  k->ht.self = &k->hs;
  k->open = 1;
  k->client_done = 0;
  ms_client_connected(k->c, now);
}

/* One pass: connect who wants to, pump both ends of every stream, run
 * timers, flush the hub's dirty connections, end finished streams. */
static void pump_all(world *w, int64_t now) {
  for (int i = 0; i < w->n; i++) {
    pipe_link *k = &w->l[i];
    if (!k->open) {
      if (ms_client_want_connect(k->c, now))
        link_connect(w, k, now);
      continue;
    }
    if (!k->client_done) {
      int m = ms_pump(&ms_client_engine_ops, k->c, &k->ct, 0, now);
      if (m == MS_PUMP_DONE || m < 0) {
        /* The client is finished with this stream: close our end so the
         * hub reads end of stream. */
        k->ct.vt->close(k->ct.self);
        k->client_done = 1;
        ms_client_disconnected(k->c, now);
      }
    }
    int m = ms_pump(&ms_hub_conn_engine_ops, k->hc, &k->ht, 0, now);
    if (m == MS_PUMP_DONE || m < 0) {
      k->ht.vt->close(k->ht.self);
      ms_hub_conn_release(k->hc);
      k->hc = NULL;
      if (!k->client_done) {
        k->ct.vt->close(k->ct.self);
        ms_client_disconnected(k->c, now);
      }
      k->open = 0;
    }
  }
  ms_client_tick(w->l[0].c, now);
  if (w->n > 1)
    ms_client_tick(w->l[1].c, now);
  ms_hub_tick(w->hub, now);
  ms_hub_conn *hc;
  while ((hc = ms_hub_next_dirty(w->hub)) != NULL) {
    pipe_link *k = ms_hub_conn_transport_data(hc);
    ms_pump_write(&ms_hub_conn_engine_ops, hc, &k->ht, now);
  }
}

/* Wait (poll) and pump until done(w) or the time is up. */
static int run_until(world *w, int (*done)(world *w, void *arg), void *arg,
                     int64_t timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  for (;;) {
    int64_t now = now_ms();
    pump_all(w, now);
    if (done(w, arg))
      return 1;
    if (now >= end)
      return 0;
    struct pollfd pf[4];
    int np = 0;
    int64_t next = ms_hub_next_deadline(w->hub);
    for (int i = 0; i < w->n; i++) {
      pipe_link *k = &w->l[i];
      int64_t d = ms_client_next_deadline(k->c);
      if (d < next)
        next = d;
      if (!k->open)
        continue;
      if (!k->client_done) {
        pf[np].fd = k->ct.vt->get_fd(k->ct.self);
        pf[np].events = POLLIN;
        np++;
      }
      pf[np].fd = k->ht.vt->get_fd(k->ht.self);
      pf[np].events = POLLIN;
      np++;
      /* Pipes hold 64 KiB; these tests never fill one, so writability
       * needs no watch: output is written at once by ms_pump. */
    }
    int64_t wait = next == MS_NO_DEADLINE ? 50 : next - now;
    if (wait > 50)
      wait = 50;
    if (wait < 0)
      wait = 0;
    poll(pf, (nfds_t)np, (int)wait);
  }
}

static ms_client *new_client(const char *name) {
  ms_client_config cfg;
  ms_client *c = NULL;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.backoff_min_ms = 10;
  cfg.backoff_max_ms = 20;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return NULL;
  ms_log_set_level(c, MS_LEVEL_SILENT);
  return c;
}

static void world_free(world *w) {
  int64_t now = now_ms();
  for (int i = 0; i < w->n; i++) {
    pipe_link *k = &w->l[i];
    if (k->open) {
      if (!k->client_done)
        k->ct.vt->close(k->ct.self);
      k->ht.vt->close(k->ht.self);
      ms_hub_conn_eof(k->hc, now);
      ms_hub_conn_release(k->hc);
    }
    ms_client_del(k->c);
  }
  ms_hub_del(w->hub);
}

/* ---- The test ------------------------------------------------------------ */

static void on_greet(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                     void *ud) {
  char text[160];
  (void)c;
  (void)ud;
  snprintf(text, sizeof text, "hello, %s", a->source);
  ms_reply_send_str(reply, text);
}

typedef struct answer {
  int got, err;
  char text[160];
} answer;

static void on_answer(ms_client *c, const ms_response_arg *r, void *ud) {
  answer *a = ud;
  (void)c;
  a->got = 1;
  a->err = r->err;
  if (!r->err && r->data->type == MSGPACK_OBJECT_STR)
    snprintf(a->text, sizeof a->text, "%.*s", (int)r->data->via.str.size,
             r->data->via.str.ptr);
}

static int both_ready(world *w, void *arg) {
  (void)arg;
  return ms_client_get_state(w->l[0].c) == MS_CLIENT_READY &&
         ms_client_get_state(w->l[1].c) == MS_CLIENT_READY;
}

static int answered(world *w, void *arg) {
  (void)w;
  return ((answer *)arg)->got;
}

static int caller_gone(world *w, void *arg) {
  ms_hub_stats st;
  (void)arg;
  ms_hub_get_stats(w->hub, &st);
  return !w->l[1].open && st.services == 1;
}

static void services_register_and_call_each_other_over_pipes(void) {
  world w;
  ms_hub_config hcfg;
  memset(&w, 0, sizeof w);
  ms_hub_config_init(&hcfg);
  hcfg.hub_id = "pipe-hub";
  CHECK_EQ_INT(ms_hub_new(&w.hub, &hcfg, NULL, NULL), 0);
  w.l[0].c = new_client("greeter");
  w.l[1].c = new_client("caller");
  w.n = 2;
  CHECK(w.l[0].c && w.l[1].c);
  CHECK_EQ_INT(ms_client_on(w.l[0].c, "greet", on_greet, NULL), 0);

  CHECK(run_until(&w, both_ready, NULL, 5000));
  ms_hub_stats st;
  ms_hub_get_stats(w.hub, &st);
  CHECK_EQ_INT(st.services, 2);
  CHECK_EQ_STR(ms_hub_conn_service(w.l[0].hc), "greeter");

  /* caller -> hub -> greeter -> hub -> caller, all through the pipes. */
  answer a;
  memset(&a, 0, sizeof a);
  CHECK_EQ_INT(ms_client_request(w.l[1].c, "greeter", "greet", NULL, 0, NULL,
                                 on_answer, &a, NULL),
               0);
  CHECK(run_until(&w, answered, &a, 5000));
  CHECK_EQ_INT(a.err, 0);
  CHECK_EQ_STR(a.text, "hello, caller");

  /* The hub's own error comes back the same way. */
  answer b;
  memset(&b, 0, sizeof b);
  CHECK_EQ_INT(ms_client_request(w.l[1].c, "nobody", "greet", NULL, 0, NULL,
                                 on_answer, &b, NULL),
               0);
  CHECK(run_until(&w, answered, &b, 5000));
  CHECK_EQ_INT(b.err, MS_ERR_TARGET_SERVICE_NOT_FOUND);

  /* A client that stops closes the WebSocket; the pipes carry the close
   * and the hub drops the name once its end is done. */
  ms_client_stop(w.l[1].c, now_ms());
  CHECK(run_until(&w, caller_gone, NULL, 5000));
  CHECK_EQ_INT(ms_client_get_state(w.l[1].c), MS_CLIENT_STOPPED);
  CHECK_EQ_INT(ms_client_get_state(w.l[0].c), MS_CLIENT_READY);
  world_free(&w);
}

static const ms_test_case tests[] = {
    TEST(services_register_and_call_each_other_over_pipes),
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a write to a closed pipe is MS_ERR_IO */
  return ms_test_run(tests, sizeof tests / sizeof tests[0], argc, argv);
}
