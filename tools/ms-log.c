/* ms-log: ship lines as log records.
 *   ms-log [--hub URL] --service NAME [--level info] -- COMMAND [ARGS...]
 *       runs COMMAND; each stdout line is a record at --level (default info),
 *       each stderr line one at warn; exits with COMMAND's status.
 *   ... | ms-log --service NAME
 *       reads standard input until end of file.
 * Lines pass through to our own stdout/stderr unless --quiet. Long lines are
 * split and bytes that are not UTF-8 text are escaped. Nothing is lost: while
 * the queue of records waiting for the hub is full, ms-log stops reading its
 * input (the pipe pushes back on the writer). With --drop it never stops
 * reading and drops the oldest waiting records instead, counting them. */
#include <microstream/ms_log.h>
#include <microstream/ms_posix.h>

#include "tool_common.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LINE 16384

typedef struct src {
  int fd;
  int level;
  const char *stream; /* "stdout" / "stderr" / "stdin" */
  FILE *echo;
  char buf[MAX_LINE];
  size_t len;
  int open;
  int paused; /* not watched: the queue is full */
  int eof;    /* input ended; close once the buffer is shipped */
} src;

typedef struct app {
  ms_loop *loop;
  ms_client *c;
  src out, err;
  pid_t child;
  int child_status;
  int child_done;
  int quiet;
  int drop;          /* --drop: never pause the input */
  size_t queue_max;  /* records waiting for the hub */
  int refused;       /* the hub refused our token or name */
  int ever_ready;
  int said_waiting;
  uint64_t lines;
} app;

/* Escape what is not valid UTF-8 text, so a record is always a string. */
static size_t escape_line(const char *in, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 8 < cap;) {
    unsigned char ch = (unsigned char)in[i];
    size_t len = 0;
    if (ch >= 0x20 && ch < 0x7f) len = 1;
    else if (ch == '\t') len = 1;
    else if (ch >= 0xc2 && ch <= 0xdf) len = 2;
    else if (ch >= 0xe0 && ch <= 0xef) len = 3;
    else if (ch >= 0xf0 && ch <= 0xf4) len = 4;
    int ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; k++)
      ok = ((unsigned char)in[i + k] & 0xc0) == 0x80;
    if (ok && len == 3) {
      unsigned char c1 = (unsigned char)in[i + 1];
      if ((ch == 0xe0 && c1 < 0xa0) || (ch == 0xed && c1 >= 0xa0))
        ok = 0;
    }
    if (ok && len == 4) {
      unsigned char c1 = (unsigned char)in[i + 1];
      if ((ch == 0xf0 && c1 < 0x90) || (ch == 0xf4 && c1 >= 0x90))
        ok = 0;
    }
    if (ok) {
      memcpy(out + o, in + i, len);
      o += len;
      i += len;
    } else {
      o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
      i++;
    }
  }
  return o;
}

static void ship_line(app *a, src *s, const char *line, size_t n) {
  if (n > 0 && line[n - 1] == '\r')
    n--;
  char esc[MAX_LINE * 4 + 16];
  size_t m = escape_line(line, n, esc, sizeof esc);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 1);
  msgpack_pack_str_with_body(&pk, "stream", 6);
  msgpack_pack_str_with_body(&pk, s->stream, strlen(s->stream));
  ms_log_raw(a->c, s->level, esc, m, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  a->lines++;
}

static void on_readable(ms_loop *loop, int fd, unsigned ev, void *ud);

static int queue_full(const app *a) {
  return !a->drop && !a->refused && ms_log_queued(a->c) >= a->queue_max;
}

/* Ship the complete lines in the buffer while the queue has room. Returns 1
 * when it stopped because the queue is full (the rest stays buffered). */
static int ship_buffered(app *a, src *s) {
  size_t start = 0;
  int full = 0;
  for (;;) {
    char *nl = memchr(s->buf + start, '\n', s->len - start);
    if (!nl)
      break;
    if (queue_full(a)) {
      full = 1;
      break;
    }
    size_t n = (size_t)(nl - (s->buf + start));
    ship_line(a, s, s->buf + start, n);
    start += n + 1;
  }
  if (start > 0) {
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
  }
  if (!full && s->len == sizeof s->buf) { /* a long line: split it */
    if (queue_full(a))
      return 1;
    ship_line(a, s, s->buf, s->len);
    s->len = 0;
  }
  return full;
}

