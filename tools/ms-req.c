/* ms-req: call a service from the shell.
 *   ms-req [--hub URL] TARGET EVENT [JSON | -]
 * Prints the response as JSON and exits 0; on an error prints the code and
 * message to stderr and exits 1 (3 when the hub cannot be reached, 4 when
 * it refuses the token). "-" reads the JSON payload from standard input. */
#include <microstream/ms_posix.h>

#include "tool_common.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct req_app {
  ms_loop *loop;
  const char *target, *event;
  msgpack_sbuffer data;
  ms_request_opts opts;
  int sent;
  int exit_code;
  int quiet;
  int timing;       /* --time: print the round-trip time on stderr */
  int64_t sent_at;  /* ms_now_us() when the request went out */
} req_app;

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void print_time(const req_app *a) {
  if (a->timing)
    fprintf(stderr, "round trip: %.3f ms\n", (double)(now_us() - a->sent_at) / 1000.0);
}

static void on_response(ms_client *c, const ms_response_arg *arg, void *ud) {
  req_app *a = ud;
  (void)c;
  msgpack_sbuffer js;
  msgpack_sbuffer_init(&js);
  print_time(a);
  if (arg->err == 0) {
    ms_msgpack_to_json(arg->data, &js);
    fwrite(js.data, 1, js.size, stdout);
    fputc('\n', stdout);
    a->exit_code = 0;
  } else {
    fprintf(stderr, "%s: %s", arg->code ? arg->code : ms_strerror(arg->err),
            arg->message ? arg->message : "");
    if (arg->data && arg->data->type != MSGPACK_OBJECT_NIL) {
      ms_msgpack_to_json(arg->data, &js);
      fprintf(stderr, " %.*s", (int)js.size, js.data);
    }
    fputc('\n', stderr);
    a->exit_code = arg->err == MS_ERR_HUB_UNAVAILABLE ? 3 : 1;
  }
  fflush(stdout);
  msgpack_sbuffer_destroy(&js);
  ms_loop_stop(a->loop);
}

static void on_state(ms_client *c, const ms_client_state_arg *st, void *ud) {
  req_app *a = ud;
  if (st->state == MS_CLIENT_READY && !a->sent) {
    a->sent = 1;
    a->sent_at = now_us();
    int rv = ms_client_request(c, a->target, a->event,
                               (const uint8_t *)a->data.data, a->data.size,
                               &a->opts, on_response, a, NULL);
    if (rv) {
      fprintf(stderr, "ms-req: %s\n", ms_strerror(rv));
      a->exit_code = 2;
      ms_loop_stop(a->loop);
    }
  } else if ((st->state == MS_CLIENT_IDLE || st->state == MS_CLIENT_STOPPED) &&
             !a->sent) {
    const char *why = ms_err_to_wire(st->err);
    fprintf(stderr, "%s: cannot register with the hub (%s)\n",
            why ? why : "HUB_UNAVAILABLE", ms_strerror(st->err));
    a->exit_code = TOOL_REFUSED(st->err) ? TOOL_EXIT_REFUSED
                                         : TOOL_EXIT_UNREACHABLE;
    ms_loop_stop(a->loop);
  }
}

static void usage(FILE *f) {
  fprintf(f, "usage: ms-req [--hub URL] [--token T] [--timeout-ms N] [--service NAME]\n"
             "              [--json-wire] [--time] TARGET EVENT [JSON | -]\n"
             "  JSON             the request's data; - reads it from standard input\n"
             "  --hub URL        default $MS_HUB, else " TOOL_DEFAULT_HUB "\n"
             "  --token T        token with scope service (default $MS_TOKEN)\n"
             "  --ca FILE        for wss://: trust only this CA (default: the system's)\n"
             "  --timeout-ms N   request deadline (default: the hub's)\n"
             "  --service NAME   name shown as the request's source (default ms-req);\n"
             "                   with a token, the token's sub\n"
             "  --json-wire      speak microstream.json.v1 instead of MessagePack\n"
             "  --time           print the round-trip time on stderr\n"
             "  --version, --help\n" TOOL_EXIT_CODES_HELP);
}

/* The whole of standard input, NUL-terminated; NULL when unreadable or
 * larger than the largest message. */
