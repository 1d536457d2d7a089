/* microstream-hub: the hub server. WebSocket at /ws, Socket.IO at
 * /socket.io/, /healthz, /metrics,
 * /api/services, /api/logs (the SQLite log store); SIGINT/SIGTERM close
 * every connection with 4050, flush the store and exit 0. */
#include <microstream/ms_cluster.h>
#include <microstream/ms_posix.h>

#include "tool_common.h"

#include "hub_config.h"
#include "hub_metrics.h"
#include "ms_store.h"

#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

typedef struct app {
  uint64_t trimmed_at; /* hibernation count at the last malloc_trim */
  ms_loop *loop;
  ms_hub *hub;
  ms_posix_hub *ph;
  int log_level;
  int stopping;
  int64_t stop_deadline;
  ms_store *store; /* NULL with --no-store */
  struct hub_args *args;
  struct key_set *keys;
  ms_tls *tls;
  int store_failing; /* the last flush failed: log once, not every tick */
  /* Records the store dropped: the newest one's seq, and how many of them
   * subscribers have been told about (ms_hub_store_gap). */
  uint64_t drop_last_seq;
  uint64_t drops_told;
  const char *store_path;
  hub_store_timing store_timing; /* for /metrics */
  double started_s;              /* wall clock at start, for /metrics */
  /* For SIGHUP: the configuration file and the command line read again. */
  const char *config_path;
  int argc;
  char **argv;
  struct hub_args *reloaded; /* owned when not the first */
  hub_config_args reloaded_file;
  int log_streams;   /* /api/logs answers in progress */
} app;

static const char *level_name(int level) {
  if (level >= MS_LEVEL_ERROR) return "error";
  if (level >= MS_LEVEL_WARN) return "warn";
  if (level >= MS_LEVEL_INFO) return "info";
  return "debug";
}

static int parse_level(const char *s) {
  if (!strcmp(s, "debug")) return MS_LEVEL_DEBUG;
  if (!strcmp(s, "info")) return MS_LEVEL_INFO;
  if (!strcmp(s, "warn")) return MS_LEVEL_WARN;
  if (!strcmp(s, "error")) return MS_LEVEL_ERROR;
  if (!strcmp(s, "silent")) return MS_LEVEL_SILENT;
  return -1;
}

