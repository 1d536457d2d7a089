/*
 * The state of one ms_conn, shared by the files that do its jobs:
 * ms_conn.c (lifetime, public calls, output), ms_conn_http.c (upgrade and
 * plain HTTP), ms_conn_ws.c (WebSocket session) and ms_conn_sleep.c
 * (hibernation). Not installed.
 */
#ifndef MS_CONN_INT_H
#define MS_CONN_INT_H

#include <microstream/ms_conn.h>

#include "ms_http.h"
#include "ms_internal.h"
#include "ms_rand.h"

#include <wslay/wslay.h>

/* Pull from wslay only while less than this is buffered (ms_conn_ws.c). */
#define MS_CONN_OUT_CHUNK (64 * 1024)

enum conn_state {
  ST_IDLE,      /* client before ms_conn_start */
  ST_HEAD,      /* exchanging the HTTP upgrade */
  ST_HTTP_BODY, /* server: plain HTTP request, reading its body */
  ST_HTTP_WAIT, /* server: plain HTTP request, waiting for a response */
  ST_OPEN,      /* WebSocket open */
  ST_CLOSING,   /* we sent a close, waiting for the peer's */
  ST_DONE       /* over; output may still be flushing */
};

struct ms_conn {
  const ms_allocator *mem;
  ms_conn_config cfg; /* strings point at our own copies below */
  char *host, *path, *origin;
  ms_conn_callbacks cb;
  void *user_data;
  ms_rand rng;

  enum conn_state state;
  int started;
  ms_life life; /* the lifetime rule of ms_common.h */
  int close_reported;
  int user_closed; /* ms_conn_close() was called while open */
  int throttled;   /* output above the high-water mark: stop reading */
  int force_drain; /* ws_send() takes everything regardless of OUT_CHUNK */
  int head_method; /* server: the plain request was HEAD (no body) */
  int http_streaming; /* server: a chunked answer has begun */
  int http_status;
  int http_keep;   /* server: this request may be answered keep-alive */
  size_t http_extra; /* bytes that came after the head in its feed */
  unsigned http_served; /* requests answered on this connection */
  int fatal;       /* a fatal ms_err, or 0 */
  int fail_err;    /* our own protocol failure (e.g. UTF-8), or 0 */
  uint16_t fail_code;

  /* HTTP head, until the upgrade completes. */
  char *head;
  size_t head_len, head_scan;
  ms_http_header *hdrs;
  char key_accept[29]; /* client: the Sec-WebSocket-Accept we expect */
  /* Server: a plain request whose body is still arriving. */
  ms_http_request body_req; /* points into head */
  ms_buf body;
  size_t body_need;

  /* WebSocket. */
  wslay_event_context_ptr ws; /* NULL while asleep */
  int asleep;           /* ms_conn_hibernate() released the contexts */
  uint64_t in_total;    /* bytes given to wslay since it was created */
  uint64_t in_framed;   /* bytes of the frames it has finished */
  uint64_t frame_size;  /* header + payload of the frame being read */
  int in_frag;          /* inside a fragmented message */
  int msg_open;         /* a data message has started and not ended */
  int msg_last;         /* the frame being read is its final one */
  size_t msg_frags;     /* frames of it so far */
  int64_t msg_deadline; /* it must be complete by then */
  const uint8_t *in_ptr; /* slice borrowed from ms_conn_feed() */
  size_t in_len;
  ms_encoding enc;

  /* The peer's close frame. */
  uint16_t recv_code;
  char recv_reason[124];
  size_t recv_reason_len;

  /* Output. */
  ms_buf out;
  size_t out_off;

  int64_t now; /* last time given to us; starts the close timer */
  int now_depth;       /* inside a call that brought `now` */
  int rearm_close;     /* close/linger timers set outside such a call: */
  int rearm_linger;    /* re-armed from the next real time (ms_conn_tick) */
  int rearm_hs;
  int64_t hs_deadline;
  int64_t close_deadline;
  int64_t linger_deadline; /* ST_DONE: give up flushing the last output */
};

static inline size_t conn_out_buffered(const ms_conn *c) {
  return c->out.len - c->out_off;
}
static inline void conn_enter(ms_conn *c) { ms_life_enter(&c->life); }

/* ---- ms_conn.c ---- */
/* For ms_pump(): keep c alive across a pump; release returns 1 when c
 * was deleted meanwhile and is now freed. */
void ms_conn_hold(ms_conn *c);
int ms_conn_release(ms_conn *c);
/* Leave a call entered with conn_enter(); returns 1 when c was freed. */
int ms_conn_leave(ms_conn *c);
int64_t ms_conn_arm(ms_conn *c, int64_t ms, int *rearm);
void ms_conn_discard_output(ms_conn *c);
void ms_conn_update_throttle(ms_conn *c);
void ms_conn_report_close(ms_conn *c, int err, uint16_t code,
                          const char *reason, size_t reason_len, int by_peer,
                          int http_status);
int ms_conn_out_append(ms_conn *c, const void *p, size_t n);
void ms_conn_set_fatal(ms_conn *c, int err);

/* ---- ms_conn_http.c ---- */
const char *ms_conn_enc_name(ms_encoding e);
ms_encoding ms_conn_enc_from_name(const char *s, size_t len);
int ms_conn_write_upgrade_request(ms_conn *c);
int ms_conn_feed_head(ms_conn *c, const uint8_t *data, size_t len);
void ms_conn_free_head(ms_conn *c);
/* Body bytes of a plain request (ST_HTTP_BODY). */
int ms_conn_feed_body(ms_conn *c, const uint8_t *data, size_t len);

/* ---- ms_conn_ws.c ---- */
int ms_conn_ws_create(ms_conn *c);
int ms_conn_feed_ws(ms_conn *c, const uint8_t *data, size_t len);
void ms_conn_pull(ms_conn *c, int force);
void ms_ws_mask(uint8_t *dst, const uint8_t *src, size_t n,
                const uint8_t key[4]);

/* ---- ms_conn_sleep.c ---- */
int ms_conn_wake(ms_conn *c);
/* Fail the WebSocket connection ourselves with code (RFC 6455 7.1.7). */
void ms_conn_ws_fail(ms_conn *c, int err, uint16_t code);
/* Report the close once wslay stopped reading (after a failure). */
void ms_conn_after_recv(ms_conn *c);
void ms_conn_frame_start(wslay_event_context_ptr ctx,
                         const struct wslay_event_on_frame_recv_start_arg *a,
                         void *user_data);
void ms_conn_frame_end(wslay_event_context_ptr ctx, void *user_data);

#endif
