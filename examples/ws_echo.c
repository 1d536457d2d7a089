/*
 * ws_echo: a plain WebSocket echo server and a scripted client, built on
 * ms_conn and the POSIX loop. The interop tests run it against other
 * WebSocket implementations.
 *
 *   ws_echo server --port N [--host H]
 *       Echoes every message with its opcode; GET /healthz answers "ok".
 *       Prints "listening on PORT" once ready (port 0 picks a free one).
 *
 *   ws_echo client URL [--subprotocol json|msgpack|none] [--timeout MS]
 *                      [--send-text T] [--send-binary HEX] [--ping [HEX]]
 *                      [--send-pattern N]
 *                      [--close-reason R] [--close CODE]
 *       Runs the actions in order, each after the previous one was
 *       answered (an echo, a pong), and prints what it receives:
 *       "open:<subprotocol>", "text:<...>", "binary:<hex>", "pong",
 *       "close:<code>:<reason>". Exits 0 after a clean close.
 *       --send-pattern N sends N binary bytes, byte i = (i * 7) & 0xff
 *       (messages too big for a command line).
 */
#include <microstream/ms_posix.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- server ----------------------------------------------------------- */

typedef struct echo_peer {
  ms_conn *c;
  ms_posix_conn *pc;
  struct echo_peer *prev, *next;
} echo_peer;

static echo_peer *peers;

static void peer_free(echo_peer *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    peers = e->next;
  if (e->next)
    e->next->prev = e->prev;
  ms_posix_conn_del(e->pc);
  ms_conn_del(e->c);
  free(e);
}

static void srv_on_message(ms_conn *c, const ms_conn_message_arg *arg,
                           void *ud) {
  (void)ud;
  ms_conn_send(c, arg->binary, arg->data, arg->len);
}

static void srv_on_http(ms_conn *c, const ms_http_request *req, void *ud) {
  (void)ud;
  if (req->path_len == 8 && memcmp(req->path, "/healthz", 8) == 0)
    ms_conn_http_respond(c, 200, "text/plain", NULL, "ok", 2);
  else
    ms_conn_http_respond(c, 404, "text/plain", NULL, "not found", 9);
}

static void srv_on_done(ms_posix_conn *pc, ms_conn *c, void *ud) {
  (void)pc;
  (void)c;
  peer_free(ud);
}

static void srv_on_accept(ms_loop *loop, int fd, unsigned events, void *ud) {
  (void)events;
  (void)ud;
  for (;;) {
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
      return;
    echo_peer *e = calloc(1, sizeof(*e));
    ms_conn_config cfg;
    ms_conn_config_init(&cfg, MS_CONN_SERVER);
    cfg.max_message = 16u << 20;
    ms_conn_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.on_http_request = srv_on_http;
    cb.on_message = srv_on_message;
    if (!e || ms_conn_new(&e->c, &cfg, &cb, e, NULL) < 0) {
      free(e);
      close(cfd);
      continue;
    }
    if (ms_posix_conn_new(&e->pc, loop, cfd, e->c, srv_on_done, e) < 0) {
      ms_conn_del(e->c);
      free(e);
      close(cfd);
      continue;
    }
    e->next = peers;
    if (peers)
      peers->prev = e;
    peers = e;
  }
}

static void on_signal(ms_loop *loop, int fd, unsigned events, void *ud) {
  (void)events;
  (void)ud;
  struct signalfd_siginfo si;
  if (read(fd, &si, sizeof(si)) > 0)
    ms_loop_stop(loop);
}

static int run_server(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      port = atoi(argv[++i]);
    else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
      host = argv[++i];
    else {
      fprintf(stderr, "unknown server option %s\n", argv[i]);
      return 2;
    }
  }
  /* SIGINT / SIGTERM end the loop so everything is freed on the way out. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, NULL);
  int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  signal(SIGPIPE, SIG_IGN);

  ms_loop *loop;
  if (ms_loop_new(&loop, NULL) < 0)
    return 1;
  int lfd, bound;
  int rv = ms_tcp_listen(host, port, &lfd, &bound);
  if (rv < 0) {
    fprintf(stderr, "listen: %s\n", ms_strerror(rv));
    ms_loop_del(loop);
    return 1;
  }
  ms_loop_watch(loop, lfd, MS_EV_READ, srv_on_accept, NULL);
  if (sfd >= 0)
    ms_loop_watch(loop, sfd, MS_EV_READ, on_signal, NULL);
  printf("listening on %d\n", bound);
  fflush(stdout);
  rv = ms_loop_run(loop);
  while (peers)
    peer_free(peers);
  ms_loop_watch(loop, lfd, 0, NULL, NULL);
  close(lfd);
  if (sfd >= 0) {
    ms_loop_watch(loop, sfd, 0, NULL, NULL);
    close(sfd);
  }
  ms_loop_del(loop);
  return rv < 0 ? 1 : 0;
}

/* ---- client ----------------------------------------------------------- */