static void logf_(app *a, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(app *a, int level, const char *fmt, ...) {
  if (level < a->log_level)
    return;
  char ts[32];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(stderr, "%s %-5s microstream-hub: ", ts, level_name(level));
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void on_hub_event(ms_hub *h, int level, const char *text, void *ud) {
  (void)h;
  logf_(ud, level, "%s", text);
}

/* Connections that went quiet gave their WebSocket buffers back to
 * malloc; hand the pages back to the system too, now and then, so the
 * process's memory follows the number of busy connections. */
static void on_trim_timer(ms_loop *loop, ms_timer *t, void *ud) {
  app *a = ud;
  (void)loop, (void)t;
  ms_hub_stats st;
  ms_hub_get_stats(a->hub, &st);
  if (st.hibernations - a->trimmed_at >= 64) {
    a->trimmed_at = st.hibernations;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
  }
}

static int64_t wallclock(void *ud) {
  (void)ud;
  return ms_wall_us();
}

/* ---- log store ---------------------------------------------------------- */

/* Records are written from a loop timer, in batches, so logging at full
 * rate costs routing a memcpy per record, not a disk write. */
#define STORE_FLUSH_MS 200
#define STORE_FLUSH_BATCH 1000
/* ... or as soon as this many bytes wait: a burst of large records is
 * written as it comes (the loop stops reading while it writes, which is
 * the backpressure), instead of filling the batch and dropping. */
#define STORE_FLUSH_BYTES (2u << 20)

/* /api/logs answers at once (more get 503 and Retry-After); each examines
 * at most SCAN_ROWS rows and adds at most SCAN_BYTES per loop turn. */
#define MAX_LOG_STREAMS 8
#define SCAN_ROWS 4096
#define SCAN_BYTES (256 * 1024)

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void store_flush(app *a) {
  int timed = ms_store_pending(a->store) > 0;
  double t0 = timed ? mono_s() : 0;
  int rv = ms_store_flush(a->store);
  if (timed)
    hub_store_timing_observe(&a->store_timing, mono_s() - t0);
  if (rv != 0 && !a->store_failing)
    logf_(a, MS_LEVEL_WARN, "log store: flush failed (%zu records waiting)",
          ms_store_pending(a->store));
  else if (rv == 0 && a->store_failing)
    logf_(a, MS_LEVEL_INFO, "log store: writing again");
  a->store_failing = rv != 0;
  /* What it dropped since the last time is told to the subscribers at
   * once (not only when the store can write its gap row again). */
  ms_store_stats ss;
  ms_store_get_stats(a->store, &ss);
  if (ss.dropped > a->drops_told) {
    ms_hub_store_gap(a->hub, a->drop_last_seq, ss.dropped - a->drops_told,
                     ms_loop_now(a->loop));
    a->drops_told = ss.dropped;
  }
}

/* Rows added to the `contains` index per store timer tick (at most 5000 a
 * second, a few milliseconds each time): off the write path, so a flood is
 * not slowed by indexing; the index catches up when it calms down. */
#define STORE_INDEX_ROWS 1000

static void on_store_timer(ms_loop *loop, ms_timer *t, void *ud) {
  app *a = ud;
  (void)loop;
  (void)t;
  store_flush(a);
  if (!a->store_failing)
    ms_store_index(a->store, STORE_INDEX_ROWS);
}

static int on_hub_metrics(ms_hub *h, ms_buf *b, void *ud) {
  app *a = ud;
  (void)h;
  int rv = hub_metrics_text(b, a->store, a->store_path, &a->store_timing,
                            a->started_s);
  if (rv == 0 && a->store)
    rv = ms_buf_appendf(b,
                        "# HELP microstream_api_logs_streams Answers of "
                        "/api/logs in progress.\n"
                        "# TYPE microstream_api_logs_streams gauge\n"
                        "microstream_api_logs_streams %d\n",
                        a->log_streams);
  return rv;
}

static void on_hub_record(ms_hub *h, const ms_hub_record *rec, void *ud) {
  app *a = ud;
  if (!a->store)
    return;
  if (ms_store_add(a->store, ms_hub_id(h), rec) != 0)
    a->drop_last_seq = rec->seq;
  /* While the file is failing (locked, disk full) only the timer retries:
   * a retry per record would stall routing on the busy wait. */
  if ((ms_store_pending(a->store) >= STORE_FLUSH_BATCH ||
       ms_store_pending_bytes(a->store) >= STORE_FLUSH_BYTES) &&
      !a->store_failing)
    store_flush(a);
}

typedef struct log_stream {
  app *a;
  ms_store_scan *scan;
} log_stream;

/* One bounded step of an /api/logs answer per loop turn (the hub calls
 * it while the reader keeps up). */
static void on_log_stream(ms_hub *h, ms_conn *c, int done, void *ud) {
  log_stream *ls = ud;
  (void)h;
  if (done) {
    ls->a->log_streams--;
    ms_store_scan_free(ls->scan);
    free(ls);
    return;
  }
  ms_buf out;
  memset(&out, 0, sizeof out);
  int rv = ms_store_scan_step(ls->scan, SCAN_ROWS, SCAN_BYTES, &out);
  if (out.len && ms_conn_http_write(c, out.data, out.len) != 0)
    rv = -1;
  ms_buf_free(&out);
  if (rv != 0)
    ms_conn_http_end(c, rv == 1); /* an error: the body is visibly cut */
}

static void respond_json_error(ms_conn *c, int status, const char *msg) {
  char body[512];
  size_t o = 0;
  o += (size_t)snprintf(body, sizeof body, "{\"error\":\"");
  /* Messages are ours, but may quote a parameter name: escape. */
  for (const char *p = msg; *p && o + 8 < sizeof body; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch == '"' || ch == '\\') {
      body[o++] = '\\';
      body[o++] = (char)ch;
    } else if (ch < 0x20) {
      o += (size_t)snprintf(body + o, sizeof body - o, "\\u%04x", ch);
    } else {
      body[o++] = (char)ch;
    }
  }
  o += (size_t)snprintf(body + o, sizeof body - o, "\"}");
  ms_conn_http_respond(c, status, "application/json", NULL, body, o);
}

static int path_eq(const ms_http_request *req, const char *p) {
  return req->path_len == strlen(p) && !memcmp(req->path, p, req->path_len);
}

static int on_hub_http(ms_hub *h, ms_conn *c, const ms_http_request *req,
                       void *ud) {
  app *a = ud;
  (void)h;
  if (!path_eq(req, "/api/logs"))
    return -1;
  if (!a->store) {
    respond_json_error(c, 503, "no store");
    return 0;
  }
  char *scratch = malloc(req->query_len + 1);
  if (!scratch) {
    respond_json_error(c, 500, "out of memory");
    return 0;
  }
  ms_store_query q;
  char err[160];
  if (ms_store_query_parse(&q, req->query, req->query_len, scratch, err,
                           sizeof err) != 0) {
    respond_json_error(c, 400, err);
    free(scratch);
    return 0;
  }
  if (a->log_streams >= MAX_LOG_STREAMS) {
    free(scratch);
    ms_conn_http_respond(c, 503, "application/json", "Retry-After: 1\r\n",
                         "{\"error\":\"busy: too many /api/logs answers "
                         "in progress\"}",
                         strlen("{\"error\":\"busy: too many /api/logs "
                                "answers in progress\"}"));
    return 0;
  }
  /* Let a query see what was logged a moment ago. */
  store_flush(a);
  log_stream *ls = calloc(1, sizeof *ls);
  int rv = ls ? ms_store_scan_new(a->store, &q, &ls->scan) : MS_ERR_NOMEM;
  free(scratch);
  if (rv == 0)
    rv = ms_conn_http_begin(c, 200, "application/json",
                            "Cache-Control: no-cache\r\n");
  if (rv == 0) {
    ls->a = a;
    a->log_streams++;
    if (ms_hub_http_stream(h, c, on_log_stream, ls) != 0)
      ms_conn_http_end(c, 0); /* cannot happen: c is this request's */
    return 0;
  }
  if (ls)
    ms_store_scan_free(ls->scan);
  free(ls);
  if (!ms_conn_is_open(c))
    respond_json_error(c, rv == MS_ERR_NOMEM ? 500 : 503,
                       rv == MS_ERR_NOMEM ? "out of memory"
                                          : "store query failed");
  return 0;
}

static void check_done(ms_loop *loop, ms_timer *t, void *ud) {
  app *a = ud;
  (void)t;
  if ((ms_posix_hub_streams(a->ph) == 0 &&
       ms_posix_hub_cluster_pending(a->ph) == 0) ||
      ms_loop_now(loop) >= a->stop_deadline)
    ms_loop_stop(loop);
}

static void reload(app *a);

static void on_signal(ms_loop *loop, int fd, unsigned events, void *ud) {
  app *a = ud;
  (void)events;
  struct signalfd_siginfo si;
  while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (si.ssi_signo == SIGHUP) {
      reload(a);
      continue;
    }
    if (a->stopping)
      continue;
    a->stopping = 1;
    logf_(a, MS_LEVEL_INFO, "signal %u: shutting down", si.ssi_signo);
    ms_posix_hub_stop_listening(a->ph);
    ms_hub_shutdown(a->hub, ms_loop_now(loop));
    ms_posix_hub_cluster_leave(a->ph); /* other hubs learn at once */
    a->stop_deadline = ms_loop_now(loop) + 2000;
    ms_loop_timer_start(loop, 0, 20, check_done, a, NULL);
  }
}

static int read_secret(const char *path, uint8_t **out, size_t *len) {
  errno = 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return -1;
  uint8_t buf[4096];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    n--;
  if (n == 0)
    return -1;
  *out = malloc(n);
  if (!*out)
    return -1;
  memcpy(*out, buf, n);
  *len = n;
  return 0;
}

/* The listener failed: find the operating system's reason by trying the
 * same bind here, and say it in words people search for. */
