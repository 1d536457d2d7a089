/* A hub and its clients in one process with no sockets and a fake clock:
 * bytes are moved between the engines' peek/consume and feed. A client can
 * be stalled (the hub's output to it is not delivered) to play a slow
 * consumer. */
#ifndef HUBSIM_H
#define HUBSIM_H

#include <microstream/microstream.h>

#include <stdlib.h>
#include <string.h>

#ifndef SIM_MAX
#define SIM_MAX 32
#endif

typedef struct sim_client {
  ms_client *c;
  ms_hub_conn *hc;
  int stalled;
  int muted;   /* what the client sends never reaches the hub */
  size_t drip; /* hub output taken at most this much at a time (0: all),
                  as from a socket buffer that keeps filling up */
  int connected;
} sim_client;

typedef struct sim {
  ms_hub *hub;
  int64_t now;
  sim_client cl[SIM_MAX];
  int n;
} sim;

static inline int sim_init(sim *s, const ms_hub_config *cfg) {
  memset(s, 0, sizeof *s);
  s->now = 1000000;
  return ms_hub_new(&s->hub, cfg, NULL, NULL);
}

/* Add a client (created by the caller, not yet connected). */
static inline int sim_add(sim *s, ms_client *c) {
  s->cl[s->n].c = c;
  return s->n++;
}

static inline void sim_drop(sim *s, int i) {
  sim_client *k = &s->cl[i];
  if (k->hc) {
    ms_hub_conn_eof(k->hc, s->now);
    ms_hub_conn_release(k->hc);
    k->hc = NULL;
  }
  if (k->connected) {
    ms_client_disconnected(k->c, s->now);
    k->connected = 0;
  }
}

/* Move bytes until nothing moves (bounded). */
static inline void sim_pump(sim *s) {
  int held = 1;
  for (int round = 0; round < 10000; round++) {
    int moved = 0;
    /* One more share of the input the feed budget held back, as a
     * transport does once per loop turn. */
    int more = ms_hub_resume_input(s->hub, s->now);
    if (more || held)
      moved = 1;
    held = more;
    for (int i = 0; i < s->n; i++) {
      sim_client *k = &s->cl[i];
      if (!k->c)
        continue;
      if (!k->connected && ms_client_want_connect(k->c, s->now)) {
        ms_client_connecting(k->c, s->now);
        if (ms_hub_accept(s->hub, &k->hc, k, s->now) == 0) {
          k->connected = 1;
          ms_client_connected(k->c, s->now);
        } else {
          ms_client_disconnected(k->c, s->now);
        }
        moved = 1;
      }
      if (!k->connected)
        continue;
      size_t len;
      const uint8_t *p = ms_client_peek(k->c, &len);
      if (len && ms_hub_conn_want_read(k->hc)) {
        if (!k->muted)
          ms_hub_conn_feed(k->hc, p, len, s->now);
        ms_client_consume(k->c, len);
        moved = 1;
      }
      if (!k->stalled) {
        p = ms_hub_conn_peek(k->hc, &len);
        if (k->drip && len > k->drip)
          len = k->drip;
        if (len) {
          ms_client_feed(k->c, p, len, s->now);
          ms_hub_conn_consume(k->hc, len);
          moved = 1;
        }
      }
      /* A stream both sides are done with ends. */
      if (!ms_hub_conn_want_read(k->hc) && !ms_hub_conn_want_write(k->hc)) {
        sim_drop(s, i);
        moved = 1;
      } else if (!ms_client_want_read(k->c) && !ms_client_want_write(k->c) &&
                 !k->stalled) {
        sim_drop(s, i);
        moved = 1;
      }
    }
    while (ms_hub_next_dirty(s->hub))
      ;
    if (!moved)
      return;
  }
}

/* Advance the clock by ms in steps, running every timer that falls due. */
static inline void sim_advance(sim *s, int64_t ms) {
  int64_t end = s->now + ms;
  for (;;) {
    int64_t next = ms_hub_next_deadline(s->hub);
    for (int i = 0; i < s->n; i++)
      if (s->cl[i].c) {
        int64_t d = ms_client_next_deadline(s->cl[i].c);
        if (d < next)
          next = d;
      }
    if (next < s->now)
      next = s->now;
    if (next > end)
      next = end;
    s->now = next;
    ms_hub_tick(s->hub, s->now);
    for (int i = 0; i < s->n; i++)
      if (s->cl[i].c)
        ms_client_tick(s->cl[i].c, s->now);
    sim_pump(s);
    if (s->now >= end)
      return;
  }
}

static inline void sim_free(sim *s) {
  for (int i = 0; i < s->n; i++) {
    if (s->cl[i].hc)
      ms_hub_conn_release(s->cl[i].hc);
    ms_client_del(s->cl[i].c);
  }
  ms_hub_del(s->hub);
}

static inline ms_client *sim_client_new(const char *name, int watch) {
  ms_client_config cfg;
  ms_client_config_init(&cfg);
  cfg.service = name;
  cfg.watch = watch;
  cfg.seed = 42;
  cfg.backoff_min_ms = 10;
  cfg.backoff_max_ms = 50;
  ms_client *c = NULL;
  if (ms_client_new(&c, &cfg, NULL, NULL) != 0)
    return NULL;
  ms_log_set_sink(c, NULL, NULL);
  ms_log_set_level(c, MS_LEVEL_DEBUG);
  return c;
}

#endif
