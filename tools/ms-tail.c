/* ms-tail: print the hub's log records in a terminal.
 *   ms-tail [--hub URL] [--service S]... [--min-level L] [--contains T]
 *           [-n N] [-f] [--json] [--presence]
 * Without -f it prints the last N matching records (default 10) and exits;
 * with -f it keeps following, across hub restarts, without duplicates. */
#include <microstream/ms_log.h>
#include <microstream/ms_posix.h>

#include "tail_store.h"
#include "tool_common.h"

#include <fnmatch.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVICES 64

typedef struct tail {
  ms_loop *loop;
  int follow, json, color;
  int saw_live;
  int ever_ready, lost, exit_code;
  int64_t ready_at;
  /* --service patterns; with a glob among them the hub sends every
   * service and the patterns are matched here. */
  const char *patterns[MAX_SERVICES];
  size_t n_patterns;
  int glob;
  uint64_t printed;
  msgpack_sbuffer js;
  /* The newest record the store gave: the live history skips what it
   * already printed (same hub run, seq not newer). */
  char store_hub[64];
  uint64_t store_seq;
} tail;

static int service_wanted(const tail *t, const char *name, size_t len) {
  if (!t->glob)
    return 1; /* the hub filtered */
  char buf[256];
  if (len >= sizeof buf)
    return 0;
  memcpy(buf, name, len);
  buf[len] = 0;
  for (size_t i = 0; i < t->n_patterns; i++)
    if (fnmatch(t->patterns[i], buf, 0) == 0)
      return 1;
  return 0;
}

static void print_json_str(FILE *f, const char *s, size_t n) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_str_with_body(&pk, s, n);
  msgpack_sbuffer out;
  msgpack_sbuffer_init(&out);
  ms_msgpack_bytes_to_json((const uint8_t *)sb.data, sb.size, &out);
  fwrite(out.data, 1, out.size, f);
  msgpack_sbuffer_destroy(&out);
  msgpack_sbuffer_destroy(&sb);
}

/* The live page's colours: error red, warn amber, info blue, debug grey. */
static const char *level_color(int64_t level) {
  return level >= MS_LEVEL_ERROR ? "\033[31m"
         : level >= MS_LEVEL_WARN ? "\033[33m"
         : level >= MS_LEVEL_INFO ? "\033[94m"
                                  : "\033[90m";
}

/* The live page's time format: local HH:MM:SS.mmm, with the date in front
 * for a record from another day. */
static void format_time(int64_t ts_us, char *out, size_t cap) {
  time_t secs = (time_t)(ts_us / 1000000), now = time(NULL);
  struct tm tm, today;
  localtime_r(&secs, &tm);
  localtime_r(&now, &today);
  char tb[32];
  strftime(tb, sizeof tb,
           tm.tm_year == today.tm_year && tm.tm_yday == today.tm_yday
               ? "%H:%M:%S"
               : "%Y-%m-%d %H:%M:%S",
           &tm);
  snprintf(out, cap, "%s.%03d", tb, (int)((ts_us / 1000) % 1000));
}

static void print_record(tail *t, const ms_record *r) {
  FILE *f = stdout;
  if ((r->kind == MS_RECORD_LOG || r->kind == MS_RECORD_UP ||
       r->kind == MS_RECORD_DOWN) &&
      !service_wanted(t, r->service.ptr, r->service.len))
    return;
  if (r->kind == MS_RECORD_GAP) {
    if (t->json)
      fprintf(f, "{\"gap\":true,\"missed\":%llu,\"seq\":%llu}\n",
              (unsigned long long)r->missed, (unsigned long long)r->seq);
    else
      fprintf(f, "%s-- %llu records missed --%s\n", t->color ? "\033[35m" : "",
              (unsigned long long)r->missed, t->color ? "\033[0m" : "");
    fflush(f);
    return;
  }
  if (t->json) {
    fprintf(f, "{\"seq\":%llu,\"hub_id\":", (unsigned long long)r->seq);
    print_json_str(f, r->hub_id, strlen(r->hub_id));
    fprintf(f, ",\"ts_us\":%lld,", (long long)r->ts_us);
    if (r->kind == MS_RECORD_LOG) {
      fprintf(f, "\"level\":%lld,\"service\":", (long long)r->level);
      print_json_str(f, r->service.ptr, r->service.len);
      fputs(",\"message\":", f);
      print_json_str(f, r->message.ptr, r->message.len);
      fputs(",\"fields\":", f);
    } else {
      fprintf(f, "\"kind\":\"%s\",\"service\":",
              r->kind == MS_RECORD_UP ? "up" : "down");
      print_json_str(f, r->service.ptr, r->service.len);
      fputs(",\"detail\":", f);
    }
    t->js.size = 0;
    ms_msgpack_to_json(r->fields, &t->js);
    fwrite(t->js.data, 1, t->js.size, f);
    fputs("}\n", f);
  } else {
    char tb[48];
    format_time(r->ts_us, tb, sizeof tb);
    if (r->kind == MS_RECORD_LOG) {
      fprintf(f, "%s %s%-5s%s %.*s: %.*s", tb,
              t->color ? level_color(r->level) : "",
              ms_log_level_name((int)r->level), t->color ? "\033[0m" : "",
              (int)r->service.len, r->service.ptr, (int)r->message.len,
              r->message.ptr);
      if (r->fields && r->fields->type == MSGPACK_OBJECT_MAP &&
          r->fields->via.map.size > 0) {
        t->js.size = 0;
        ms_msgpack_to_json(r->fields, &t->js);
        fprintf(f, " %.*s", (int)t->js.size, t->js.data);
      }
      fputc('\n', f);
    } else {
      fprintf(f, "%s %s%s%s %.*s\n", tb,
              t->color ? "\033[36m" : "",
              r->kind == MS_RECORD_UP ? "up  " : "down",
              t->color ? "\033[0m" : "", (int)r->service.len, r->service.ptr);
    }
  }
  fflush(f);
  t->printed++;
}