static void explain_listen_failure(const char *host, int port, int rv) {
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  int gai = getaddrinfo(host, ps, &hints, &ai);
  if (gai != 0) {
    fprintf(stderr, "microstream-hub: cannot listen on %s:%d: cannot resolve "
                    "'%s' (%s)\n", host, port, host, gai_strerror(gai));
    return;
  }
  int err = 0;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = errno;
  } else {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1) != 0)
      err = errno;
    close(fd);
  }
  freeaddrinfo(ai);
  const char *hint = "";
  if (err == EADDRINUSE)
    hint = " (another hub or program is listening there; pick another "
           "--listen port or stop it)";
  else if (err == EACCES)
    hint = " (ports below 1024 need privileges)";
  else if (err == EADDRNOTAVAIL)
    hint = " (no interface of this machine has that address)";
  fprintf(stderr, "microstream-hub: cannot listen on %s:%d: %s%s\n", host,
          port, err ? strerror(err) : ms_strerror(rv), hint);
}

/* ---- options: one table for getopt, --help and the checks ---------------- */

enum {
  O_LISTEN = 'l', O_HELP = 'h',
  O_HB = 256, O_MAXMSG, O_MAXPEND, O_DEFTO, O_LATE, O_SECRET, O_KEY,
  O_LEGACY, O_REPLACE, O_LEVEL, O_TOKEN, O_SCOPE, O_TTL, O_ORIGIN, O_HOST,
  O_METRICS_TOKEN, O_INSECURE, O_UNAUTH, O_STORE, O_NOSTORE, O_RDAYS,
  O_RROWS, O_VERSION, O_CONFIG, O_CLUSTER, O_CPREFIX, O_CPASS, O_CLEASE,
  O_SIOMAX, O_TLS_CERT, O_TLS_KEY, O_TLS_CA, O_TLS_HS, O_CRATE, O_CBURST,
  O_CRATE_LO, O_CCA, O_CCERT, O_CKEY, O_CCLASSIC
};

typedef struct hub_opt {
  const char *name;
  int has_arg;
  int id;
  const char *arg; /* for --help */
  const char *help;
} hub_opt;

static const hub_opt hub_opts[] = {
    {"listen", 1, O_LISTEN, "[tls://]HOST:PORT",
     "address to listen on, repeatable; tls:// for TLS (https and\n"
     "wss on one port); default 127.0.0.1:7400 (tls:// with\n"
     "--tls-cert); port 0 picks a free port"},
    {"tls-cert", 1, O_TLS_CERT, "FILE",
     "certificate chain for tls:// listeners (PEM); SIGHUP reloads"},
    {"tls-key", 1, O_TLS_KEY, "FILE", "its private key (PEM)"},
    {"tls-client-ca", 1, O_TLS_CA, "FILE",
     "require client certificates signed by this CA"},
    {"tls-handshake-ms", 1, O_TLS_HS, "N",
     "close a TLS connection whose handshake takes longer\n"
     "(default 10000)"},
    {"heartbeat-ms", 1, O_HB, "N", "liveness interval (default 10000)"},
    {"max-message", 1, O_MAXMSG, "BYTES", "largest message (default 1048576)"},
    {"max-pending", 1, O_MAXPEND, "N",
     "requests in flight per connection (default 1024)"},
    {"default-timeout-ms", 1, O_DEFTO, "N",
     "request timeout when the caller gives none (5000)"},
    {"max-late-ms", 1, O_LATE, "N", "longest late-response window (30000)"},
    {"max-socketio-sessions", 1, O_SIOMAX, "N",
     "Socket.IO sessions open at once (default 10000)"},
    {"secret-file", 1, O_SECRET, "PATH",
     "require tokens (JWT HS256) signed with this secret\n"
     "(tokens without kid)"},
    {"key", 1, O_KEY, "KID:PATH",
     "a secret for tokens with this kid, repeatable; the first\n"
     "one mints (rotation: add the new key first, keep the old)"},
    {"legacy-tokens", 0, O_LEGACY, NULL,
     "also accept the earlier static tokens, hex\n"
     "HMAC-SHA256(secret-file, service) (migration only)"},
    {"print-token", 1, O_TOKEN, "NAME",
     "print a token for NAME and exit (needs a key)"},
    {"scope", 1, O_SCOPE, "SCOPES",
     "with --print-token: service, watch, admin or a list\n"
     "(default service)"},
    {"ttl", 1, O_TTL, "DURATION",
     "with --print-token: lifetime, e.g. 3600, 90m, 12h, 30d\n"
     "(default 30d)"},
    {"allow-origin", 1, O_ORIGIN, "ORIGIN",
     "a browser origin allowed besides the hub's own,\n"
     "repeatable (\"*\": any; SIGHUP reloads)"},
    {"allow-host", 1, O_HOST, "NAME",
     "a Host name accepted on a loopback listener besides\n"
     "localhost and IP literals, repeatable (SIGHUP reloads)"},
    {"metrics-token", 0, O_METRICS_TOKEN, NULL,
     "/metrics needs a token too (default open)"},
    {"insecure", 0, O_INSECURE, NULL,
     "allow a non-loopback listener without TLS and a secret"},
    {"max-unauth-per-peer", 1, O_UNAUTH, "N",
     "connections one address may hold before HELLO\n"
     "(default 64; 0: no limit)"},
    {"conn-rate", 1, O_CRATE, "N",
     "new connections per second one address may open,\n"
     "beyond its burst; the rest are closed at once, before\n"
     "any TLS handshake (default 50; 0: no limit)"},
    {"conn-burst", 1, O_CBURST, "N",
     "new connections one address may open at once\n"
     "(default 200)"},
    {"conn-rate-loopback", 0, O_CRATE_LO, NULL,
     "apply --conn-rate to loopback addresses too (exempt\n"
     "by default: a local proxy's clients share its address)"},
    {"replace-stale", 0, O_REPLACE, NULL,
     "a new connection may take the name of a stale one"},
    {"log-level", 1, O_LEVEL, "LEVEL",
     "debug, info, warn, error, silent (default info)"},
    {"store", 1, O_STORE, "PATH",
     "SQLite log store for /api/logs\n(default ./microstream-logs.db)"},
    {"no-store", 0, O_NOSTORE, NULL,
     "keep no log store (/api/logs answers 503)"},
    {"retention-days", 1, O_RDAYS, "N",
     "delete stored records older than N days (7; 0 keeps;\n"
     "SIGHUP reloads)"},
    {"retention-rows", 1, O_RROWS, "N",
     "keep at most N stored records (1000000; 0: no limit;\n"
     "SIGHUP reloads)"},
    {"cluster", 1, O_CLUSTER, "URL",
     "act as one hub with the others on this Redis:\n"
     "redis://[:PASSWORD@]HOST:PORT[/DB], rediss:// for TLS\n"
     "(README \"Cluster\")"},
    {"cluster-ca", 1, O_CCA, "FILE",
     "rediss://: trust only this CA (PEM; default: the\n"
     "system's); the certificate must name HOST"},
    {"cluster-cert", 1, O_CCERT, "FILE",
     "rediss://: a client certificate (PEM) for Redis"},
    {"cluster-key", 1, O_CKEY, "FILE", "its private key (PEM)"},
    {"cluster-classic-pubsub", 0, O_CCLASSIC, NULL,
     "plain PUBLISH/SUBSCRIBE between hubs even where Redis\n"
     "has sharded pub/sub"},
    {"cluster-prefix", 1, O_CPREFIX, "NAME",
     "keys and channels of this cluster (microstream)"},
    {"cluster-password-file", 1, O_CPASS, "PATH",
     "the Redis password, read from a file"},
    {"cluster-lease-ms", 1, O_CLEASE, "N",
     "a vanished hub's names free up and its requests\n"
     "fail within N ms (default 3000)"},
    {"config", 1, O_CONFIG, "PATH",
     "read options from PATH first (key = value lines, keys\n"
     "named as these options; the command line wins)"},
    {"version", 0, O_VERSION, NULL, "print the version"},
    {"help", 0, O_HELP, NULL, "this text"},
};
#define N_OPTS (sizeof hub_opts / sizeof hub_opts[0])

