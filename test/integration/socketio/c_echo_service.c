/* c-echo: a C service (the library) for the Socket.IO tests. "echo"
 * answers the data unchanged; "log" logs data.message at warn and answers
 * "logged"; "fail" answers an error of its own code. */
#include <microstream/ms_posix.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>

static void on_echo(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                    void *ud) {
  (void)c, (void)ud;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_object(&pk, *a->data);
  ms_reply_send(reply, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void on_log(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                   void *ud) {
  (void)ud;
  const msgpack_object *m = ms_map_get(a->data, "message");
  if (m && m->type == MSGPACK_OBJECT_STR) {
    ms_log_field f[] = {MS_FSTR("from", a->source)};
    ms_log_fields(c, MS_LEVEL_WARN, f, 1, "%.*s", (int)m->via.str.size,
                  m->via.str.ptr);
  }
  ms_reply_send_str(reply, "logged");
}

static void on_fail(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                    void *ud) {
  (void)c, (void)a, (void)ud;
  ms_reply_error(reply, "C_SIDE_ERROR", "failed on purpose", NULL, 0);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    fprintf(stderr, "usage: c_echo_service ws://HOST:PORT/ws [NAME]\n");
    return 2;
  }
  ms_loop *loop;
  ms_client *c;
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = argc > 2 ? argv[2] : "c-echo";
  if (ms_loop_new(&loop, NULL) || ms_client_new(&c, &cfg, NULL, NULL))
    return 1;
  ms_log_set_level(c, MS_LEVEL_INFO);
  ms_client_on(c, "echo", on_echo, NULL);
  ms_client_on(c, "log", on_log, NULL);
  ms_client_on(c, "fail", on_fail, NULL);
  ms_posix_client *pc;
  if (ms_posix_client_new(&pc, loop, c, argv[1]) != 0)
    return 1;
  ms_loop_run(loop);
  ms_posix_client_del(pc);
  ms_client_del(c);
  ms_loop_del(loop);
  return 0;
}