static void on_record(ms_client *c, const ms_record *r, void *ud) {
  tail *t = ud;
  (void)c;
  if (r->kind == MS_RECORD_LIVE) {
    t->saw_live = 1;
    if (!t->follow)
      ms_loop_stop(t->loop);
    return;
  }
  if (r->kind == MS_RECORD_LOG && t->store_hub[0] && r->hub_id &&
      !strcmp(r->hub_id, t->store_hub) && r->seq <= t->store_seq)
    return; /* printed from the store already */
  print_record(t, r);
}

static void on_stored(const ms_record *r, void *ud) {
  tail *t = ud;
  if (r->kind == MS_RECORD_LOG && r->hub_id) {
    snprintf(t->store_hub, sizeof t->store_hub, "%s", r->hub_id);
    t->store_seq = r->seq;
  }
  print_record(t, r);
}

/* "1h", "30m", "90s", "2d" ago -> microseconds since the epoch; anything
 * else is passed to the hub as is (ISO 8601 or microseconds). */
static const char *time_arg(const char *s, char *buf, size_t cap) {
  char *end;
  long long v = strtoll(s, &end, 10);
  long long mul = 0;
  if (end != s && v >= 0 && end[0] && !end[1]) {
    if (*end == 's') mul = 1;
    else if (*end == 'm') mul = 60;
    else if (*end == 'h') mul = 3600;
    else if (*end == 'd') mul = 86400;
  }
  if (!mul || v > 100LL * 365 * 86400 / mul)
    return s;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long now_us = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
  snprintf(buf, cap, "%lld", now_us - v * mul * 1000000);
  return buf;
}

/* Fail fast until the first connection: a hub that is down or refuses us
 * ends the program with a clear message and a documented code. With -f,
 * once connected, losses are only reported (on stderr, never into the
 * stream being followed) while the client reconnects. */
static void on_state(ms_client *c, const ms_client_state_arg *st, void *ud) {
  tail *t = ud;
  (void)c;
  if (st->state == MS_CLIENT_READY) {
    if (t->lost)
      fprintf(stderr, "ms-tail: reconnected to the hub\n");
    t->lost = 0;
    t->ever_ready = 1;
    t->ready_at = ms_loop_now(t->loop);
    return;
  }
  if (st->state != MS_CLIENT_IDLE && st->state != MS_CLIENT_STOPPED)
    return;
  if (TOOL_REFUSED(st->err)) {
    fprintf(stderr, "ms-tail: the hub refused the token (%s)\n",
            ms_strerror(st->err));
    t->exit_code = TOOL_EXIT_REFUSED;
    ms_loop_stop(t->loop);
  } else if (!t->ever_ready || !t->follow) {
    if (t->saw_live && !t->follow)
      return;
    fprintf(stderr, "ms-tail: cannot reach the hub (%s)\n",
            ms_strerror(st->err ? st->err : MS_ERR_HUB_UNAVAILABLE));
    t->exit_code = TOOL_EXIT_UNREACHABLE;
    ms_loop_stop(t->loop);
  } else if (!t->lost) {
    t->lost = 1;
    fprintf(stderr, "ms-tail: connection to the hub lost (%s); retrying\n",
            ms_strerror(st->err));
  }
}

/* Without -f: a hub that accepted us but never ends the history (a
 * refused subscription) does not keep us waiting forever. */
