/* Built from the single-header form alone (plus wslay, nettle, msgpack-c
 * and jansson): a "signer" service that answers "sign" with the token
 * ms_service_token() gives for the user it is sent, and that calls itself
 * through the hub to check the answer. Exits 0 when the answer matches,
 * 1 on an error, 2 when nothing came back in time.
 *
 * usage: single_header HUB_URL */
#define MICROSTREAM_IMPLEMENTATION
#include "microstream.h"

#include <stdio.h>
#include <string.h>

#include "declarations_only.h"

static const uint8_t key[] = "single-header key";

static void on_sign(ms_client *c, ms_reply *reply, const ms_request_arg *a,
                    void *ud) {
  char user[64], token[65];
  (void)c;
  (void)ud;
  if (a->data->type != MSGPACK_OBJECT_STR ||
      a->data->via.str.size >= sizeof user) {
    ms_reply_error(reply, "BAD_REQUEST", "a user name string", NULL, 0);
    return;
  }
  memcpy(user, a->data->via.str.ptr, a->data->via.str.size);
  user[a->data->via.str.size] = '\0';
  ms_service_token(key, sizeof key - 1, user, token);
  ms_reply_send_str(reply, token);
}

typedef struct run {
  ms_loop *loop;
  int sent, status;
} run;

static void on_answer(ms_client *c, const ms_response_arg *r, void *ud) {
  run *st = ud;
  char want[65];
  (void)c;
  ms_service_token(key, sizeof key - 1, "alice", want);
  if (r->err) {
    fprintf(stderr, "single_header: %s\n", ms_strerror(r->err));
    st->status = 1;
  } else if (r->data->type == MSGPACK_OBJECT_STR &&
             r->data->via.str.size == 64 &&
             memcmp(r->data->via.str.ptr, want, 64) == 0) {
    printf("signed: %.64s\n", r->data->via.str.ptr);
    st->status = 0;
  } else {
    fprintf(stderr, "single_header: wrong answer\n");
    st->status = 1;
  }
  ms_loop_stop(st->loop);
}

static void on_state(ms_client *c, const ms_client_state_arg *a, void *ud) {
  run *st = ms_client_user_data(c);
  (void)ud;
  if (a->state != MS_CLIENT_READY || st->sent)
    return;
  st->sent = 1;
  if (send_user(c, "signer", "sign", "alice", on_answer, st) != 0) {
    st->status = 1;
    ms_loop_stop(st->loop);
  }
}

static void on_deadline(ms_loop *loop, ms_timer *t, void *ud) {
  (void)t;
  (void)ud;
  fprintf(stderr, "single_header: no answer in time\n");
  ms_loop_stop(loop);
}

int main(int argc, char **argv) {
  run st = {NULL, 0, 2};
  ms_client_config cfg;
  ms_client *c = NULL;
  ms_posix_client *pc = NULL;
  ms_timer *t = NULL;
  if (argc != 2)
    return 64;
  ms_client_config_init(&cfg);
  cfg.service = "signer";
  cfg.on_state = on_state;
  if (ms_loop_new(&st.loop, NULL) || ms_client_new(&c, &cfg, &st, NULL))
    return 1;
  ms_log_set_level(c, MS_LEVEL_SILENT);
  ms_client_on(c, "sign", on_sign, NULL);
  if (ms_posix_client_new(&pc, st.loop, c, argv[1]) ||
      ms_loop_timer_start(st.loop, 5000, 0, on_deadline, NULL, &t))
    return 1;
  ms_loop_run(st.loop);
  ms_timer_stop(t);
  ms_posix_client_del(pc);
  ms_client_del(c);
  ms_loop_del(st.loop);
  return st.status;
}
