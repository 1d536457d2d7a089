/* Shared by the programs: signals as a readable fd. */
#ifndef MS_TOOL_COMMON_H
#define MS_TOOL_COMMON_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>

#include <microstream/ms_client.h>
#ifdef MS_HAVE_TLS
#include <microstream/ms_tls.h>
#else
/* Built without the TLS layer: tls:// listeners are refused. */
typedef struct ms_tls ms_tls;
static inline int ms_tls_server_new(ms_tls **out, const char *cert,
                                    const char *key, const char *ca,
                                    char *err, size_t cap) {
  (void)out, (void)cert, (void)key, (void)ca;
  snprintf(err, cap, "built without TLS (GnuTLS)");
  return MS_ERR_INVALID_ARG;
}
static inline int ms_tls_reload(ms_tls *t, const char *cert, const char *key,
                                const char *ca, char *err, size_t cap) {
  (void)t, (void)cert, (void)key, (void)ca;
  snprintf(err, cap, "built without TLS (GnuTLS)");
  return MS_ERR_INVALID_ARG;
}
static inline int ms_tls_client_new(ms_tls **out, const char *ca,
                                    const char *cert, const char *key,
                                    char *err, size_t cap) {
  (void)ca, (void)cert, (void)key;
  *out = NULL;
  snprintf(err, cap, "built without TLS (GnuTLS): rediss:// unavailable");
  return MS_ERR_INVALID_ARG;
}
static inline const ms_stream_wrap *ms_tls_wrap(ms_tls *t) {
  (void)t;
  return NULL;
}
static inline void ms_tls_del(ms_tls *t) { (void)t; }
#endif

/* Exit codes shared by ms-req, ms-log and ms-tail (listed in each --help
 * and in the README). ms-log run with a command exits with its status. */
enum {
  TOOL_EXIT_OK = 0,
  TOOL_EXIT_FAILED = 1,      /* the request was answered with an error */
  TOOL_EXIT_USAGE = 2,       /* bad option, number or argument */
  TOOL_EXIT_UNREACHABLE = 3, /* the hub cannot be reached */
  TOOL_EXIT_REFUSED = 4      /* the hub refused us (token, name) */
};

#define TOOL_EXIT_CODES_HELP                                               \
  "exit codes: 0 ok, 1 the request failed, 2 usage error, 3 the hub cannot\n" \
  "  be reached, 4 the hub refused the connection (token)\n"

#define TOOL_DEFAULT_HUB "ws://127.0.0.1:7400/ws"

/* The hub said no to our token: no retry will help. */
#define TOOL_REFUSED(err)                                                   \
  ((err) == MS_ERR_UNAUTHORIZED || (err) == MS_ERR_FORBIDDEN ||             \
   (err) == MS_ERR_TOKEN_EXPIRED)

/* The hub URL: MS_HUB, else the default; --hub overrides both. */
static inline const char *tool_env_hub(void) {
  const char *h = getenv("MS_HUB");
  return h && *h ? h : TOOL_DEFAULT_HUB;
}

/* The token: MS_TOKEN, else none; --token overrides it. */
static inline const char *tool_env_token(void) {
  const char *t = getenv("MS_TOKEN");
  return t && *t ? t : NULL;
}

/* Parse a whole decimal number in [lo, hi]; on failure say which option
 * was wrong and return -1 (the caller prints its usage and exits 2). */
static inline int tool_parse_num(const char *prog, const char *opt,
                                 const char *s, long long lo, long long hi,
                                 long long *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "%s: %s expects a whole number from %lld to %lld, not '%s'\n",
            prog, opt, lo, hi, s);
    return -1;
  }
  *out = v;
  return 0;
}

/* Ignore SIGPIPE (a closed peer is an error code, not a death), block
 * SIGINT, SIGTERM and `extra` (0 for none), and return a non-blocking
 * signalfd for them to watch on the loop. */
static inline int tool_signal_fd(int extra) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (extra)
    sigaddset(&mask, extra);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  return signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* The signals tool_signal_fd blocked, for a child process to unblock. */
static inline void tool_unblock_signals(void) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_UNBLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_DFL);
}

/* For a wss:// URL: a TLS client layer trusting ca_file (NULL: the
 * system store) into cfg->tls, kept in *tls_out (tool_client_tls_free
 * after the client). A ws:// URL needs nothing. Returns 0, or -1 after
 * saying why. */
static inline int tool_client_tls(const char *prog, const char *url,
                                  const char *ca_file, void **tls_out,
                                  ms_client_config *cfg) {
  *tls_out = NULL;
  if (strncmp(url, "wss://", 6) != 0) {
    if (ca_file)
      fprintf(stderr, "%s: --ca is for wss:// URLs\n", prog);
    return ca_file ? -1 : 0;
  }
#ifdef MS_HAVE_TLS
  ms_tls *t;
  char err[256] = "";
  if (ms_tls_client_new(&t, ca_file, NULL, NULL, err, sizeof err) != 0) {
    fprintf(stderr, "%s: %s\n", prog, err[0] ? err : "cannot set up TLS");
    return -1;
  }
  cfg->tls = ms_tls_wrap(t);
  *tls_out = t;
  return 0;
#else
  (void)cfg;
  fprintf(stderr, "%s: built without TLS: cannot connect to %s\n", prog, url);
  return -1;
#endif
}

static inline void tool_client_tls_free(void *tls) {
#ifdef MS_HAVE_TLS
  ms_tls_del(tls);
#else
  (void)tls;
#endif
}

#endif
