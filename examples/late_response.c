/* Late responses: "slow-service" answers "report" after 1500 ms; the caller
 * gives it 500 ms but accepts an answer up to 3000 ms after the deadline.
 * The request callback sees REQUEST_TIMEOUT at 500 ms; on_late gets the
 * answer when it arrives. Both run in this one process. */
#include "example_common.h"

typedef struct pending_answer {
  ms_reply *reply;
  ms_timer *timer;
} pending_answer;

static void answer_now(ms_loop *loop, ms_timer *t, void *ud) {
  pending_answer *p = ud;
  (void)loop;
  ms_reply_send_str(p->reply, "the report you asked for");
  ms_timer_stop(t);
  free(p);
}

static void on_report(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                      void *ud) {
  ms_loop *loop = ud;
  (void)c;
  printf("slow-service: got '%s' from %s, answering in 1500 ms "
         "(the caller allows %lld ms + %lld ms late)\n",
         a->event, a->source, (long long)a->timeout_ms, (long long)a->late_ms);
  pending_answer *p = calloc(1, sizeof *p);
  p->reply = reply;
  ms_reply_retain(reply);
  ms_loop_timer_start(loop, 1500, 0, answer_now, p, &p->timer);
}

static int done;
static ms_loop *g_loop;

static void on_response(ms_client *c, const ms_response_arg *a, void *ud) {
  (void)c, (void)ud;
  printf("caller: request ended after %lld ms: %s\n", (long long)a->elapsed_ms,
         a->err ? a->code : "response");
}

static void on_late(ms_client *c, const ms_response_arg *a, void *ud) {
  (void)c, (void)ud;
  char buf[128] = "";
  if (a->data->type == MSGPACK_OBJECT_STR)
    snprintf(buf, sizeof buf, "%.*s", (int)a->data->via.str.size,
             a->data->via.str.ptr);
  printf("caller: late response after %lld ms: \"%s\"\n",
         (long long)a->elapsed_ms, buf);
  done = 1;
  ms_loop_stop(g_loop);
}

static void caller_state(ms_client *c, const ms_client_state_arg *st,
                         void *ud) {
  example_state(c, st, ud);
  if (st->state == MS_CLIENT_READY) {
    ms_request_opts o = {0};
    o.timeout_ms = 500;
    o.late_ms = 3000;
    o.on_late = on_late;
    ms_client_request(c, "slow-service", "report", NULL, 0, &o, on_response,
                      NULL, NULL);
  }
}

static void give_up(ms_loop *loop, ms_timer *t, void *ud) {
  (void)t, (void)ud;
  fprintf(stderr, "late_response: no late answer in time\n");
  ms_loop_stop(loop);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  const char *url = example_hub_url(argc, argv);
  ms_loop_new(&g_loop, NULL);
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "slow-service";
  cfg.on_state = example_state;
  ms_client *slow, *caller;
  ms_client_new(&slow, &cfg, NULL, NULL);
  ms_client_on(slow, "report", on_report, g_loop);
  cfg.service = "late-caller";
  cfg.on_state = caller_state;
  ms_client_new(&caller, &cfg, NULL, NULL);
  ms_posix_client *p1, *p2;
  if (ms_posix_client_new(&p1, g_loop, slow, url) ||
      ms_posix_client_new(&p2, g_loop, caller, url)) {
    fprintf(stderr, "late_response: bad hub URL\n");
    return 1;
  }
  ms_loop_timer_start(g_loop, 10000, 0, give_up, NULL, NULL);
  ms_loop_run(g_loop);
  /* The last log records reach the hub before we go. */
  ms_posix_client_flush(p2, 2000);
  ms_posix_client_flush(p1, 2000);
  ms_posix_client_del(p2);
  ms_posix_client_del(p1);
  ms_client_del(caller);
  ms_client_del(slow);
  ms_loop_del(g_loop);
  return done ? 0 : 1;
}
