/* caller: asks auth-service to authenticate a user every second and
 * prints what comes back (or why not). */
#include "example_common.h"

static const char *users[] = {"alice", "bob", "carol", "mallory"};
static unsigned n_calls;

static void on_auth(ms_client *c, const ms_response_arg *a, void *ud) {
  (void)ud;
  if (a->err) {
    printf("authenticate -> %s: %s (%lld ms)\n", a->code, a->message,
           (long long)a->elapsed_ms);
    ms_log_field f[] = {MS_FSTR("code", a->code),
                        MS_FINT("elapsed_ms", a->elapsed_ms)};
    ms_log_fields(c, a->err == MS_ERR_APPLICATION ? MS_LEVEL_WARN
                                                  : MS_LEVEL_ERROR,
                  f, 2, "authenticate failed: %s", a->message);
  } else {
    char user[64], token[128];
    example_get_str(a->data, "user", user, sizeof user);
    example_get_str(a->data, "token", token, sizeof token);
    printf("authenticate -> %s token %.24s... (%lld ms)\n", user, token,
           (long long)a->elapsed_ms);
    ms_log_field f[] = {MS_FSTR("user", user),
                        MS_FINT("elapsed_ms", a->elapsed_ms)};
    ms_log_fields(c, MS_LEVEL_INFO, f, 2, "%s signed in", user);
  }
  fflush(stdout);
}

static void tick(ms_loop *loop, ms_timer *t, void *ud) {
  ms_client *c = ud;
  (void)loop, (void)t;
  const char *user = users[n_calls % 4];
  const char *pw = n_calls % 4 == 3 ? "guess" : "secret";
  n_calls++;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  example_pack_strmap(&sb, "user", user, "password", pw, (const char *)NULL);
  ms_client_request(c, "auth-service", "authenticate",
                    (const uint8_t *)sb.data, sb.size, NULL, on_auth, NULL,
                    NULL);
  msgpack_sbuffer_destroy(&sb);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  long count = 0; /* 0 = forever */
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--count") == 0)
      count = atol(argv[i + 1]);
  ms_loop *loop;
  ms_client *c;
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "caller";
  cfg.on_state = example_state;
  if (ms_loop_new(&loop, NULL) || ms_client_new(&c, &cfg, NULL, NULL))
    return 1;
  ms_posix_client *pc;
  if (ms_posix_client_new(&pc, loop, c, example_hub_url(argc, argv)) != 0)
    return 1;
  ms_loop_timer_start(loop, 1000, 1000, tick, c, NULL);
  if (count > 0) {
    while (n_calls < (unsigned long)count || ms_client_pending(c) > 0)
      ms_loop_run_once(loop, -1);
  } else {
    int sfd = example_stop_on_signals(loop);
    ms_loop_run(loop);
    example_signals_done(loop, sfd);
  }
  /* The last log records reach the hub before we go. */
  ms_posix_client_flush(pc, 2000);
  ms_posix_client_del(pc);
  ms_client_del(c);
  ms_loop_del(loop);
  return 0;
}