static void usage(FILE *f) {
  fprintf(f, "usage: microstream-hub [options]\n"
             "Serves microstream services at /ws, Node MicroStream (Socket.IO)\n"
             "services at /socket.io/, the live log page at /, /healthz,\n"
             "/metrics, /api/services and /api/logs.\n");
  for (size_t i = 0; i < N_OPTS; i++) {
    const hub_opt *o = &hub_opts[i];
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "",
             o->arg ? o->arg : "");
    fprintf(f, "  %-24s ", left);
    for (const char *p = o->help; *p; p++) {
      fputc(*p, f);
      if (*p == '\n')
        fprintf(f, "  %-24s ", "");
    }
    fputc('\n', f);
  }
}

/* "3600", "90m", "12h", "30d" -> seconds; -1 if bad. */
static long long parse_duration(const char *s) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || v <= 0)
    return -1;
  long long mul = 1;
  if (*end == 's') mul = 1, end++;
  else if (*end == 'm') mul = 60, end++;
  else if (*end == 'h') mul = 3600, end++;
  else if (*end == 'd') mul = 86400, end++;
  if (*end || v > 100LL * 365 * 86400 / mul)
    return -1;
  return v * mul;
}

#define MAX_LIST 16

typedef struct key_file {
  char kid[65];
  const char *path;
} key_file;

typedef struct hub_args {
  const char *listen[MAX_LIST];
  size_t nlisten;
  const char *secret_file;
  const char *tls_cert, *tls_key, *tls_ca;
  long long tls_hs_ms;
  key_file keys[MAX_LIST];
  size_t nkeys;
  const char *print_token, *scope;
  long long ttl_s;
  const char *origins[MAX_LIST];
  size_t norigins;
  const char *hosts[MAX_LIST];
  size_t nhosts;
  int insecure;
  const char *store_path;
  int no_store;
  long long retention_days, retention_rows;
  /* The command line after a configuration file: a list option given
   * there replaces the file's list (bit per list) instead of adding. */
  int after_file;
  unsigned replaced;
  ms_cluster_config cluster;
  const char *cluster_pass_file;
  const char *cluster_ca, *cluster_cert, *cluster_key;
} hub_args;

enum { LIST_LISTEN = 1, LIST_KEY = 2, LIST_ORIGIN = 4, LIST_HOST = 8 };

/* First use of a list option on the command line after a file. */
static void list_from_cmdline(hub_args *ar, unsigned bit, size_t *n) {
  if (ar->after_file && !(ar->replaced & bit)) {
    ar->replaced |= bit;
    *n = 0;
  }
}

static void long_options(struct option *lo) {
  for (size_t i = 0; i < N_OPTS; i++) {
    lo[i].name = hub_opts[i].name;
    lo[i].has_arg = hub_opts[i].has_arg ? required_argument : no_argument;
    lo[i].flag = NULL;
    lo[i].val = hub_opts[i].id;
  }
  memset(&lo[N_OPTS], 0, sizeof lo[N_OPTS]);
}

/* A whole number in [lo, hi] for a numeric option, or -1 after saying
 * which option was wrong. */
static int num_opt(const char *opt, long long lo, long long hi,
                   long long *out) {
  return tool_parse_num("microstream-hub", opt, optarg, lo, hi, out);
}

static int add_list(const char **v, size_t *n, const char *s,
                    const char *what) {
  if (*n >= MAX_LIST) {
    fprintf(stderr, "microstream-hub: at most %d %s\n", MAX_LIST, what);
    return -1;
  }
  v[(*n)++] = s;
  return 0;
}

