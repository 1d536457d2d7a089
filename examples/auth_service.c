/* auth-service: answers "authenticate" by asking jwt-service for a token and
 * replying asynchronously when it arrives: a handler that keeps its reply
 * handle (ms_reply_retain) and answers from another callback. */
#include "example_common.h"

static void on_jwt(ms_client *c, const ms_response_arg *a, void *ud) {
  ms_reply *reply = ud; /* retained in on_authenticate */
  if (a->err) {
    ms_error(c, "jwt-service failed: %s %s", a->code, a->message);
    /* Pass the failure on, with its code (REQUEST_TIMEOUT, ...). */
    ms_reply_error(reply, a->code, a->message, NULL, 0);
    return;
  }
  char token[400], user[128];
  example_get_str(a->data, "token", token, sizeof token);
  example_get_str(a->data, "user", user, sizeof user);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  example_pack_strmap(&sb, "user", user, "token", token, "status",
                      "authenticated", (const char *)NULL);
  ms_reply_send(reply, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  ms_log_field f[] = {MS_FSTR("user", user),
                      MS_FINT("jwt_ms", a->elapsed_ms)};
  ms_log_fields(c, MS_LEVEL_INFO, f, 2, "authenticated %s", user);
}

static void on_authenticate(ms_client *c, ms_reply *reply,
                            const ms_request_arg *a, void *ud) {
  (void)ud;
  char user[128], password[128];
  example_get_str(a->data, "user", user, sizeof user);
  example_get_str(a->data, "password", password, sizeof password);
  if (!user[0] || strcmp(password, "secret") != 0) {
    ms_log_field f[] = {MS_FSTR("user", user), MS_FSTR("from", a->source)};
    ms_log_fields(c, MS_LEVEL_WARN, f, 2, "rejected login for '%s'", user);
    ms_reply_error(reply, "INVALID_CREDENTIALS", "wrong user or password",
                   NULL, 0);
    return;
  }
  ms_debug(c, "asking jwt-service for %s's token", user);
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  example_pack_strmap(&sb, "user", user, (const char *)NULL);
  ms_request_opts o = {0};
  /* Do not wait longer than our own caller will. */
  o.timeout_ms = a->timeout_ms > 1 ? a->timeout_ms - 1 : 1;
  ms_reply_retain(reply);
  if (ms_client_request(c, "jwt-service", "generate_jwt",
                        (const uint8_t *)sb.data, sb.size, &o, on_jwt, reply,
                        NULL) != 0)
    ms_reply_error(reply, "INTERNAL_SERVER_ERROR", "cannot call jwt-service",
                   NULL, 0);
  msgpack_sbuffer_destroy(&sb);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  ms_loop *loop;
  ms_client *c;
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = "auth-service";
  cfg.on_state = example_state;
  if (ms_loop_new(&loop, NULL) || ms_client_new(&c, &cfg, NULL, NULL))
    return 1;
  ms_client_on(c, "authenticate", on_authenticate, NULL);
  ms_posix_client *pc;
  if (ms_posix_client_new(&pc, loop, c, example_hub_url(argc, argv)) != 0) {
    fprintf(stderr, "auth-service: bad hub URL\n");
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