static char *read_stdin(size_t *len) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n + 1 == cap) {
      if (cap >= (64u << 20)) {
        free(buf);
        return NULL;
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        return NULL;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n - 1, stdin);
    n += r;
    if (r == 0) {
      if (ferror(stdin)) {
        free(buf);
        return NULL;
      }
      break;
    }
  }
  if (buf) {
    buf[n] = 0;
    *len = n;
  }
  return buf;
}

int main(int argc, char **argv) {
  req_app a;
  memset(&a, 0, sizeof a);
  a.exit_code = 3;
  const char *hub = tool_env_hub(), *service = "ms-req",
             *token = tool_env_token(), *ca = NULL;
  void *tls = NULL;
  long long timeout_ms;
  int json_wire = 0;
  static const struct option opts[] = {
      {"hub", required_argument, NULL, 'H'},
      {"timeout-ms", required_argument, NULL, 't'},
      {"service", required_argument, NULL, 's'},
      {"token", required_argument, NULL, 'k'},
      {"ca", required_argument, NULL, 'C'},
      {"json-wire", no_argument, NULL, 'j'},
      {"time", no_argument, NULL, 'T'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "H:t:s:k:C:jTVh", opts, NULL)) != -1) {
    switch (ch) {
    case 'H': hub = optarg; break;
    case 't':
      if (tool_parse_num("ms-req", "--timeout-ms", optarg, 1, 86400000,
                         &timeout_ms)) {
        usage(stderr);
        return TOOL_EXIT_USAGE;
      }
      a.opts.timeout_ms = timeout_ms;
      break;
    case 'T': a.timing = 1; break;
    case 'V': printf("ms-req %s\n", MS_VERSION_STRING); return 0;
    case 's': service = optarg; break;
    case 'k': token = optarg; break;
    case 'C': ca = optarg; break;
    case 'j': json_wire = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (argc - optind < 2 || argc - optind > 3) {
    usage(stderr);
    return 2;
  }
  a.target = argv[optind];
  a.event = argv[optind + 1];
  msgpack_sbuffer_init(&a.data);
  if (argc - optind == 3) {
    char what[128];
    const char *js = argv[optind + 2];
    char *in = NULL;
    size_t js_len = strlen(js);
    if (!strcmp(js, "-")) {
      in = read_stdin(&js_len);
      if (!in) {
        fprintf(stderr, "ms-req: cannot read the payload from standard input\n");
        return TOOL_EXIT_USAGE;
      }
      js = in;
    }
    int bad = ms_json_to_msgpack(js, js_len, &a.data, what, sizeof what);
    const char *from = in ? "on standard input" : "argument";
    free(in);
    if (bad) {
      fprintf(stderr, "ms-req: bad JSON %s: %s\n", from, what);
      msgpack_sbuffer_destroy(&a.data);
      return TOOL_EXIT_USAGE;
    }
  }
  ms_url url;
  if (ms_url_parse(hub, &url) != 0) {
    fprintf(stderr, "ms-req: bad --hub URL '%s'\n", hub);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = service;
  cfg.token = token;
  cfg.watch = 1; /* a caller, not a service: no unique name needed */
  cfg.reconnect = 0;
  cfg.encoding = json_wire ? MS_ENC_JSON : MS_ENC_MSGPACK;
  cfg.on_state = on_state;
  if (tool_client_tls("ms-req", hub, ca, &tls, &cfg) != 0)
    return 2;
  ms_client *c = NULL;
  int rv = ms_loop_new(&a.loop, NULL);
  if (rv == 0)
    rv = ms_client_new(&c, &cfg, &a, NULL);
  if (rv) {
    fprintf(stderr, "ms-req: %s\n", ms_strerror(rv));
    return 2;
  }
  ms_posix_client *pc = NULL;
  rv = ms_posix_client_new(&pc, a.loop, c, hub);
  if (rv) {
    fprintf(stderr, "HUB_UNAVAILABLE: %s\n", ms_strerror(rv));
    return 3;
  }
  ms_loop_run(a.loop);
  ms_posix_client_del(pc);
  ms_client_del(c);
  tool_client_tls_free(tls);
  ms_loop_del(a.loop);
  msgpack_sbuffer_destroy(&a.data);
  return a.exit_code;
}