/* Returns -1 to continue, else the exit status. */
static int parse_args(int argc, char **argv, hub_args *ar, ms_hub_config *cfg,
                      app *a) {
  struct option lo[N_OPTS + 1];
  long_options(lo);
  long long v;
  int ch;
  while ((ch = getopt_long(argc, argv, "l:h", lo, NULL)) != -1) {
    switch (ch) {
    case O_CONFIG: break; /* read before the command line */
    case O_LISTEN:
      list_from_cmdline(ar, LIST_LISTEN, &ar->nlisten);
      if (add_list(ar->listen, &ar->nlisten, optarg, "--listen"))
        return 2;
      break;
    case O_HB:
      if (num_opt("--heartbeat-ms", 1, 86400000, &v))
        return 2;
      cfg->heartbeat_ms = v;
      break;
    case O_MAXMSG:
      if (num_opt("--max-message", 64, 1LL << 31, &v))
        return 2;
      cfg->max_message = (size_t)v;
      break;
    case O_MAXPEND:
      if (num_opt("--max-pending", 1, 1000000000, &v))
        return 2;
      cfg->max_pending = (size_t)v;
      break;
    case O_DEFTO:
      if (num_opt("--default-timeout-ms", 1, 86400000, &v))
        return 2;
      cfg->default_timeout_ms = v;
      break;
    case O_LATE:
      if (num_opt("--max-late-ms", 0, 86400000, &v))
        return 2;
      cfg->max_late_ms = v;
      break;
    case O_SIOMAX:
      if (num_opt("--max-socketio-sessions", 1, 10000000, &v))
        return 2;
      cfg->sio_max_sessions = (size_t)v;
      break;
    case O_SECRET: ar->secret_file = optarg; break;
    case O_TLS_CERT: ar->tls_cert = optarg; break;
    case O_TLS_KEY: ar->tls_key = optarg; break;
    case O_TLS_CA: ar->tls_ca = optarg; break;
    case O_TLS_HS:
      if (num_opt("--tls-handshake-ms", 1, 3600000, &v))
        return 2;
      ar->tls_hs_ms = v;
      break;
    case O_KEY: {
      list_from_cmdline(ar, LIST_KEY, &ar->nkeys);
      const char *colon = strchr(optarg, ':');
      if (!colon || colon == optarg || colon - optarg > 64 || !colon[1] ||
          ar->nkeys >= MAX_LIST) {
        fprintf(stderr, "microstream-hub: bad --key '%s' (KID:PATH)\n",
                optarg);
        return 2;
      }
      key_file *k = &ar->keys[ar->nkeys++];
      memcpy(k->kid, optarg, (size_t)(colon - optarg));
      k->kid[colon - optarg] = '\0';
      k->path = colon + 1;
      break;
    }
    case O_LEGACY: cfg->legacy_tokens = 1; break;
    case O_REPLACE: cfg->replace_stale = 1; break;
    case O_TOKEN: ar->print_token = optarg; break;
    case O_SCOPE: ar->scope = optarg; break;
    case O_TTL:
      ar->ttl_s = parse_duration(optarg);
      if (ar->ttl_s < 0) {
        fprintf(stderr, "microstream-hub: bad --ttl '%s'\n", optarg);
        return 2;
      }
      break;
    case O_ORIGIN:
      list_from_cmdline(ar, LIST_ORIGIN, &ar->norigins);
      if (add_list(ar->origins, &ar->norigins, optarg, "--allow-origin"))
        return 2;
      break;
    case O_HOST:
      list_from_cmdline(ar, LIST_HOST, &ar->nhosts);
      if (add_list(ar->hosts, &ar->nhosts, optarg, "--allow-host"))
        return 2;
      break;
    case O_METRICS_TOKEN: cfg->metrics_need_token = 1; break;
    case O_INSECURE: ar->insecure = 1; break;
    case O_UNAUTH:
      if (num_opt("--max-unauth-per-peer", 0, 1000000000, &v))
        return 2;
      cfg->max_unauth_per_peer = (size_t)v;
      break;
    case O_CRATE:
      if (num_opt("--conn-rate", 0, 1000000, &v))
        return 2;
      cfg->conn_rate = (uint32_t)v;
      break;
    case O_CBURST:
      if (num_opt("--conn-burst", 1, 1000000, &v))
        return 2;
      cfg->conn_burst = (uint32_t)v;
      break;
    case O_CRATE_LO: cfg->conn_rate_loopback = 1; break;
    case O_STORE: ar->store_path = optarg; break;
    case O_NOSTORE: ar->no_store = 1; break;
    case O_RDAYS:
      if (num_opt("--retention-days", 0, 365000, &ar->retention_days))
        return 2;
      break;
    case O_RROWS:
      if (num_opt("--retention-rows", 0, 1LL << 62, &ar->retention_rows))
        return 2;
      break;
    case O_CLUSTER: ar->cluster.url = optarg; break;
    case O_CPREFIX: ar->cluster.prefix = optarg; break;
    case O_CPASS: ar->cluster_pass_file = optarg; break;
    case O_CCA: ar->cluster_ca = optarg; break;
    case O_CCERT: ar->cluster_cert = optarg; break;
    case O_CKEY: ar->cluster_key = optarg; break;
    case O_CCLASSIC: ar->cluster.classic_pubsub = 1; break;
    case O_CLEASE: {
      long long lease;
      if (num_opt("--cluster-lease-ms", 300, 3600000, &lease))
        return 2;
      ar->cluster.lease_ms = lease;
      break;
    }
    case O_LEVEL:
      a->log_level = parse_level(optarg);
      if (a->log_level < 0) {
        fprintf(stderr, "microstream-hub: bad --log-level '%s'\n", optarg);
        return 2;
      }
      break;
    case O_VERSION: printf("microstream-hub %s\n", MS_VERSION_STRING); return 0;
    case O_HELP: usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "microstream-hub: unexpected argument '%s'\n",
            argv[optind]);
    return 2;
  }
  if (cfg->heartbeat_ms <= 0 || cfg->max_message < 64 ||
      cfg->max_pending < 1 || ar->retention_days < 0 ||
      ar->retention_days > 365000 || ar->retention_rows < 0) {
    fprintf(stderr, "microstream-hub: bad numeric option\n");
    return 2;
  }
  if (!ar->nlisten)
    ar->listen[ar->nlisten++] =
        ar->tls_cert ? "tls://127.0.0.1:7400" : "127.0.0.1:7400";
  if (!ar->tls_cert != !ar->tls_key) {
    fprintf(stderr, "microstream-hub: --tls-cert and --tls-key go together\n");
    return 2;
  }
  return -1;
}

/* --config PATH (or --config=PATH) on the command line, or NULL. */
static const char *config_arg(int argc, char **argv) {
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--"))
      break;
    if (!strcmp(argv[i], "--config") && i + 1 < argc)
      path = argv[++i];
    else if (!strncmp(argv[i], "--config=", 9))
      path = argv[i] + 9;
  }
  return path;
}

static void args_defaults(hub_args *ar) {
  memset(ar, 0, sizeof *ar);
  ar->store_path = "./microstream-logs.db";
  ar->retention_days = 7;
  ar->retention_rows = 1000000;
  ar->ttl_s = 30 * 86400;
  ar->scope = "service";
  ms_cluster_config_init(&ar->cluster);
}

