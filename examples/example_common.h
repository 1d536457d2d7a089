/* Shared bits of the examples: argument parsing and a client on a loop. */
#ifndef EXAMPLE_COMMON_H
#define EXAMPLE_COMMON_H

#include <microstream/ms_posix.h>

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* --hub URL (default ws://127.0.0.1:7400/ws) from argv, or $MS_HUB. */
static inline const char *example_hub_url(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--hub") == 0)
      return argv[i + 1];
  const char *env = getenv("MS_HUB");
  return env && *env ? env : "ws://127.0.0.1:7400/ws";
}

static inline void example_state(ms_client *c, const ms_client_state_arg *st,
                                 void *ud) {
  (void)ud;
  const char *svc = ms_client_service(c);
  switch (st->state) {
  case MS_CLIENT_READY:
    fprintf(stderr, "[%s] registered with hub %s\n", svc, st->hub_id);
    break;
  case MS_CLIENT_IDLE:
    fprintf(stderr, "[%s] disconnected (%s); retrying in %lld ms\n", svc,
            ms_strerror(st->err), (long long)st->retry_in_ms);
    break;
  case MS_CLIENT_STOPPED:
    fprintf(stderr, "[%s] stopped: %s\n", svc, ms_strerror(st->err));
    break;
  default:
    break;
  }
}

static inline void example_on_signal(ms_loop *loop, int fd, unsigned ev,
                                     void *ud) {
  struct signalfd_siginfo si;
  (void)ev, (void)ud;
  while (read(fd, &si, sizeof si) == (ssize_t)sizeof si)
    ms_loop_stop(loop);
}

/* SIGINT and SIGTERM stop the loop (ms_loop_run returns), so main can
 * flush the last log records before it exits. Returns the fd to pass to
 * example_signals_done, or -1. */
static inline int example_stop_on_signals(ms_loop *loop) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd >= 0)
    ms_loop_watch(loop, fd, MS_EV_READ, example_on_signal, NULL);
  return fd;
}

static inline void example_signals_done(ms_loop *loop, int fd) {
  if (fd < 0)
    return;
  ms_loop_watch(loop, fd, 0, NULL, NULL);
  close(fd);
}

/* Pack a map of string pairs (k1, v1, k2, v2, ..., NULL). */
static inline void example_pack_strmap(msgpack_sbuffer *sb, ...) {
  va_list ap;
  size_t n = 0;
  va_start(ap, sb);
  while (va_arg(ap, const char *) != NULL) {
    (void)va_arg(ap, const char *);
    n++;
  }
  va_end(ap);
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, n);
  va_start(ap, sb);
  const char *k;
  while ((k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    msgpack_pack_str_with_body(&pk, k, strlen(k));
    msgpack_pack_str_with_body(&pk, v, strlen(v));
  }
  va_end(ap);
}

/* Copy a string field of a map object into buf ("" if absent). */
static inline const char *example_get_str(const msgpack_object *m,
                                          const char *key, char *buf,
                                          size_t size) {
  ms_str s;
  buf[0] = '\0';
  if (ms_map_get_str(m, key, &s) == 0) {
    size_t n = s.len < size - 1 ? s.len : size - 1;
    memcpy(buf, s.ptr, n);
    buf[n] = '\0';
  }
  return buf;
}

#endif