static void on_tick(ms_loop *loop, ms_timer *tm, void *ud) {
  tail *t = ud;
  (void)tm;
  if (!t->follow && t->ever_ready && !t->saw_live &&
      ms_loop_now(loop) - t->ready_at > 10000) {
    fprintf(stderr, "ms-tail: the hub did not answer the subscription\n");
    t->exit_code = TOOL_EXIT_FAILED;
    ms_loop_stop(loop);
  }
}

static void on_signal(ms_loop *loop, int fd, unsigned ev, void *ud) {
  (void)ev, (void)ud;
  struct signalfd_siginfo si;
  while (read(fd, &si, sizeof si) == (ssize_t)sizeof si)
    ms_loop_stop(loop);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: ms-tail [--hub URL] [--token T] [--service S]... [--min-level L]\n"
          "               [--contains TEXT] [-n N] [-f] [--json] [--presence]\n"
          "  --hub URL       default $MS_HUB, else " TOOL_DEFAULT_HUB "\n"
          "  --token T       a token with scope watch (default $MS_TOKEN)\n"
          "  --name NAME     the name to connect as, the token's sub (ms-tail)\n"
          "  --ca FILE       for wss://: trust only this CA (default: the system's)\n"
          "  --service S     only these services: repeat it or separate names\n"
          "                  with commas; shell globs allowed ('api-*')\n"
          "  --min-level L   debug, info, warn or error\n"
          "  --contains T    only messages containing T (case-sensitive)\n"
          "  -n N            start with the last N matching records (default 10;\n"
          "                  1000 with --since/--until): from the hub's log\n"
          "                  store when it keeps one (so also after a restart),\n"
          "                  else from its memory\n"
          "  --since T       only records from T on: 30s, 15m, 1h, 2d ago, or\n"
          "                  2026-11-30T10:00:00Z, or microseconds since 1970\n"
          "  --until T       only records up to T (not with -f)\n"
          "  -f, --follow    keep printing new records; once connected, keeps\n"
          "                  retrying when the hub goes away\n"
          "  --json          one JSON object per line\n"
          "  --presence      follow services going up and down instead of logs\n"
          "  --version, --help\n" TOOL_EXIT_CODES_HELP);
}

static int add_services(tail *t, char *list) {
  for (char *save = NULL, *p = strtok_r(list, ",", &save); p;
       p = strtok_r(NULL, ",", &save)) {
    if (!*p)
      continue;
    if (t->n_patterns == MAX_SERVICES) {
      fprintf(stderr, "ms-tail: at most %d --service names\n", MAX_SERVICES);
      return -1;
    }
    if (strpbrk(p, "*?["))
      t->glob = 1;
    t->patterns[t->n_patterns++] = p;
  }
  return 0;
}

