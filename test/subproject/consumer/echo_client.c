/* A service that registers under a name, answers "echo" with its request
 * data and, once registered, calls itself through the hub. Exits 0 when
 * the answer came back intact, 1 on an error, 2 when nothing came back in
 * time. Built three ways by the tests: against a microstream subproject,
 * against an installed microstream (pkg-config), and (with
 * ECHO_SINGLE_HEADER) from the single-header form alone.
 *
 * usage: echo_client HUB_URL SERVICE_NAME */
#ifdef ECHO_SINGLE_HEADER
#define MICROSTREAM_IMPLEMENTATION
#include "microstream.h"
#else
#include <microstream/ms_posix.h>
#endif

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

typedef struct echo_state {
  ms_loop *loop;
  char want[64];
  int sent;
  int status; /* exit status */
} echo_state;

static void on_echo(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                    void *ud) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  (void)c;
  (void)ud;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_object(&pk, *a->data);
  ms_reply_send(reply, (const uint8_t *)sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
}

static void on_response(ms_client *c, const ms_response_arg *r, void *ud) {
  echo_state *st = ud;
  (void)c;
  if (r->err) {
    fprintf(stderr, "echo_client: error %s: %s\n",
            r->code ? r->code : ms_strerror(r->err), r->message);
    st->status = 1;
  } else if (r->data->type == MSGPACK_OBJECT_STR &&
             r->data->via.str.size == strlen(st->want) &&
             memcmp(r->data->via.str.ptr, st->want, r->data->via.str.size) ==
                 0) {
    printf("echo: %s\n", st->want);
    st->status = 0;
  } else {
    fprintf(stderr, "echo_client: unexpected answer\n");
    st->status = 1;
  }
  ms_loop_stop(st->loop);
}

static void on_state(ms_client *c, const ms_client_state_arg *a, void *ud) {
  echo_state *st = ms_client_user_data(c);
  msgpack_sbuffer sb;
  msgpack_packer pk;
  (void)ud;
  if (a->state != MS_CLIENT_READY || st->sent)
    return;
  st->sent = 1;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_str(&pk, strlen(st->want));
  msgpack_pack_str_body(&pk, st->want, strlen(st->want));
  int rc = ms_client_request(c, ms_client_service(c), "echo",
                             (const uint8_t *)sb.data, sb.size, NULL,
                             on_response, st, NULL);
  msgpack_sbuffer_destroy(&sb);
  if (rc != 0) {
    fprintf(stderr, "echo_client: request: %s\n", ms_strerror(rc));
    st->status = 1;
    ms_loop_stop(st->loop);
  }
}

static void on_deadline(ms_loop *loop, ms_timer *t, void *ud) {
  (void)t;
  (void)ud;
  fprintf(stderr, "echo_client: no answer in time\n");
  ms_loop_stop(loop);
}

int main(int argc, char **argv) {
  echo_state st;
  ms_client_config cfg;
  ms_client *c = NULL;
  ms_posix_client *pc = NULL;
  ms_timer *deadline = NULL;
  if (argc != 3) {
    fprintf(stderr, "usage: echo_client HUB_URL SERVICE_NAME\n");
    return 64;
  }
  memset(&st, 0, sizeof st);
  st.status = 2;
  snprintf(st.want, sizeof st.want, "ping from %s", argv[2]);
  ms_client_config_init(&cfg);
  cfg.service = argv[2];
  cfg.on_state = on_state;
  if (ms_loop_new(&st.loop, NULL) != 0 ||
      ms_client_new(&c, &cfg, &st, NULL) != 0)
    return 1;
  ms_log_set_level(c, MS_LEVEL_SILENT);
  ms_client_on(c, "echo", on_echo, NULL);
  if (ms_posix_client_new(&pc, st.loop, c, argv[1]) != 0 ||
      ms_loop_timer_start(st.loop, 10000, 0, on_deadline, NULL, &deadline) !=
          0) {
    fprintf(stderr, "echo_client: cannot start\n");
    return 1;
  }
  ms_loop_run(st.loop);
  ms_timer_stop(deadline);
  ms_posix_client_del(pc);
  ms_client_del(c);
  ms_loop_del(st.loop);
  return st.status;
}
