/*
 * ms-bench: the microstream side of the benchmark, on the public client
 * API and the POSIX loop (a separate process from the hub).
 *
 *   ms-bench echo --url URL                 service "echo", answers event
 *                                           "echo" with the bytes it got
 *   ms-bench req --url URL --conc C ...     requester: C requests in flight,
 *                                           each response sends the next
 *   ms-bench idle --url URL --n N           N registered services that do
 *                                           nothing (default heartbeat);
 *                                           prints "ready N", runs until
 *                                           stdin closes
 */
#include <microstream/ms_posix.h>

#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "bench_common.h"

#ifdef MS_HAVE_TLS
#include <microstream/ms_tls.h>
#include <stdlib.h>
#include <string.h>
/* wss:// URLs: trust the CA in $MS_BENCH_CA (or the system's store). */
static const ms_stream_wrap *bench_tls(const char *url) {
  static ms_tls *t;
  if (strncmp(url, "wss://", 6) != 0)
    return NULL;
  if (!t) {
    char err[256] = "";
    if (ms_tls_client_new(&t, getenv("MS_BENCH_CA"), NULL, NULL, err,
                          sizeof err) != 0) {
      fprintf(stderr, "ms-bench: %s\n", err);
      exit(1);
    }
  }
  return ms_tls_wrap(t);
}
#else
static const ms_stream_wrap *bench_tls(const char *url) {
  (void)url;
  return NULL;
}
#endif
static const char *g_url;

/* ---- echo ---------------------------------------------------------------- */

static msgpack_sbuffer echo_buf;

static void on_echo(ms_client *c, ms_reply *reply, const ms_request_arg *req,
                    void *ud) {
  msgpack_packer pk;
  /* Re-encode the decoded object: the same bytes for a bin or str. */
  msgpack_sbuffer_clear(&echo_buf);
  msgpack_packer_init(&pk, &echo_buf, msgpack_sbuffer_write);
  msgpack_pack_object(&pk, *req->data);
  ms_reply_send(reply, (const uint8_t *)echo_buf.data, echo_buf.size);
}

/* ---- requester ----------------------------------------------------------- */

typedef struct req_state {
  ms_client *c;
  ms_loop *loop;
  bench_phase ph;
  int64_t sent[BENCH_MAX_CONC];
  uint8_t payload[2 + BENCH_PAYLOAD]; /* bin 8, 64 bytes */
  int in_flight;
  int started;
} req_state;

static req_state rs;

static void on_response(ms_client *c, const ms_response_arg *a, void *ud);

static int send_one(uintptr_t slot) {
  rs.sent[slot] = bench_now_ns();
  if (ms_client_request(rs.c, "echo", "echo", rs.payload, sizeof rs.payload,
                        NULL, on_response, (void *)slot, NULL) != 0)
    return -1;
  rs.in_flight++;
  return 0;
}

static void on_response(ms_client *c, const ms_response_arg *a, void *ud) {
  uintptr_t slot = (uintptr_t)ud;
  int64_t now = bench_now_ns();
  int bad = a->err != 0 || a->data->type != MSGPACK_OBJECT_BIN ||
            a->data->via.bin.size != BENCH_PAYLOAD;
  rs.in_flight--;
  if (!bench_phase_tick(&rs.ph, now, now - rs.sent[slot], bad))
    send_one(slot);
  if (rs.ph.done && rs.in_flight == 0) ms_loop_stop(rs.loop);
}

static void on_req_state(ms_client *c, const ms_client_state_arg *a,
                         void *ud) {
  int i;
  if (a->state != MS_CLIENT_READY || rs.started) return;
  rs.started = 1;
  bench_phase_start(&rs.ph);
  for (i = 0; i < rs.ph.o->conc; i++) send_one((uintptr_t)i);
}

/* ---- idle ---------------------------------------------------------------- */

static long idle_ready, idle_n;
static int idle_announced;

static void on_idle_state(ms_client *c, const ms_client_state_arg *a,
                          void *ud) {
  int *was_ready = ud;
  if (a->state == MS_CLIENT_READY && !*was_ready) {
    *was_ready = 1;
    idle_ready++;
  } else if (a->state != MS_CLIENT_READY && *was_ready) {
    *was_ready = 0;
    idle_ready--;
  }
}