int main(int argc, char **argv) {
  tail t;
  memset(&t, 0, sizeof t);
  msgpack_sbuffer_init(&t.js);
  const char *hub = tool_env_hub(), *token = tool_env_token(), *ca = NULL;
  void *tls = NULL;
  const char *name = "ms-tail";
  ms_subscribe_opts so;
  memset(&so, 0, sizeof so);
  so.history = 10;
  int presence = 0, n_given = 0;
  long long n;
  const char *since = NULL, *until = NULL;
  char since_buf[32], until_buf[32];
  static const struct option opts[] = {
      {"hub", required_argument, NULL, 'H'},
      {"token", required_argument, NULL, 'k'},
      {"ca", required_argument, NULL, 'C'},
      {"name", required_argument, NULL, 'N'},
      {"service", required_argument, NULL, 's'},
      {"min-level", required_argument, NULL, 'l'},
      {"contains", required_argument, NULL, 'c'},
      {"lines", required_argument, NULL, 'n'},
      {"follow", no_argument, NULL, 'f'},
      {"json", no_argument, NULL, 'j'},
      {"presence", no_argument, NULL, 'p'},
      {"since", required_argument, NULL, 'S'},
      {"until", required_argument, NULL, 'U'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "H:k:N:C:s:l:c:n:fjph", opts, NULL)) != -1) {
    switch (ch) {
    case 'H': hub = optarg; break;
    case 'k': token = optarg; break;
    case 'C': ca = optarg; break;
    case 'N': name = optarg; break;
    case 's':
      if (add_services(&t, optarg) != 0) {
        usage(stderr);
        return TOOL_EXIT_USAGE;
      }
      break;
    case 'l':
      so.min_level = ms_log_level_parse(optarg);
      if (so.min_level < 0) {
        fprintf(stderr, "ms-tail: bad --min-level '%s'\n", optarg);
        usage(stderr);
        return TOOL_EXIT_USAGE;
      }
      break;
    case 'c': so.contains = optarg; break;
    case 'n':
      if (tool_parse_num("ms-tail", "-n", optarg, 0, 1000000, &n)) {
        usage(stderr);
        return TOOL_EXIT_USAGE;
      }
      so.history = (uint64_t)n;
      n_given = 1;
      break;
    case 'S': since = time_arg(optarg, since_buf, sizeof since_buf); break;
    case 'U': until = time_arg(optarg, until_buf, sizeof until_buf); break;
    case 'f': t.follow = 1; break;
    case 'j': t.json = 1; break;
    case 'p': presence = 1; break;
    case 'V': printf("ms-tail %s\n", MS_VERSION_STRING); return 0;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return TOOL_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ms-tail: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return TOOL_EXIT_USAGE;
  }
  if (until && t.follow) {
    fprintf(stderr, "ms-tail: --until cannot follow (-f)\n");
    usage(stderr);
    return TOOL_EXIT_USAGE;
  }
  if ((since || until) && presence) {
    fprintf(stderr, "ms-tail: --since/--until read the log store, not "
                    "presence\n");
    usage(stderr);
    return TOOL_EXIT_USAGE;
  }
  if ((since || until) && !n_given)
    so.history = 1000;
  if (t.n_patterns && !t.glob) {
    so.services = t.patterns;
    so.n_services = t.n_patterns;
  }
  t.color = !t.json && isatty(1) && !getenv("NO_COLOR");
  ms_url url;
  if (ms_url_parse(hub, &url) != 0) {
    fprintf(stderr, "ms-tail: bad --hub URL '%s'\n", hub);
    return TOOL_EXIT_USAGE;
  }
  /* History from the store first: it survives hub restarts. Without -f
   * that is the whole answer; with -f the live subscription's own history
   * then adds only what the store did not have (same hub run, newer seq). */
  if (!presence && so.history > 0 && !url.tls) {
    tail_query q;
    memset(&q, 0, sizeof q);
    q.services = so.services;
    q.n_services = so.n_services;
    q.min_level = so.min_level;
    q.contains = so.contains;
    q.since = since;
    q.until = until;
    q.limit = so.history;
    q.token = token;
    char why[256];
    int rv = tail_store_fetch(&url, &q, on_stored, &t, why, sizeof why);
    if (rv == TAIL_STORE_UNREACHABLE) {
      fprintf(stderr, "ms-tail: cannot reach the hub at %s\n", hub);
      msgpack_sbuffer_destroy(&t.js);
      return TOOL_EXIT_UNREACHABLE;
    }
    if (rv != TAIL_STORE_OK && (since || until)) {
      fprintf(stderr, "ms-tail: cannot read the log store: %s\n", why);
      msgpack_sbuffer_destroy(&t.js);
      return TOOL_EXIT_FAILED;
    }
    if (rv == TAIL_STORE_OK && !t.follow) {
      msgpack_sbuffer_destroy(&t.js);
      return 0;
    }
  }
  int sfd = tool_signal_fd(0);
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.token = token;
  cfg.watch = 1;
  cfg.reconnect = t.follow;
  cfg.backoff_max_ms = 5000;
  cfg.on_state = on_state;
  if (tool_client_tls("ms-tail", hub, ca, &tls, &cfg) != 0)
    return 2;
  ms_client *c;
  ms_loop_new(&t.loop, NULL);
  if (ms_client_new(&c, &cfg, &t, NULL) != 0)
    return TOOL_EXIT_USAGE;
  /* Our own trouble is reported on stderr by on_state, never shipped into
   * the stream we follow. */
  ms_log_set_level(c, MS_LEVEL_SILENT);
  ms_client_subscribe(c, presence ? "presence" : "logs", &so, on_record, &t,
                      NULL);
  ms_posix_client *pc;
  if (ms_posix_client_new(&pc, t.loop, c, hub) != 0) {
    fprintf(stderr, "ms-tail: cannot reach the hub at %s\n", hub);
    return TOOL_EXIT_UNREACHABLE;
  }
  ms_timer *tick = NULL;
  ms_loop_timer_start(t.loop, 500, 500, on_tick, &t, &tick);
  ms_loop_watch(t.loop, sfd, MS_EV_READ, on_signal, &t);
  ms_loop_run(t.loop);
  ms_timer_stop(tick);
  ms_loop_watch(t.loop, sfd, 0, NULL, NULL);
  close(sfd);
  ms_posix_client_del(pc);
  ms_client_del(c);
  tool_client_tls_free(tls);
  ms_loop_del(t.loop);
  msgpack_sbuffer_destroy(&t.js);
  if (t.exit_code)
    return t.exit_code;
  return t.saw_live || t.follow ? 0 : TOOL_EXIT_FAILED;
}
