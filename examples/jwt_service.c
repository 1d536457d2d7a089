/* jwt-service: answers "generate_jwt" with a signed token for a user.
 * (An HMAC-SHA256 over the claims: enough to show a service that computes
 * an answer at once.) */
#include "example_common.h"

#include <time.h>

static const uint8_t demo_key[] = "demo signing key";

static void on_generate(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                        void *ud) {
  (void)ud;
  char user[128];
  example_get_str(a->data, "user", user, sizeof user);
  if (!user[0]) {
    ms_warn(c, "generate_jwt without a user (from %s)", a->source);
    ms_reply_error(reply, "BAD_REQUEST", "data.user is required", NULL, 0);
    return;
  }
  char claims[256], sig[65], token[400];
  snprintf(claims, sizeof claims, "%s.%lld", user, (long long)time(NULL));
  ms_service_token(demo_key, sizeof demo_key - 1, claims, sig);
  snprintf(token, sizeof token, "%s.%.32s", claims, sig);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  example_pack_strmap(&sb, "token", token, "user", user, (const char *)NULL);
  ms_reply_send(reply, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  ms_log_field f[] = {MS_FSTR("user", user), MS_FSTR("requester", a->source)};
  ms_log_fields(c, MS_LEVEL_INFO, f, 2, "issued a token for %s", user);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  ms_loop *loop;
  ms_client *c;
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "jwt-service";
  cfg.on_state = example_state;
  if (ms_loop_new(&loop, NULL) || ms_client_new(&c, &cfg, NULL, NULL))
    return 1;
  ms_client_on(c, "generate_jwt", on_generate, NULL);
  ms_posix_client *pc;
  if (ms_posix_client_new(&pc, loop, c, example_hub_url(argc, argv)) != 0) {
    fprintf(stderr, "jwt-service: bad hub URL\n");
    return 1;
  }
  int sfd = example_stop_on_signals(loop);
  ms_loop_run(loop);
  example_signals_done(loop, sfd);
  ms_info(c, "stopping");
  /* The last log records reach the hub before we go. */
  ms_posix_client_flush(pc, 2000);
  ms_posix_client_del(pc);
  ms_client_del(c);
  ms_loop_del(loop);
  return 0;
}