static void on_stdin(ms_loop *loop, int fd, unsigned ev, void *ud) {
  char b[256];
  if (read(fd, b, sizeof b) <= 0) ms_loop_stop(loop);
}

static void on_idle_timer(ms_loop *loop, ms_timer *t, void *ud) {
  if (!idle_announced && idle_ready == idle_n) {
    idle_announced = 1;
    printf("ready %ld\n", idle_n);
    fflush(stdout);
  }
}

/* ---- main ---------------------------------------------------------------- */

static ms_client *new_client(const char *name, void (*on_state)(
                                 ms_client *, const ms_client_state_arg *,
                                 void *), void *ud) {
  ms_client_config cfg;
  ms_client *c;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.on_state = on_state;
  cfg.max_pending = BENCH_MAX_CONC * 2;
  cfg.default_timeout_ms = 10000;
  cfg.tls = bench_tls(g_url);
  if (ms_client_new(&c, &cfg, ud, NULL) != 0) return NULL;
  ms_log_set_level(c, MS_LEVEL_WARN);
  return c;
}

int main(int argc, char **argv) {
  bench_opts o;
  ms_loop *loop;
  int rc = 0;
  signal(SIGPIPE, SIG_IGN);
  if (bench_parse(argc, argv, &o) != 0) {
    fprintf(stderr, BENCH_USAGE, argv[0]);
    return 2;
  }  g_url = o.url;

  bench_raise_nofile();
  if (ms_loop_new(&loop, NULL) != 0) return 1;

  if (!strcmp(o.mode, "echo")) {
    ms_client *c = new_client("echo", NULL, NULL);
    ms_posix_client *pc;
    msgpack_sbuffer_init(&echo_buf);
    if (!c || ms_client_on(c, "echo", on_echo, NULL) != 0 ||
        ms_posix_client_new(&pc, loop, c, o.url) != 0)
      return 1;
    ms_loop_watch(loop, 0, MS_EV_READ, on_stdin, NULL);
    rc = ms_loop_run(loop);
    ms_posix_client_del(pc);
    ms_client_del(c);
    msgpack_sbuffer_destroy(&echo_buf);
  } else if (!strcmp(o.mode, "req")) {
    ms_posix_client *pc;
    rs.loop = loop;
    rs.payload[0] = 0xc4;
    rs.payload[1] = BENCH_PAYLOAD;
    memset(rs.payload + 2, 'x', BENCH_PAYLOAD);
    bench_phase_init(&rs.ph, &o);
    rs.c = new_client("requester", on_req_state, NULL);
    if (!rs.c || ms_posix_client_new(&pc, loop, rs.c, o.url) != 0) return 1;
    rc = ms_loop_run(loop);
    bench_phase_report(&rs.ph);
    ms_posix_client_del(pc);
    ms_client_del(rs.c);
    free(rs.ph.lat.v);
  } else if (!strcmp(o.mode, "idle")) {
    long i;
    ms_client **cs = calloc((size_t)o.n, sizeof *cs);
    ms_posix_client **pcs = calloc((size_t)o.n, sizeof *pcs);
    int *ready = calloc((size_t)o.n, sizeof *ready);
    ms_timer *t;
    char name[160];
    idle_n = o.n;
    if (!cs || !pcs || !ready) return 1;
    for (i = 0; i < o.n; i++) {
      snprintf(name, sizeof name, "%s-%ld", o.name, i);
      cs[i] = new_client(name, on_idle_state, &ready[i]);
      if (!cs[i] || ms_posix_client_new(&pcs[i], loop, cs[i], o.url) != 0) {
        fprintf(stderr, "ms-bench: client %ld failed\n", i);
        return 1;
      }
      /* Let the hub accept as we go rather than flood its backlog. */
      if (i % 200 == 199) ms_loop_run_once(loop, 0);
    }
    ms_loop_timer_start(loop, 50, 50, on_idle_timer, NULL, &t);
    ms_loop_watch(loop, 0, MS_EV_READ, on_stdin, NULL);
    rc = ms_loop_run(loop);
    ms_timer_stop(t);
    for (i = 0; i < o.n; i++) {
      ms_posix_client_del(pcs[i]);
      ms_client_del(cs[i]);
    }
    free(cs);
    free(pcs);
    free(ready);
  } else {
    fprintf(stderr, BENCH_USAGE, argv[0]);
    return 2;
  }
  ms_loop_del(loop);
  return rc == 0 ? 0 : 1;
}