enum { ACT_TEXT, ACT_BINARY, ACT_PING, ACT_CLOSE };

typedef struct action {
  int kind;
  uint8_t *data;
  size_t len;
  int code;
  const char *reason;
} action;

typedef struct client_state {
  ms_loop *loop;
  ms_posix_conn *pc;
  action *acts;
  size_t nacts, next;
  int closed, exit_code;
} client_state;

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

static int hex_decode(const char *s, uint8_t **out, size_t *len) {
  size_t n = strlen(s);
  if (n % 2)
    return -1;
  *out = malloc(n / 2 + 1);
  if (!*out)
    return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      free(*out);
      return -1;
    }
    (*out)[i] = (uint8_t)(hi * 16 + lo);
  }
  *len = n / 2;
  return 0;
}

/* Run the next action; messages and pings wait for their answer. */
static void run_next(client_state *st, ms_conn *c) {
  while (st->next < st->nacts) {
    action *a = &st->acts[st->next++];
    switch (a->kind) {
    case ACT_TEXT:
    case ACT_BINARY:
      if (ms_conn_send(c, a->kind == ACT_BINARY, a->data, a->len) < 0) {
        printf("error:send\n");
        st->exit_code = 1;
      }
      return;
    case ACT_PING:
      ms_conn_ping(c, a->data, a->len);
      return;
    case ACT_CLOSE:
      ms_conn_close(c, (uint16_t)a->code, a->reason ? a->reason : "");
      return;
    }
  }
  /* Nothing left: close normally. */
  ms_conn_close(c, 1000, "");
}

static void cl_on_open(ms_conn *c, const ms_conn_open_arg *arg, void *ud) {
  const char *name = "none";
  if (arg->subprotocol_echoed)
    name = arg->encoding == MS_ENC_JSON ? "json" : "msgpack";
  printf("open:%s\n", name);
  fflush(stdout);
  run_next(ud, c);
}

static void cl_on_message(ms_conn *c, const ms_conn_message_arg *arg,
                          void *ud) {
  if (arg->binary) {
    printf("binary:");
    for (size_t i = 0; i < arg->len; i++)
      printf("%02x", arg->data[i]);
    printf("\n");
  } else {
    printf("text:%.*s\n", (int)arg->len, (const char *)arg->data);
  }
  fflush(stdout);
  run_next(ud, c);
}

static void cl_on_pong(ms_conn *c, const uint8_t *data, size_t len,
                       void *ud) {
  (void)data;
  (void)len;
  printf("pong\n");
  fflush(stdout);
  run_next(ud, c);
}

static void cl_on_close(ms_conn *c, const ms_conn_close_arg *arg, void *ud) {
  client_state *st = ud;
  (void)c;
  printf("close:%u:%.*s\n", arg->code, (int)arg->reason_len, arg->reason);
  if (arg->http_status || arg->err)
    printf("error:%s\n", ms_strerror(arg->err));
  fflush(stdout);
  st->closed = 1;
  if (arg->err && !st->exit_code)
    st->exit_code = 1;
}

static void cl_on_done(ms_posix_conn *pc, ms_conn *c, void *ud) {
  client_state *st = ud;
  (void)pc;
  (void)c;
  if (!st->closed)
    st->exit_code = 1;
  ms_loop_stop(st->loop);
}

static void cl_on_timeout(ms_loop *loop, ms_timer *t, void *ud) {
  client_state *st = ud;
  (void)t;
  printf("timeout\n");
  fflush(stdout);
  st->exit_code = 2;
  ms_loop_stop(loop);
}

