/* ms-req: call a service from the shell.
 *   ms-req [--hub URL] TARGET EVENT [JSON]
 * Prints the response as JSON and exits 0; on an error prints the code and
 * message to stderr and exits 1 (3 when the hub cannot be reached). */
#include <microstream/ms_posix.h>

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct req_app {
  ms_loop *loop;
  const char *target, *event;
  msgpack_sbuffer data;
  ms_request_opts opts;
  int sent;
  int exit_code;
  int quiet;
} req_app;

static void on_response(ms_client *c, const ms_response_arg *arg, void *ud) {
  req_app *a = ud;
  (void)c;
  msgpack_sbuffer js;
  msgpack_sbuffer_init(&js);
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
    a->exit_code = st->err == MS_ERR_UNAUTHORIZED ||
                           st->err == MS_ERR_FORBIDDEN ||
                           st->err == MS_ERR_TOKEN_EXPIRED
                       ? 1
                       : 3;
    ms_loop_stop(a->loop);
  }
}

static void usage(FILE *f) {
  fprintf(f, "usage: ms-req [--hub URL] [--timeout-ms N] [--service NAME]\n"
             "              [--token T] [--json-wire] TARGET EVENT [JSON]\n"
             "  --hub URL        default ws://127.0.0.1:7400/ws\n"
             "  --timeout-ms N   request deadline (default: the hub's)\n"
             "  --service NAME   name shown as the request's source (default ms-req);\n"
             "                   with a token, the token's sub\n"
             "  --token T        token with scope service (default: $MS_TOKEN)\n"
             "  --json-wire      speak microstream.json.v1 instead of MessagePack\n");
}

int main(int argc, char **argv) {
  req_app a;
  memset(&a, 0, sizeof a);
  a.exit_code = 3;
  const char *hub = "ws://127.0.0.1:7400/ws", *service = "ms-req",
             *token = getenv("MS_TOKEN");
  int json_wire = 0;
  static const struct option opts[] = {
      {"hub", required_argument, NULL, 'H'},
      {"timeout-ms", required_argument, NULL, 't'},
      {"service", required_argument, NULL, 's'},
      {"token", required_argument, NULL, 'k'},
      {"json-wire", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "H:t:s:k:jh", opts, NULL)) != -1) {
    switch (ch) {
    case 'H': hub = optarg; break;
    case 't': a.opts.timeout_ms = atoll(optarg); break;
    case 's': service = optarg; break;
    case 'k': token = optarg; break;
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
    if (ms_json_to_msgpack(js, strlen(js), &a.data, what, sizeof what) != 0) {
      fprintf(stderr, "ms-req: bad JSON argument: %s\n", what);
      return 2;
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
  cfg.token = token && *token ? token : NULL;
  cfg.watch = 1; /* a caller, not a service: no unique name needed */
  cfg.reconnect = 0;
  cfg.encoding = json_wire ? MS_ENC_JSON : MS_ENC_MSGPACK;
  cfg.on_state = on_state;
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
  ms_loop_del(a.loop);
  msgpack_sbuffer_destroy(&a.data);
  return a.exit_code;
}