static void close_src(app *a, src *s) {
  if (!s->open)
    return;
  if (s->len > 0)
    ship_line(a, s, s->buf, s->len);
  s->len = 0;
  if (!s->paused && !s->eof)
    ms_loop_watch(a->loop, s->fd, 0, NULL, NULL);
  if (s->fd > 2)
    close(s->fd);
  s->open = 0;
}

static void pause_src(app *a, src *s) {
  if (s->paused || s->eof)
    return;
  s->paused = 1;
  ms_loop_watch(a->loop, s->fd, 0, NULL, NULL);
}

/* From the main loop: a paused or ended input continues once the hub has
 * taken half of the queue (hysteresis: no pause/resume per record). */
static void resume_src(app *a, src *s) {
  if (!s->open || (!s->paused && !s->eof))
    return;
  if (!a->drop && !a->refused && ms_log_queued(a->c) > a->queue_max / 2)
    return;
  if (ship_buffered(a, s))
    return;
  if (s->eof) {
    close_src(a, s);
  } else {
    s->paused = 0;
    ms_loop_watch(a->loop, s->fd, MS_EV_READ, on_readable, s);
  }
}

static app *g_app;

static void on_readable(ms_loop *loop, int fd, unsigned ev, void *ud) {
  src *s = ud;
  app *a = g_app;
  (void)loop, (void)fd, (void)ev;
  for (int rounds = 0; rounds < 16; rounds++) {
    if (s->len == sizeof s->buf) {
      pause_src(a, s); /* only while the queue is full */
      return;
    }
    ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (r <= 0) {
      if (ship_buffered(a, s)) {
        ms_loop_watch(a->loop, s->fd, 0, NULL, NULL);
        s->eof = 1; /* the rest goes out from resume_src */
      } else {
        close_src(a, s);
      }
      return;
    }
    if (s->echo && !a->quiet) {
      fwrite(s->buf + s->len, 1, (size_t)r, s->echo);
      fflush(s->echo);
    }
    s->len += (size_t)r;
    if (ship_buffered(a, s)) {
      pause_src(a, s);
      return;
    }
  }
}

static void on_state(ms_client *c, const ms_client_state_arg *st, void *ud) {
  app *a = ud;
  (void)c;
  if (st->state == MS_CLIENT_READY) {
    a->ever_ready = 1;
    if (a->said_waiting)
      fprintf(stderr, "ms-log: connected to the hub\n");
    a->said_waiting = 0;
  } else if (TOOL_REFUSED(st->err) && !a->refused) {
    /* No token will get better by retrying: stop waiting for the hub
     * (reading on, so a wrapped command is never blocked). */
    a->refused = 1;
    fprintf(stderr, "ms-log: the hub refused the token for this service (%s)\n",
            ms_strerror(st->err));
  } else if (st->state == MS_CLIENT_IDLE && !a->said_waiting && st->err) {
    a->said_waiting = 1;
    fprintf(stderr, "ms-log: %s the hub (%s); retrying%s\n",
            a->ever_ready ? "lost" : "cannot reach", ms_strerror(st->err),
            a->drop ? "" : ", input paused while the queue is full");
  }
}

