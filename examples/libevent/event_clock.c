/*
 * event-clock: a service on a libevent base the program also uses for its
 * own work. It answers "time" with the wall-clock time, and the same base
 * runs a heartbeat timer of its own and a SIGINT event: microstream is
 * one more user of the loop, not its owner.
 *
 *   event_clock [--hub ws://127.0.0.1:7400/ws]
 *   build/tools/ms-req event-clock time
 */
#include <microstream/ms_libevent.h>
#include <microstream/ms_log.h>

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct app {
  struct event_base *base;
  ms_client *c;
  ms_libevent_client *mc;
  struct event *heartbeat;
  struct event *sigint;
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
static void on_heartbeat(evutil_socket_t fd, short what, void *ud) {
  app *p = ud;
  (void)fd;
  (void)what;
  p->beats++;
  printf("event-clock: heartbeat %u (%s)\n", p->beats,
         ms_client_get_state(p->c) == MS_CLIENT_READY ? "registered"
                                                      : "waiting for the hub");
  fflush(stdout);
  ms_info(p->c, "heartbeat %u", p->beats);
}

static void on_sigint(evutil_socket_t fd, short what, void *ud) {
  app *p = ud;
  (void)fd;
  (void)what;
  ms_info(p->c, "stopping after %u heartbeats", p->beats);
  event_del(p->heartbeat);
  event_del(p->sigint);
  event_base_loopbreak(p->base); /* main flushes, outside any callback */
}

int main(int argc, char **argv) {
  const char *url = "ws://127.0.0.1:7400/ws";
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--hub") == 0)
      url = argv[i + 1];
  app p;
  memset(&p, 0, sizeof p);
  p.base = event_base_new();
  if (!p.base)
    return 1;

  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "event-clock";
  if (ms_client_new(&p.c, &cfg, &p, NULL) != 0)
    return 1;
  ms_client_on(p.c, "time", on_time, &p);
  int rv = ms_libevent_client_attach(&p.mc, p.base, p.c, url);
  if (rv != 0) {
    fprintf(stderr, "event-clock: %s\n", ms_strerror(rv));
    ms_client_del(p.c);
    event_base_free(p.base);
    return 1;
  }

  struct timeval second = {1, 0};
  p.heartbeat = event_new(p.base, -1, EV_PERSIST, on_heartbeat, &p);
  event_add(p.heartbeat, &second);
  p.sigint = evsignal_new(p.base, SIGINT, on_sigint, &p);
  event_add(p.sigint, NULL);

  event_base_dispatch(p.base);
  /* The last records (the "stopping" line) reach the hub, then detach. */
  ms_libevent_client_flush(p.mc, 2000);
  ms_libevent_client_detach(p.mc);
  event_free(p.heartbeat);
  event_free(p.sigint);
  ms_client_del(p.c);
  event_base_free(p.base);
  return 0;
}
