/*
 * uv-clock: a service on a libuv loop the program also uses for its own
 * work. It answers "time" with the wall-clock time, and the same loop runs
 * a heartbeat timer of its own and a SIGINT handler: microstream is one
 * more user of the loop, not its owner.
 *
 *   uv_clock [--hub ws://127.0.0.1:7400/ws]
 *   build/tools/ms-req uv-clock time
 */
#include <microstream/ms_libuv.h>
#include <microstream/ms_log.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct app {
  uv_loop_t *loop;
  ms_client *c;
  ms_libuv_client *mc;
  uv_timer_t heartbeat;
  uv_signal_t sigint;
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
static void on_heartbeat(uv_timer_t *t) {
  app *p = t->data;
  p->beats++;
  printf("uv-clock: heartbeat %u (%s)\n", p->beats,
         ms_client_get_state(p->c) == MS_CLIENT_READY ? "registered"
                                                      : "waiting for the hub");
  fflush(stdout);
  ms_info(p->c, "heartbeat %u", p->beats);
}

static void on_sigint(uv_signal_t *s, int signum) {
  app *p = s->data;
  (void)signum;
  ms_info(p->c, "stopping after %u heartbeats", p->beats);
  uv_timer_stop(&p->heartbeat);
  uv_signal_stop(&p->sigint);
  uv_stop(p->loop); /* main flushes, outside any callback */
}

int main(int argc, char **argv) {
  const char *url = "ws://127.0.0.1:7400/ws";
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--hub") == 0)
      url = argv[i + 1];
  app p;
  memset(&p, 0, sizeof p);
  p.loop = uv_default_loop();

  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "uv-clock";
  if (ms_client_new(&p.c, &cfg, &p, NULL) != 0)
    return 1;
  ms_client_on(p.c, "time", on_time, &p);
  int rv = ms_libuv_client_attach(&p.mc, p.loop, p.c, url);
  if (rv != 0) {
    fprintf(stderr, "uv-clock: %s\n", ms_strerror(rv));
    ms_client_del(p.c);
    return 1;
  }

  uv_timer_init(p.loop, &p.heartbeat);
  p.heartbeat.data = &p;
  uv_timer_start(&p.heartbeat, on_heartbeat, 1000, 1000);
  uv_signal_init(p.loop, &p.sigint);
  p.sigint.data = &p;
  uv_signal_start(&p.sigint, on_sigint, SIGINT);

  uv_run(p.loop, UV_RUN_DEFAULT);
  /* The last records (the "stopping" line) reach the hub, then detach:
   * the loop ends once our own handles are closed. */
  ms_libuv_client_flush(p.mc, 2000);
  ms_libuv_client_detach(p.mc);
  uv_close((uv_handle_t *)&p.heartbeat, NULL);
  uv_close((uv_handle_t *)&p.sigint, NULL);
  uv_run(p.loop, UV_RUN_DEFAULT);
  ms_client_del(p.c);
  uv_loop_close(p.loop);
  return 0;
}
