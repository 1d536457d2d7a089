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

/* The HTTP side (ms_conn_http.c): from the first byte of the head until
 * the WebSocket opens, or for the whole of a plain request (and the
 * keep-alive ones after it). */
struct conn_http {
  char *head; /* grows up to max_header_bytes */
  size_t head_len, head_cap, head_scan;
  ms_http_header *hdrs;
  char key_accept[29]; /* client: the Sec-WebSocket-Accept we expect */
  int http_keep;   /* server: this request may be answered keep-alive */
  size_t http_extra; /* bytes that came after the head in its feed */
  unsigned http_served; /* requests answered on this connection */
  /* Server: a plain request whose body is still arriving. */
  ms_http_request body_req; /* points into head */
  ms_buf body;
  size_t body_need;
};

/* An open connection that has been quiet long enough keeps only this
 * struct (plus what the application put on it): everything used by the
 * upgrade, by masking or by wslay is allocated apart, when needed. */
struct ms_conn {
  const ms_allocator *mem;
  ms_conn_config cfg; /* host, path, origin point into strs[] */
  ms_conn_callbacks cb;
  void *user_data;
  ms_rand *rng; /* client only: masks and the handshake key */
  struct conn_http *http;

  enum conn_state state;
  ms_life life; /* the lifetime rule of ms_common.h */
  unsigned started : 1, close_reported : 1,
      user_closed : 1, /* ms_conn_close() was called while open */
      throttled : 1,   /* output above the high-water mark: stop reading */
      force_drain : 1, /* ws_send() takes everything regardless of OUT_CHUNK */
      head_method : 1, /* server: the plain request was HEAD (no body) */
      http_streaming : 1, /* server: a chunked answer has begun */
      /* Open without wslay's context: a server connection gets one only
       * when it first needs it (anything but whole data, ping and pong
       * frames), and ms_conn_hibernate() gives it back. */
      asleep : 1,
      hibernated : 1, /* ms_conn_hibernate() succeeded, nothing woke it */
      in_frag : 1,    /* inside a fragmented message */
      msg_open : 1,   /* a data message has started and not ended */
      msg_last : 1,   /* the frame being read is its final one */
      /* Timers set outside a call that brought `now`: re-armed from the
       * next real time (ms_conn_tick). */
      rearm_close : 1, rearm_linger : 1, rearm_hs : 1,
      feed_budgeted : 1, /* see `held` */
      feed_unbounded : 1, /* this read of held input takes it all */
      resuming : 1;       /* feeding from `held` itself */
  int fatal;       /* a fatal ms_err, or 0 */
  int fail_err;    /* our own protocol failure (e.g. UTF-8), or 0 */
  uint16_t fail_code;
  uint16_t recv_code; /* the peer's close frame */
  uint16_t http_status;
  uint16_t feed_msgs; /* messages delivered by this feed (saturating) */
  ms_encoding enc;
  int now_depth;   /* inside a call that brought `now` */

  /* WebSocket. */
  wslay_event_context_ptr ws; /* NULL while asleep */
  uint64_t in_total;    /* bytes given to wslay since it was created */
  uint64_t in_framed;   /* bytes of the frames it has finished */
  uint64_t frame_size;  /* header + payload of the frame being read */
  size_t msg_frags;     /* frames of it so far */
  int64_t msg_deadline; /* it must be complete by then */
  const uint8_t *in_ptr; /* slice borrowed from ms_conn_feed() */
  size_t in_len;
  /* With feed_budgeted (the hub's connections), one feed (or resume)
   * delivers at most MS_HUB_FEED_MESSAGES messages: input left over is
   * held here (allocated only then), want_read is 0, and ms_conn_resume()
   * reads on with a fresh budget. */
  struct conn_held *held;
  char *recv_reason;    /* the peer's close reason (allocated), or NULL */
  size_t recv_reason_len;

  /* Output. */
  ms_buf out;
  size_t out_off;

  int64_t now; /* last time given to us; starts the close timer */
  int64_t hs_deadline;
  int64_t close_deadline;
  int64_t linger_deadline; /* ST_DONE: give up flushing the last output */
  char strs[]; /* host, path, origin, each NUL-terminated */
};

static inline size_t conn_out_buffered(const ms_conn *c) {
  return c->out.len - c->out_off;
}
static inline void conn_enter(ms_conn *c) { ms_life_enter(&c->life); }

/* ---- ms_conn.c ---- */
/* Keep the rest of a slice the budget stopped in (ms_conn_ws.c). */
int ms_conn_hold_input(ms_conn *c, const uint8_t *p, size_t n);
struct conn_held {
  size_t len, off;
  uint8_t data[];
};
static inline size_t conn_held_bytes(const ms_conn *c) {
  return c->held ? c->held->len - c->held->off : 0;
}
static inline int ms_conn_budget_spent(const ms_conn *c) {
  return c->feed_budgeted && !c->feed_unbounded &&
         c->feed_msgs >= MS_HUB_FEED_MESSAGES;
}
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
