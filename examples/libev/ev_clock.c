/*
 * ev-clock: a service on a libev loop the program also uses for its own
 * work. It answers "time" with the wall-clock time, and the same loop runs
 * a heartbeat timer of its own and a SIGINT watcher: microstream is one
 * more user of the loop, not its owner.
 *
 *   ev_clock [--hub ws://127.0.0.1:7400/ws]
 *   build/tools/ms-req ev-clock time
 */
#include <microstream/ms_libev.h>
#include <microstream/ms_log.h>

#include <ev.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct app {
  struct ev_loop *loop;
  ms_client *c;
  ms_libev_client *mc;
  ev_timer heartbeat;
  ev_signal sigint;
  unsigned beats;
} app;

static void on_time(ms_client *c, ms_reply *r, const ms_request_arg *a,
                    void *ud) {
  char buf[64];
  time_t t = time(NULL);
  struct tm tm;
  (void)c;
  (void)a;
  (void)ud;
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", localtime_r(&t, &tm));
  ms_reply_send_str(r, buf);
}

/* The program's own work, on the same loop. */
static void on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents) {
  app *p = w->data;
  (void)loop;
  (void)revents;
  p->beats++;
  printf("ev-clock: heartbeat %u (%s)\n", p->beats,
         ms_client_get_state(p->c) == MS_CLIENT_READY ? "registered"
                                                      : "waiting for the hub");
  fflush(stdout);
  ms_info(p->c, "heartbeat %u", p->beats);
}

static void on_sigint(struct ev_loop *loop, ev_signal *w, int revents) {
  app *p = w->data;
  (void)revents;
  ms_info(p->c, "stopping after %u heartbeats", p->beats);
  ev_timer_stop(loop, &p->heartbeat);
  ev_signal_stop(loop, &p->sigint);
  ev_break(loop, EVBREAK_ALL); /* main flushes, outside any callback */
}

int main(int argc, char **argv) {
  const char *url = "ws://127.0.0.1:7400/ws";
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--hub") == 0)
      url = argv[i + 1];
  app p;
  memset(&p, 0, sizeof p);
  p.loop = EV_DEFAULT;

  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "ev-clock";
  if (ms_client_new(&p.c, &cfg, &p, NULL) != 0)
    return 1;
  ms_client_on(p.c, "time", on_time, &p);
  int rv = ms_libev_client_attach(&p.mc, p.loop, p.c, url);
  if (rv != 0) {
    fprintf(stderr, "ev-clock: %s\n", ms_strerror(rv));
    ms_client_del(p.c);
    return 1;
  }

  ev_timer_init(&p.heartbeat, on_heartbeat, 1., 1.);
  p.heartbeat.data = &p;
  ev_timer_start(p.loop, &p.heartbeat);
  ev_signal_init(&p.sigint, on_sigint, SIGINT);
  p.sigint.data = &p;
  ev_signal_start(p.loop, &p.sigint);

  ev_run(p.loop, 0);
  /* The last records (the "stopping" line) reach the hub, then detach. */
  ms_libev_client_flush(p.mc, 2000);
  ms_libev_client_detach(p.mc);
  ms_client_del(p.c);
  return 0;
}