/* Keys a configuration file may not hold: one-shot actions. */
static const char *const file_refused[] = {
    "config", "help", "version", "print-token", "scope", "ttl", NULL};

/* The configuration file (if any) then the command line into ar, cfg and
 * a->log_level. The file's strings stay in *fa. Returns -1 to go on, else
 * the exit status. */
static int load_args(app *a, const char *config_path, int argc, char **argv,
                     hub_args *ar, ms_hub_config *cfg, hub_config_args *fa) {
  memset(fa, 0, sizeof *fa);
  if (config_path) {
    struct option lo[N_OPTS + 1];
    long_options(lo);
    char err[600];
    if (hub_config_read(config_path, lo, file_refused, fa, err, sizeof err)) {
      fprintf(stderr, "microstream-hub: %s\n", err);
      return 2;
    }
    optind = 0; /* glibc: start over */
    int st = parse_args(fa->argc, fa->argv, ar, cfg, a);
    if (st >= 0)
      return st;
    ar->after_file = 1;
  }
  optind = 0;
  return parse_args(argc, argv, ar, cfg, a);
}

/* Secrets from their files: the --key ones first (the first mints), then
 * --secret-file as the key without kid. */
typedef struct key_set {
  ms_token_key keys[MAX_LIST + 1];
  uint8_t *bufs[MAX_LIST + 1];
  size_t n;
} key_set;

static void key_set_free(key_set *ks) {
  for (size_t i = 0; i < ks->n; i++)
    free(ks->bufs[i]);
  ks->n = 0;
}

static int key_set_load(key_set *ks, const hub_args *ar) {
  memset(ks, 0, sizeof *ks);
  for (size_t i = 0; i <= ar->nkeys; i++) {
    const char *path = i < ar->nkeys ? ar->keys[i].path : ar->secret_file;
    if (!path)
      continue;
    size_t len;
    if (read_secret(path, &ks->bufs[ks->n], &len) != 0) {
      fprintf(stderr, "microstream-hub: cannot read a secret from %s: %s\n",
              path, errno ? strerror(errno) : "the file is empty");
      key_set_free(ks);
      return -1;
    }
    ks->keys[ks->n].kid = i < ar->nkeys ? ar->keys[i].kid : NULL;
    ks->keys[ks->n].secret = ks->bufs[ks->n];
    ks->keys[ks->n].secret_len = len;
    ks->n++;
  }
  return 0;
}

static int is_loopback(const char *host) {
  return !strcmp(host, "localhost") || !strncmp(host, "127.", 4) ||
         !strcmp(host, "::1");
}

/* SIGHUP, with a configuration file: read it (and the command line) again
 * and take what can change while running: the log level, the key files,
 * the allowed origins and hosts and the store retention. A file that does
 * not parse changes nothing. */
static void reload_config(app *a) {
  hub_args *ar = malloc(sizeof *ar);
  if (!ar)
    return;
  args_defaults(ar);
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  hub_config_args fa;
  int level = a->log_level;
  a->log_level = MS_LEVEL_INFO; /* unless the file or command line says */
  int st = load_args(a, a->config_path, a->argc, a->argv, ar, &cfg, &fa);
  if (st >= 0) {
    a->log_level = level;
    logf_(a, MS_LEVEL_WARN, "SIGHUP: %s not reloaded (see above); keeping "
                            "the running configuration", a->config_path);
    free(ar);
    hub_config_free(&fa);
    return;
  }
  if (ms_hub_set_access_lists(a->hub, ar->origins, ar->norigins, ar->hosts,
                              ar->nhosts) != 0) {
    a->log_level = level;
    logf_(a, MS_LEVEL_WARN, "SIGHUP: out of memory; keeping the running "
                            "configuration");
    free(ar);
    hub_config_free(&fa);
    return;
  }
  if (a->store)
    ms_store_set_retention(a->store, (int64_t)ar->retention_days * 86400,
                           ar->retention_rows);
  if (a->reloaded) {
    free(a->reloaded);
    hub_config_free(&a->reloaded_file);
  }
  a->reloaded = ar;
  a->reloaded_file = fa;
  a->args = ar;
  logf_(a, MS_LEVEL_INFO,
        "SIGHUP: %s read again; log level %s, %zu allowed origin(s), %zu "
        "allowed host(s), retention %lld day(s) %lld row(s) (listen, store "
        "path, TLS options other than the files and limits take effect at "
        "the next start)",
        a->config_path, level_name(a->log_level), ar->norigins, ar->nhosts,
        ar->retention_days, ar->retention_rows);
}

/* SIGHUP: read the key files again (secret rotation). Sessions keep
 * running; a file that cannot be read keeps the old keys. */
static void reload(app *a) {
  if (a->config_path)
    reload_config(a);
  key_set ks;
  if (a->tls) {
    char err[300] = "";
    if (ms_tls_reload(a->tls, a->args->tls_cert, a->args->tls_key,
                      a->args->tls_ca, err, sizeof err) == 0)
      logf_(a, MS_LEVEL_INFO, "SIGHUP: TLS certificate reloaded");
    else
      logf_(a, MS_LEVEL_WARN, "SIGHUP: keeping the old certificate: %s", err);
  }
  if (!a->keys->n) {
    logf_(a, MS_LEVEL_INFO, "SIGHUP: no keys to reload");
    return;
  }
  if (key_set_load(&ks, a->args) != 0) {
    logf_(a, MS_LEVEL_WARN, "SIGHUP: keeping the old keys");
    return;
  }
  if (ms_hub_set_keys(a->hub, ks.keys, ks.n) == 0) {
    key_set_free(a->keys);
    *a->keys = ks;
    logf_(a, MS_LEVEL_INFO, "SIGHUP: %zu key(s) reloaded", ks.n);
  } else {
    key_set_free(&ks);
    logf_(a, MS_LEVEL_WARN, "SIGHUP: out of memory, keeping the old keys");
  }
}

/* The configuration file's strings live until exit (options point into
 * them). */
static hub_config_args g_file_args;
static void free_file_args(void) { hub_config_free(&g_file_args); }