static void on_sigchld(ms_loop *loop, int fd, unsigned ev, void *ud) {
  app *a = ud;
  (void)loop, (void)ev;
  struct signalfd_siginfo si;
  while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (si.ssi_signo == SIGCHLD && a->child > 0) {
      int st;
      if (waitpid(a->child, &st, WNOHANG) == a->child) {
        a->child_status = st;
        a->child_done = 1;
      }
    } else if ((si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) &&
               a->child > 0 && !a->child_done) {
      kill(a->child, (int)si.ssi_signo); /* pass it on; we exit with it */
    }
  }
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: ms-log [--hub URL] [--token T] --service NAME [--level L]\n"
          "              [--quiet] [--drop] [--queue N] [--flush-ms N]\n"
          "              [-- COMMAND [ARGS...]]\n"
          "  Ships each line of COMMAND's stdout (at --level, default info)\n"
          "  and stderr (at warn), or of standard input, as a log record;\n"
          "  exits with COMMAND's status.\n"
          "  --service NAME  the service the records are from (required)\n"
          "  --level L      level of COMMAND's stdout or of stdin lines: debug,\n"
          "                 info, warn or error (default info)\n"
          "  --hub URL      default $MS_HUB, else " TOOL_DEFAULT_HUB "\n"
          "  --token T      a token with scope service for NAME (default\n"
          "                 $MS_TOKEN)\n"
          "  --ca FILE      for wss://: trust only this CA (default: the\n"
          "                 system's)\n"
          "  --quiet        do not echo COMMAND's output\n"
          "  --queue N      records waiting for the hub (default 10000); when\n"
          "                 full, input is paused (nothing is lost)\n"
          "  --drop         never pause: drop the oldest waiting records\n"
          "  --flush-ms N   time left at exit to deliver the queue and have\n"
          "                 the hub confirm it (3000)\n"
          "  --version, --help\n" TOOL_EXIT_CODES_HELP
          "  with COMMAND: COMMAND's status (128+N when killed by signal N)\n");
}

