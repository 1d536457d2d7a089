/* microstream-hub: the hub server. WebSocket at /ws, /healthz, /metrics,
 * /api/services, /api/logs (the SQLite log store); SIGINT/SIGTERM close
 * every connection with 4050, flush the store and exit 0. */
#include <microstream/ms_posix.h>

#include "tool_common.h"

#include "ms_store.h"

#include <errno.h>
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
  int store_failing; /* the last flush failed: log once, not every tick */
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

static void store_flush(app *a) {
  int rv = ms_store_flush(a->store);
  if (rv != 0 && !a->store_failing)
    logf_(a, MS_LEVEL_WARN, "log store: flush failed (%zu records waiting)",
          ms_store_pending(a->store));
  else if (rv == 0 && a->store_failing)
    logf_(a, MS_LEVEL_INFO, "log store: writing again");
  a->store_failing = rv != 0;
}

static void on_store_timer(ms_loop *loop, ms_timer *t, void *ud) {
  (void)loop;
  (void)t;
  store_flush(ud);
}

static void on_hub_record(ms_hub *h, const ms_hub_record *rec, void *ud) {
  app *a = ud;
  if (!a->store)
    return;
  ms_store_add(a->store, ms_hub_id(h), rec);
  /* While the file is failing (locked, disk full) only the timer retries:
   * a retry per record would stall routing on the busy wait. */
  if (ms_store_pending(a->store) >= STORE_FLUSH_BATCH && !a->store_failing)
    store_flush(a);
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
  /* Let a query see what was logged a moment ago. */
  store_flush(a);
  ms_buf out;
  memset(&out, 0, sizeof out);
  int rv = ms_store_query_json(a->store, &q, &out);
  if (rv == 0)
    ms_conn_http_respond(c, 200, "application/json",
                         "Cache-Control: no-cache\r\n", out.data, out.len);
  else
    respond_json_error(c, rv == MS_ERR_NOMEM ? 500 : 503,
                       rv == MS_ERR_NOMEM ? "out of memory"
                                          : "store query failed");
  ms_buf_free(&out);
  free(scratch);
  return 0;
}

static void check_done(ms_loop *loop, ms_timer *t, void *ud) {
  app *a = ud;
  (void)t;
  if (ms_posix_hub_streams(a->ph) == 0 || ms_loop_now(loop) >= a->stop_deadline)
    ms_loop_stop(loop);
}

static void on_signal(ms_loop *loop, int fd, unsigned events, void *ud) {
  app *a = ud;
  (void)events;
  struct signalfd_siginfo si;
  while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (a->stopping)
      continue;
    a->stopping = 1;
    logf_(a, MS_LEVEL_INFO, "signal %u: shutting down", si.ssi_signo);
    ms_posix_hub_stop_listening(a->ph);
    ms_hub_shutdown(a->hub, ms_loop_now(loop));
    a->stop_deadline = ms_loop_now(loop) + 2000;
    ms_loop_timer_start(loop, 0, 20, check_done, a, NULL);
  }
}