/* The cluster joined or left (or an attempt failed, with its reason). */
static void on_cluster_state(void *ud, int up, const char *why) {
  app *a = ud;
  if (up)
    logf_(a, MS_LEVEL_INFO, "cluster: joined");
  else
    logf_(a, MS_LEVEL_WARN, "cluster: unavailable: %s", why ? why : "?");
}

int main(int argc, char **argv) {
  app a;
  memset(&a, 0, sizeof a);
  a.log_level = MS_LEVEL_INFO;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  hub_args ar;
  args_defaults(&ar);
  hub_config_args *fa = &g_file_args;
  atexit(free_file_args);
  a.config_path = config_arg(argc, argv);
  a.argc = argc;
  a.argv = argv;
  int st = load_args(&a, a.config_path, argc, argv, &ar, &cfg, fa);
  if (st >= 0)
    return st;
  char cpass[4097];
  if (ar.cluster_pass_file) {
    FILE *f = fopen(ar.cluster_pass_file, "rb");
    size_t n = f ? fread(cpass, 1, sizeof cpass - 1, f) : 0;
    if (f)
      fclose(f);
    while (n > 0 && (cpass[n - 1] == '\n' || cpass[n - 1] == '\r'))
      n--;
    if (!n) {
      fprintf(stderr, "microstream-hub: cannot read a password from %s\n",
              ar.cluster_pass_file);
      return 2;
    }
    cpass[n] = '\0';
    ar.cluster.password = cpass;
  }
  if (ar.cluster.url && !ms_cluster_available()) {
    fprintf(stderr, "microstream-hub: --cluster: this build has no cluster "
                    "support (hiredis was not found)\n");
    return 2;
  }
  const char *store_path = ar.store_path;
  int no_store = ar.no_store;
  long long retention_days = ar.retention_days,
            retention_rows = ar.retention_rows;
  key_set ks;
  if (key_set_load(&ks, &ar) != 0)
    return 2;
  a.args = &ar;
  a.keys = &ks;
  if (ar.print_token) {
    unsigned scopes = ms_token_parse_scopes(ar.scope);
    char tok[MS_TOKEN_MAX];
    int rv = MS_ERR_INVALID_ARG;
    if (!ks.n)
      fprintf(stderr, "microstream-hub: --print-token needs --key or "
                      "--secret-file\n");
    else if (!scopes)
      fprintf(stderr, "microstream-hub: bad --scope '%s' (service, watch, "
                      "admin)\n", ar.scope);
    else {
      int64_t now_s = ms_wall_us() / 1000000;
      rv = ms_token_mint(&ks.keys[0], ar.print_token, scopes, now_s,
                         now_s + ar.ttl_s, tok, sizeof tok);
      if (rv == 0)
        printf("%s\n", tok);
      else
        fprintf(stderr, "microstream-hub: cannot mint a token for '%s': %s\n",
                ar.print_token, ms_strerror(rv));
    }
    key_set_free(&ks);
    return rv == 0 ? 0 : 2;
  }
  if (cfg.legacy_tokens && !ar.secret_file) {
    fprintf(stderr, "microstream-hub: --legacy-tokens needs --secret-file\n");
    return 2;
  }
  /* Where the secret file is the only key it is also the legacy secret. */
  for (size_t i = 0; i < ks.n; i++)
    if (!ks.keys[i].kid) {
      cfg.secret = ks.keys[i].secret;
      cfg.secret_len = ks.keys[i].secret_len;
    }
  cfg.keys = ks.keys;
  cfg.nkeys = ks.n - (cfg.secret_len ? 1 : 0); /* the kid-less one last */
  cfg.allow_origins = ar.origins;
  cfg.nallow_origins = ar.norigins;
  cfg.allow_hosts = ar.hosts;
  cfg.nallow_hosts = ar.nhosts;
  cfg.wallclock_us = wallclock;
  cfg.on_event = on_hub_event;
  cfg.on_http = on_hub_http;
  cfg.on_record = on_hub_record;
  cfg.on_metrics = on_hub_metrics;
  a.started_s = (double)ms_wall_us() / 1e6;

  ms_url urls[MAX_LIST];
  int tls_on[MAX_LIST], any_tls = 0;
  int all_loopback = 1;
  for (size_t i = 0; i < ar.nlisten; i++) {
    const char *l = ar.listen[i];
    tls_on[i] = strncmp(l, "tls://", 6) == 0;
    if (ms_url_parse(tls_on[i] ? l + 6 : l, &urls[i]) != 0 || urls[i].tls) {
      fprintf(stderr, "microstream-hub: bad --listen '%s'\n", l);
      return 2;
    }
    any_tls |= tls_on[i];
    if (tls_on[i] && !ar.tls_cert) {
      fprintf(stderr, "microstream-hub: --listen %s needs --tls-cert and "
                      "--tls-key\n", l);
      return 2;
    }
    if (!is_loopback(urls[i].host)) {
      all_loopback = 0;
      if (!ar.insecure && !(tls_on[i] && ks.n)) {
        fprintf(stderr,
                "microstream-hub: refusing to listen on %s without TLS and a "
                "secret (anyone who can reach it could read every log and "
                "take any name); give --tls-cert, --tls-key and "
                "--secret-file, or --insecure\n",
                ar.listen[i]);
        return 2;
      }
    }
  }
  /* Loopback only: a browser page on another site must not reach the hub
   * through a name that resolves to 127.0.0.1 (DNS rebinding). */
  cfg.check_host = all_loopback;
  if (ar.tls_cert && !any_tls) {
    fprintf(stderr, "microstream-hub: --tls-cert given but no tls:// "
                    "listener\n");
    return 2;
  }
  ms_tls *tls = NULL;
  if (any_tls) {
    char err[300] = "";
    if (ms_tls_server_new(&tls, ar.tls_cert, ar.tls_key, ar.tls_ca, err,
                          sizeof err) != 0) {
      fprintf(stderr, "microstream-hub: %s\n", err[0] ? err : "TLS setup failed");
      return 2;
    }
  }
  a.tls = tls;
#ifdef MS_HAVE_TLS
  if (tls && ar.tls_hs_ms > 0)
    ms_tls_set_handshake_timeout(tls, ar.tls_hs_ms);
#endif
  if (!no_store) {
    ms_store_options so;
    ms_store_options_init(&so);
    so.max_age_s = (int64_t)retention_days * 86400;
    so.max_rows = retention_rows;
    char err[512];
    a.store_path = store_path;
    if (ms_store_open(&a.store, store_path, &so, err, sizeof err) != 0) {
      fprintf(stderr, "microstream-hub: cannot open the log store %s\n", err);
      return 1;
    }
  }
  int sfd = tool_signal_fd(SIGHUP);

  int rv = ms_loop_new(&a.loop, NULL);
  if (rv == 0)
    rv = ms_hub_new(&a.hub, &cfg, &a, NULL);
  if (rv == 0)
    rv = ms_posix_hub_new(&a.ph, a.loop, a.hub, NULL, 0);
  int ports[MAX_LIST];
  for (size_t i = 0; rv == 0 && i < ar.nlisten; i++) {
    rv = tls_on[i] ? ms_posix_hub_listen_tls(a.ph, urls[i].host, urls[i].port,
                                             ms_tls_wrap(tls), &ports[i])
                   : ms_posix_hub_listen(a.ph, urls[i].host, urls[i].port,
                                         &ports[i]);
    if (rv != 0)
      explain_listen_failure(urls[i].host, urls[i].port, rv);
  }
  if (rv != 0) {
    if (!a.ph)
      fprintf(stderr, "microstream-hub: cannot start: %s\n", ms_strerror(rv));
    ms_store_close(a.store);
    return 1;
  }
  ms_tls *ctls = NULL;
  if (ar.cluster.url && strncmp(ar.cluster.url, "rediss://", 9) == 0) {
    char err[300] = "";
    if (!ar.cluster_cert != !ar.cluster_key) {
      fprintf(stderr, "microstream-hub: --cluster-cert and --cluster-key go "
                      "together\n");
      rv = MS_ERR_INVALID_ARG;
    } else if (ms_tls_client_new(&ctls, ar.cluster_ca, ar.cluster_cert,
                                 ar.cluster_key, err, sizeof err) != 0) {
      fprintf(stderr, "microstream-hub: --cluster: %s\n",
              err[0] ? err : "TLS setup failed");
      rv = MS_ERR_INVALID_ARG;
    }
    ar.cluster.tls = ms_tls_wrap(ctls);
  } else if (ar.cluster.url &&
             (ar.cluster_ca || ar.cluster_cert || ar.cluster_key)) {
    fprintf(stderr, "microstream-hub: --cluster-ca, --cluster-cert and "
                    "--cluster-key need a rediss:// URL\n");
    rv = MS_ERR_INVALID_ARG;
  }
  if (ar.cluster.url && rv != 0) {
    ms_tls_del(ctls);
    ms_posix_hub_del(a.ph);
    ms_hub_del(a.hub);
    ms_loop_del(a.loop);
    ms_store_close(a.store);
    key_set_free(&ks);
    return 2;
  }
  if (ar.cluster.url) {
    ar.cluster.on_state = on_cluster_state;
    ar.cluster.state_ud = &a;
    rv = ms_posix_hub_cluster(a.ph, &ar.cluster);
    if (rv != 0) {
      fprintf(stderr, "microstream-hub: bad --cluster '%s': %s\n",
              ar.cluster.url, ms_strerror(rv));
      ms_tls_del(ctls);
      ms_posix_hub_del(a.ph);
      ms_hub_del(a.hub);
      ms_loop_del(a.loop);
      ms_store_close(a.store);
      key_set_free(&ks);
      return 2;
    }
    const char *at = strchr(ar.cluster.url, '@'); /* no password in logs */
    int tls_url = ctls != NULL;
    logf_(&a, MS_LEVEL_INFO, "cluster: %s://%s (prefix %s)",
          tls_url ? "rediss" : "redis",
          at ? at + 1 : ar.cluster.url + (tls_url ? 9 : 8),
          ar.cluster.prefix);
  }
  ms_loop_watch(a.loop, sfd, MS_EV_READ, on_signal, &a);
  ms_timer *store_timer = NULL;
  if (a.store)
    ms_loop_timer_start(a.loop, STORE_FLUSH_MS, STORE_FLUSH_MS, on_store_timer,
                        &a, &store_timer);
  ms_timer *trim_timer = NULL;
  ms_loop_timer_start(a.loop, 2000, 2000, on_trim_timer, &a, &trim_timer);
  for (size_t i = 0; i < ar.nlisten; i++) {
    int v6 = strchr(urls[i].host, ':') != NULL;
    logf_(&a, MS_LEVEL_INFO, "listening on %s%s%s%s:%d (hub id %s)%s",
          tls_on[i] ? "tls://" : "", v6 ? "[" : "", urls[i].host,
          v6 ? "]" : "", ports[i], ms_hub_id(a.hub),
          ks.n ? "" : ", no tokens required");
    /* Machine-readable line for scripts that start the hub on port 0. */
    printf("listening on %s%s%s%s:%d\n", tls_on[i] ? "tls://" : "",
           v6 ? "[" : "", urls[i].host, v6 ? "]" : "", ports[i]);
  }
  fflush(stdout);

  rv = ms_loop_run(a.loop);
  ms_timer_stop(trim_timer);
  ms_timer_stop(store_timer);
  if (a.store) {
    store_flush(&a);
    ms_store_stats ss;
    ms_store_get_stats(a.store, &ss);
    logf_(&a, MS_LEVEL_INFO,
          "log store: %llu records written, %llu dropped, %llu deleted by "
          "retention",
          (unsigned long long)ss.written, (unsigned long long)ss.dropped,
          (unsigned long long)ss.deleted);
    ms_store_close(a.store);
    a.store = NULL;
  }
  logf_(&a, MS_LEVEL_INFO, "stopped");
  ms_loop_watch(a.loop, sfd, 0, NULL, NULL);
  close(sfd);
  ms_posix_hub_del(a.ph);
  ms_hub_del(a.hub);
  ms_loop_del(a.loop);
  ms_tls_del(tls);
  ms_tls_del(ctls);
  key_set_free(&ks);
  if (a.reloaded) {
    free(a.reloaded);
    hub_config_free(&a.reloaded_file);
  }
  return rv == 0 ? 0 : 1;
}