int main(int argc, char **argv) {
  app a;
  memset(&a, 0, sizeof a);
  g_app = &a;
  const char *hub = tool_env_hub(), *token = tool_env_token(), *ca = NULL;
  void *tls = NULL;
  const char *service = NULL;
  int level = MS_LEVEL_INFO;
  long long flush_ms = 3000, queue_max = 10000;
  static const struct option opts[] = {
      {"hub", required_argument, NULL, 'H'},
      {"service", required_argument, NULL, 's'},
      {"level", required_argument, NULL, 'l'},
      {"quiet", no_argument, NULL, 'q'},
      {"flush-ms", required_argument, NULL, 'F'},
      {"token", required_argument, NULL, 'k'},
      {"ca", required_argument, NULL, 'C'},
      {"drop", no_argument, NULL, 'D'},
      {"queue", required_argument, NULL, 'Q'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "+H:s:l:qF:k:C:DQ:Vh", opts, NULL)) != -1) {
    switch (ch) {
    case 'H': hub = optarg; break;
    case 's': service = optarg; break;
    case 'l':
      level = ms_log_level_parse(optarg);
      if (level <= 0 || level >= MS_LEVEL_SILENT) {
        fprintf(stderr, "ms-log: bad --level '%s'\n", optarg);
        return 2;
      }
      break;
    case 'q': a.quiet = 1; break;
    case 'F':
      if (tool_parse_num("ms-log", "--flush-ms", optarg, 0, 86400000, &flush_ms)) {
        usage(stderr);
        return 2;
      }
      break;
    case 'Q':
      if (tool_parse_num("ms-log", "--queue", optarg, 1, 10000000, &queue_max)) {
        usage(stderr);
        return 2;
      }
      break;
    case 'k': token = optarg; break;
    case 'C': ca = optarg; break;
    case 'D': a.drop = 1; break;
    case 'V': printf("ms-log %s\n", MS_VERSION_STRING); return 0;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (!service) {
    fprintf(stderr, "ms-log: --service NAME is required\n");
    usage(stderr);
    return 2;
  }
  ms_url url;
  if (ms_url_parse(hub, &url) != 0) {
    fprintf(stderr, "ms-log: bad --hub URL '%s'\n", hub);
    return 2;
  }
  int sfd = tool_signal_fd(SIGCHLD);

  char **cmd = optind < argc ? &argv[optind] : NULL;
  a.out.stream = cmd ? "stdout" : "stdin";
  a.out.level = level;
  a.out.echo = stdout;
  a.err.stream = "stderr";
  a.err.level = MS_LEVEL_WARN;
  a.err.echo = stderr;
  if (cmd) {
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) {
      perror("ms-log: pipe");
      return 2;
    }
    a.child = fork();
    if (a.child < 0) {
      perror("ms-log: fork");
      return 2;
    }
    if (a.child == 0) {
      tool_unblock_signals();
      dup2(po[1], 1);
      dup2(pe[1], 2);
      execvp(cmd[0], cmd);
      fprintf(stderr, "ms-log: cannot run %s: %s\n", cmd[0], strerror(errno));
      _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    a.out.fd = po[0];
    a.err.fd = pe[0];
    a.err.open = 1;
  } else {
    a.out.fd = 0;
    a.out.echo = a.quiet ? NULL : stdout;
    a.quiet = 1; /* stdin lines are not echoed back */
  }
  a.out.open = 1;
  fcntl(a.out.fd, F_SETFL, fcntl(a.out.fd, F_GETFL) | O_NONBLOCK);
  if (a.err.open)
    fcntl(a.err.fd, F_SETFL, fcntl(a.err.fd, F_GETFL) | O_NONBLOCK);

  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = service;
  cfg.token = token;
  cfg.on_state = on_state;
  if (tool_client_tls("ms-log", hub, ca, &tls, &cfg) != 0)
    return 2;
  cfg.watch = 1; /* a log shipper: the name need not be unique */
  cfg.backoff_max_ms = 2000;
  if (ms_loop_new(&a.loop, NULL) || ms_client_new(&a.c, &cfg, &a, NULL)) {
    fprintf(stderr, "ms-log: bad --service '%s'\n", service);
    return 2;
  }
  ms_log_set_sink(a.c, NULL, NULL); /* lines are echoed as they are */
  ms_log_set_level(a.c, MS_LEVEL_DEBUG);
  a.queue_max = (size_t)queue_max;
  /* The client's ring holds the queue and one read's worth more, so a
   * full queue pauses the input before anything is pushed out. */
  ms_log_set_queue(a.c, a.drop ? a.queue_max : a.queue_max + 16);
  ms_posix_client *pc;
  if (ms_posix_client_new(&pc, a.loop, a.c, hub) != 0) {
    fprintf(stderr, "ms-log: cannot start\n");
    return 2;
  }
  ms_loop_watch(a.loop, sfd, MS_EV_READ, on_sigchld, &a);
  ms_loop_watch(a.loop, a.out.fd, MS_EV_READ, on_readable, &a.out);
  if (a.err.open)
    ms_loop_watch(a.loop, a.err.fd, MS_EV_READ, on_readable, &a.err);

  /* Until the command is done and its output read. */
  while (a.out.open || a.err.open || (a.child > 0 && !a.child_done)) {
    int waiting = a.out.paused || a.out.eof || a.err.paused || a.err.eof;
    ms_loop_run_once(a.loop, waiting ? 10 : 100);
    resume_src(&a, &a.out);
    resume_src(&a, &a.err);
    if (a.refused && !a.child)
      break; /* nothing can be delivered: fail fast */
  }
  /* Then give queued records a bounded time to reach the hub. */
  int flushed = ms_posix_client_flush(pc, flush_ms);
  uint64_t dropped = ms_log_dropped(a.c);
  size_t left = ms_log_queued(a.c);
  uint64_t unsure = ms_log_unconfirmed_lost(a.c);
  if (left || dropped)
    fprintf(stderr, "ms-log: %zu records not delivered, %llu dropped\n", left,
            (unsigned long long)dropped);
  if (unsure)
    fprintf(stderr,
            "ms-log: %llu records sent on a connection that ended before "
            "the hub confirmed them (they may be lost)\n",
            (unsigned long long)unsure);
  /* Written but not confirmed by the hub: not known to be delivered. */
  uint64_t unsent = flushed != 0 && ms_log_sync_state(a.c) != 1
                        ? ms_log_unconfirmed(a.c)
                        : 0;
  int unconfirmed = flushed != 0 && ms_log_sync_state(a.c) != 1;
  if (unsent)
    fprintf(stderr,
            "ms-log: %llu records sent that the hub did not confirm in time "
            "(they may still arrive)\n",
            (unsigned long long)unsent);
  ms_loop_watch(a.loop, sfd, 0, NULL, NULL);
  close(sfd);
  ms_posix_client_del(pc);
  ms_client_del(a.c);
  tool_client_tls_free(tls);
  ms_loop_del(a.loop);
  if (!a.child)
    return a.refused ? TOOL_EXIT_REFUSED
           : (left || unsure || unconfirmed) ? TOOL_EXIT_UNREACHABLE
                                             : 0;
  if (WIFEXITED(a.child_status))
    return WEXITSTATUS(a.child_status);
  if (WIFSIGNALED(a.child_status))
    return 128 + WTERMSIG(a.child_status);
  return 1;
}
