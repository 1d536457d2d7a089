/*
 * Hibernation: an idle open connection gives its wslay context and
 * output buffer back, and gets them again on the next byte or send.
 */
#include "ms_conn_int.h"

/* Create wslay's context for a connection that is open without one (not
 * made yet, or given back by ms_conn_hibernate). Between whole frames,
 * with nothing queued, wslay's state is its configuration alone, so a
 * fresh context continues the stream. */
int ms_conn_wake(ms_conn *c) {
  if (!c->asleep)
    return 0;
  if (ms_conn_ws_create(c) != 0) {
    ms_conn_set_fatal(c, MS_ERR_NOMEM);
    return MS_ERR_NOMEM;
  }
  c->asleep = 0;
  c->hibernated = 0;
  return 0;
}

/* Frame accounting: wslay reads ahead into its own buffer, so the only
 * way to know it holds nothing half-read is to count whole frames against
 * the bytes it was given (for ms_conn_hibernate). */
void ms_conn_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a,
                           void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(ctx);
  uint64_t hdr = 2;
  if (a->payload_length > 0xffff)
    hdr += 8;
  else if (a->payload_length >= 126)
    hdr += 2;
  if (c->cfg.role == MS_CONN_SERVER)
    hdr += 4; /* clients mask every frame */
  c->frame_size = hdr + a->payload_length;
  if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME)
    c->in_frag = !a->fin;
  else if (a->opcode == WSLAY_CONTINUATION_FRAME && a->fin)
    c->in_frag = 0;
  if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME ||
      a->opcode == WSLAY_CONTINUATION_FRAME) {
    /* wslay keeps every fragment as its own allocation until the last:
     * bound their number and the time the message may take. */
    if (!c->msg_open) {
      c->msg_open = 1;
      c->msg_frags = 0;
      c->msg_deadline = c->cfg.message_timeout_ms > 0
                            ? c->now + c->cfg.message_timeout_ms
                            : MS_NO_DEADLINE;
    }
    c->msg_last = a->fin;
    if (++c->msg_frags > c->cfg.max_fragments && !c->fail_err)
      ms_conn_ws_fail(c, MS_ERR_TOO_BIG, MS_CLOSE_TOO_BIG);
  }
}

void ms_conn_frame_end(wslay_event_context_ptr ctx, void *user_data) {
  ms_conn *c = user_data;
  MS_UNUSED(ctx);
  c->in_framed += c->frame_size;
  c->frame_size = 0;
  if (c->msg_open && c->msg_last) {
    c->msg_open = 0;
    c->msg_last = 0;
  }
}

int ms_conn_hibernate(ms_conn *c) {
  if (!c || ms_life_inside(&c->life) || c->life.dead || c->fatal)
    return MS_ERR_STATE;
  if (c->hibernated)
    return 0;
  if (conn_held_bytes(c))
    return MS_ERR_STATE; /* input held for the next turns */
  if (c->asleep) {
    /* Never needed wslay: only the output buffer to give back. */
    if (c->state != ST_OPEN || c->user_closed || c->fail_err ||
        conn_out_buffered(c) > 0)
      return MS_ERR_STATE;
    ms_buf_free(&c->out);
    c->out_off = 0;
    c->hibernated = 1;
    return 0;
  }
  if (c->state != ST_OPEN || c->user_closed || !c->ws || c->fail_err)
    return MS_ERR_STATE;
  if (conn_out_buffered(c) > 0 || wslay_event_want_write(c->ws) ||
      !wslay_event_get_read_enabled(c->ws) ||
      !wslay_event_get_write_enabled(c->ws) ||
      wslay_event_get_close_received(c->ws) ||
      wslay_event_get_close_sent(c->ws))
    return MS_ERR_STATE;
  if (c->in_framed != c->in_total || c->in_frag)
    return MS_ERR_STATE; /* wslay holds part of a frame or message */
  wslay_event_context_free(c->ws);
  c->ws = NULL;
  ms_buf_free(&c->out);
  c->out_off = 0;
  c->asleep = 1;
  c->hibernated = 1;
  return 0;
}

int ms_conn_is_hibernating(const ms_conn *c) { return c && c->hibernated; }