static int run_client(int argc, char **argv) {
  if (argc < 1) {
    fprintf(stderr, "client needs a URL\n");
    return 2;
  }
  const char *url = argv[0];
  ms_url u;
  if (ms_url_parse(url, &u) < 0) {
    fprintf(stderr, "bad URL %s\n", url);
    return 2;
  }
  client_state st;
  memset(&st, 0, sizeof(st));
  st.acts = calloc((size_t)argc + 1, sizeof(action));
  ms_encoding offer[3] = {MS_ENC_NONE, MS_ENC_NONE, MS_ENC_NONE};
  long timeout_ms = 10000;
  const char *reason = NULL;
  int rc = 2;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    action *a = &st.acts[st.nacts];
    if (strcmp(o, "--subprotocol") == 0 && v) {
      i++;
      if (strcmp(v, "json") == 0)
        offer[0] = MS_ENC_JSON;
      else if (strcmp(v, "msgpack") == 0)
        offer[0] = MS_ENC_MSGPACK;
      else if (strcmp(v, "none") != 0)
        goto usage;
    } else if (strcmp(o, "--timeout") == 0 && v) {
      timeout_ms = atol(v);
      i++;
    } else if (strcmp(o, "--send-text") == 0 && v) {
      a->kind = ACT_TEXT;
      a->len = strlen(v);
      a->data = malloc(a->len + 1);
      memcpy(a->data, v, a->len + 1);
      st.nacts++;
      i++;
    } else if (strcmp(o, "--send-binary") == 0 && v) {
      a->kind = ACT_BINARY;
      if (hex_decode(v, &a->data, &a->len) < 0)
        goto usage;
      st.nacts++;
      i++;
    } else if (strcmp(o, "--send-pattern") == 0 && v) {
      a->kind = ACT_BINARY;
      a->len = (size_t)atol(v);
      a->data = malloc(a->len + 1);
      if (!a->data)
        goto usage;
      for (size_t k = 0; k < a->len; k++)
        a->data[k] = (uint8_t)((k * 7) & 0xff);
      st.nacts++;
      i++;
    } else if (strcmp(o, "--ping") == 0) {
      a->kind = ACT_PING;
      if (v && v[0] != '-') {
        if (hex_decode(v, &a->data, &a->len) < 0)
          goto usage;
        i++;
      }
      st.nacts++;
    } else if (strcmp(o, "--close-reason") == 0 && v) {
      reason = v;
      i++;
    } else if (strcmp(o, "--close") == 0 && v) {
      a->kind = ACT_CLOSE;
      a->code = atoi(v);
      a->reason = reason;
      st.nacts++;
      i++;
    } else {
      goto usage;
    }
  }

  signal(SIGPIPE, SIG_IGN);
  char hosthdr[300];
  if (strchr(u.host, ':'))
    snprintf(hosthdr, sizeof(hosthdr), "[%s]:%d", u.host, u.port);
  else
    snprintf(hosthdr, sizeof(hosthdr), "%s:%d", u.host, u.port);
  ms_conn_config cfg;
  ms_conn_config_init(&cfg, MS_CONN_CLIENT);
  cfg.host = hosthdr;
  cfg.path = u.path;
  cfg.max_message = 16u << 20;
  memcpy(cfg.offer, offer, sizeof(offer));
  ms_conn_callbacks cb;
  memset(&cb, 0, sizeof(cb));
  cb.on_open = cl_on_open;
  cb.on_message = cl_on_message;
  cb.on_pong = cl_on_pong;
  cb.on_close = cl_on_close;

  ms_conn *c = NULL;
  int fd = -1;
  rc = 1;
  if (ms_loop_new(&st.loop, NULL) < 0)
    goto out;
  if (ms_conn_new(&c, &cfg, &cb, &st, NULL) < 0)
    goto out;
  int rv = ms_tcp_connect(u.host, u.port, &fd);
  if (rv < 0) {
    fprintf(stderr, "connect: %s\n", ms_strerror(rv));
    goto out;
  }
  if (ms_posix_conn_new(&st.pc, st.loop, fd, c, cl_on_done, &st) < 0) {
    close(fd);
    goto out;
  }
  ms_timer *timer = NULL;
  ms_loop_timer_start(st.loop, timeout_ms, 0, cl_on_timeout, &st, &timer);
  ms_loop_run(st.loop);
  ms_timer_stop(timer);
  rc = st.exit_code;
out:
  ms_posix_conn_del(st.pc);
  ms_conn_del(c);
  ms_loop_del(st.loop);
  for (size_t i = 0; i < st.nacts; i++)
    free(st.acts[i].data);
  free(st.acts);
  return rc;
usage:
  fprintf(stderr, "bad client option %s\n", argv[0]);
  for (size_t i = 0; i < st.nacts; i++)
    free(st.acts[i].data);
  free(st.acts);
  return 2;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "server") == 0)
    return run_server(argc - 2, argv + 2);
  if (argc >= 2 && strcmp(argv[1], "client") == 0)
    return run_client(argc - 2, argv + 2);
  fprintf(stderr,
          "usage: ws_echo server --port N [--host H]\n"
          "       ws_echo client URL [--subprotocol json|msgpack|none]\n"
          "         [--send-text T] [--send-binary HEX] [--ping [HEX]]\n"
          "         [--send-pattern N]\n"
          "         [--close-reason R] [--close CODE] [--timeout MS]\n");
  return 2;
}