static int read_secret(const char *path, uint8_t **out, size_t *len) {
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

static void usage(FILE *f) {
  fprintf(f,
          "usage: microstream-hub [options]\n"
          "  --listen HOST:PORT     address to listen on (default 127.0.0.1:7400;\n"
          "                         port 0 picks a free port)\n"
          "  --heartbeat-ms N       liveness interval (default 10000)\n"
          "  --max-message BYTES    largest message (default 1048576)\n"
          "  --max-pending N        requests in flight per connection (default 1024)\n"
          "  --default-timeout-ms N request timeout when the caller gives none (5000)\n"
          "  --max-late-ms N        longest late-response window (default 30000)\n"
          "  --secret-file PATH     require tokens: HMAC-SHA256(secret, service) in hex\n"
          "  --replace-stale        a new connection may take the name of a stale one\n"
          "  --log-level LEVEL      debug, info, warn, error, silent (default info)\n"
          "  --print-token SERVICE  print the token for SERVICE (needs --secret-file)\n"
          "  --store PATH           SQLite log store for /api/logs\n"
          "                         (default ./microstream-logs.db)\n"
          "  --no-store             keep no log store (/api/logs answers 503)\n"
          "  --retention-days N     delete stored records older than N days (7;\n"
          "                         0 keeps them)\n"
          "  --retention-rows N     keep at most N stored records (1000000;\n"
          "                         0: no limit)\n"
          "  --version, --help\n");
}

int main(int argc, char **argv) {
  app a;
  memset(&a, 0, sizeof a);
  a.log_level = MS_LEVEL_INFO;
  ms_hub_config cfg;
  ms_hub_config_init(&cfg);
  const char *listen = "127.0.0.1:7400";
  const char *secret_file = NULL, *print_token = NULL;
  const char *store_path = "./microstream-logs.db";
  int no_store = 0;
  long long retention_days = 7, retention_rows = 1000000;
  enum { O_HB = 256, O_MAXMSG, O_MAXPEND, O_SECRET, O_LEVEL, O_DEFTO, O_LATE,
         O_REPLACE, O_TOKEN, O_VERSION, O_STORE, O_NOSTORE, O_RDAYS, O_RROWS };
  static const struct option opts[] = {
      {"listen", required_argument, NULL, 'l'},
      {"heartbeat-ms", required_argument, NULL, O_HB},
      {"max-message", required_argument, NULL, O_MAXMSG},
      {"max-pending", required_argument, NULL, O_MAXPEND},
      {"default-timeout-ms", required_argument, NULL, O_DEFTO},
      {"max-late-ms", required_argument, NULL, O_LATE},
      {"secret-file", required_argument, NULL, O_SECRET},
      {"replace-stale", no_argument, NULL, O_REPLACE},
      {"log-level", required_argument, NULL, O_LEVEL},
      {"print-token", required_argument, NULL, O_TOKEN},
      {"store", required_argument, NULL, O_STORE},
      {"no-store", no_argument, NULL, O_NOSTORE},
      {"retention-days", required_argument, NULL, O_RDAYS},
      {"retention-rows", required_argument, NULL, O_RROWS},
      {"version", no_argument, NULL, O_VERSION},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "l:h", opts, NULL)) != -1) {
    switch (ch) {
    case 'l': listen = optarg; break;
    case O_HB: cfg.heartbeat_ms = atoll(optarg); break;
    case O_MAXMSG: cfg.max_message = (size_t)atoll(optarg); break;
    case O_MAXPEND: cfg.max_pending = (size_t)atoll(optarg); break;
    case O_DEFTO: cfg.default_timeout_ms = atoll(optarg); break;
    case O_LATE: cfg.max_late_ms = atoll(optarg); break;
    case O_SECRET: secret_file = optarg; break;
    case O_REPLACE: cfg.replace_stale = 1; break;
    case O_TOKEN: print_token = optarg; break;
    case O_STORE: store_path = optarg; break;
    case O_NOSTORE: no_store = 1; break;
    case O_RDAYS: retention_days = atoll(optarg); break;
    case O_RROWS: retention_rows = atoll(optarg); break;
    case O_LEVEL:
      a.log_level = parse_level(optarg);
      if (a.log_level < 0) {
        fprintf(stderr, "microstream-hub: bad --log-level '%s'\n", optarg);
        return 2;
      }
      break;
    case O_VERSION: printf("microstream-hub %s\n", MS_VERSION_STRING); return 0;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (cfg.heartbeat_ms <= 0 || cfg.max_message < 64 || cfg.max_pending < 1 ||
      retention_days < 0 || retention_days > 365000 || retention_rows < 0) {
    fprintf(stderr, "microstream-hub: bad numeric option\n");
    return 2;
  }
  uint8_t *secret = NULL;
  size_t secret_len = 0;
  if (secret_file && read_secret(secret_file, &secret, &secret_len) != 0) {
    fprintf(stderr, "microstream-hub: cannot read a secret from %s\n",
            secret_file);
    return 2;
  }
  if (print_token) {
    if (!secret) {
      fprintf(stderr, "microstream-hub: --print-token needs --secret-file\n");
      return 2;
    }
    char tok[65];
    ms_service_token(secret, secret_len, print_token, tok);
    printf("%s\n", tok);
    free(secret);
    return 0;
  }
  cfg.secret = secret;
  cfg.secret_len = secret_len;
  cfg.wallclock_us = wallclock;
  cfg.on_event = on_hub_event;
  cfg.on_http = on_hub_http;
  cfg.on_record = on_hub_record;

  ms_url url;
  if (ms_url_parse(listen, &url) != 0) {
    fprintf(stderr, "microstream-hub: bad --listen '%s'\n", listen);
    return 2;
  }
  if (!no_store) {
    ms_store_options so;
    ms_store_options_init(&so);
    so.max_age_s = (int64_t)retention_days * 86400;
    so.max_rows = retention_rows;
    char err[512];
    if (ms_store_open(&a.store, store_path, &so, err, sizeof err) != 0) {
      fprintf(stderr, "microstream-hub: cannot open the log store %s\n", err);
      return 1;
    }
  }
  int sfd = tool_signal_fd(0);

  int rv = ms_loop_new(&a.loop, NULL);
  if (rv == 0)
    rv = ms_hub_new(&a.hub, &cfg, &a, NULL);
  if (rv == 0)
    rv = ms_posix_hub_new(&a.ph, a.loop, a.hub, url.host, url.port);
  if (rv != 0) {
    fprintf(stderr, "microstream-hub: cannot listen on %s: %s\n", listen,
            ms_strerror(rv));
    ms_store_close(a.store);
    return 1;
  }
  ms_loop_watch(a.loop, sfd, MS_EV_READ, on_signal, &a);
  ms_timer *store_timer = NULL;
  if (a.store)
    ms_loop_timer_start(a.loop, STORE_FLUSH_MS, STORE_FLUSH_MS, on_store_timer,
                        &a, &store_timer);
  ms_timer *trim_timer = NULL;
  ms_loop_timer_start(a.loop, 2000, 2000, on_trim_timer, &a, &trim_timer);
  int port = ms_posix_hub_port(a.ph);
  int v6 = strchr(url.host, ':') != NULL;
  logf_(&a, MS_LEVEL_INFO, "listening on %s%s%s:%d (hub id %s)", v6 ? "[" : "",
        url.host, v6 ? "]" : "", port, ms_hub_id(a.hub));
  /* Machine-readable line for scripts that start the hub on port 0. */
  printf("listening on %s%s%s:%d\n", v6 ? "[" : "", url.host, v6 ? "]" : "",
         port);
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
  free(secret);
  return rv == 0 ? 0 : 1;
}
