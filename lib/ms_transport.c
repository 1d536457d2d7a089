/*
 * microstream: moving bytes between one sans-IO engine and one transport.
 *
 * ms_pump() is the only glue an event loop needs: it is called when the
 * transport is readable or writable, or after the engine was ticked or
 * given something to send.
 */
#include "ms_internal.h"

#include <microstream/ms_transport.h>

#include "ms_conn_int.h"

/* A stack buffer this size keeps one read syscall per typical batch. */
#define PUMP_READ_CHUNK (64 * 1024)
#define PUMP_DEFAULT_MAX_READ (256 * 1024)

static int pump_mask(const ms_engine_ops *ops, void *engine) {
  int r = ops->want_read(engine);
  int w = ops->want_write(engine);
  if (!r && !w)
    return MS_PUMP_DONE;
  return (r ? MS_PUMP_WANT_READ : 0) | (w ? MS_PUMP_WANT_WRITE : 0);
}

/* Write until the engine has nothing to show or the transport pushes
 * back. Returns 0, or a negative value if the transport failed (already
 * reported to the engine with eof()). */
static int pump_write_some(const ms_engine_ops *ops, void *engine,
                           const ms_transport *t, int64_t now) {
  for (;;) {
    size_t len = 0;
    const uint8_t *p = ops->peek(engine, &len);
    if (!p || len == 0)
      return 0;
    ptrdiff_t n = t->vt->write(t->self, p, len);
    if (n == MS_ERR_WOULDBLOCK)
      return 0;
    if (n < 0) {
      ops->eof(engine, now);
      return (int)n;
    }
    if (n == 0)
      return 0;
    ops->consume(engine, (size_t)n);
    if ((size_t)n < len)
      return 0; /* short write: the kernel buffer is full */
  }
}

static void hold(const ms_engine_ops *ops, void *engine) {
  if (ops->hold)
    ops->hold(engine);
}

/* The pump's result once the engine is let go. */
static int release(const ms_engine_ops *ops, void *engine, int result) {
  if (ops->release && ops->release(engine))
    return MS_PUMP_FREED;
  return result;
}

int ms_pump(const ms_engine_ops *ops, void *engine, const ms_transport *t,
            size_t max_read, int64_t now) {
  uint8_t buf[PUMP_READ_CHUNK];
  size_t total = 0;
  if (max_read == 0)
    max_read = PUMP_DEFAULT_MAX_READ;
  hold(ops, engine);

  while (total < max_read && ops->want_read(engine)) {
    size_t want = MS_MIN(sizeof(buf), max_read - total);
    ptrdiff_t n = t->vt->read(t->self, buf, want);
    if (n == MS_ERR_WOULDBLOCK)
      break;
    if (n <= 0) {
      /* End of stream or a failed read: the engine decides what that
       * means (close 1006, reconnect ...). */
      ops->eof(engine, now);
      break;
    }
    int rv = ops->feed(engine, buf, (size_t)n, now);
    if (rv < 0 && ms_err_is_fatal(rv))
      return release(ops, engine, rv);
    total += (size_t)n;
  }

  pump_write_some(ops, engine, t, now);
  return release(ops, engine, pump_mask(ops, engine));
}

int ms_pump_write(const ms_engine_ops *ops, void *engine,
                  const ms_transport *t, int64_t now) {
  hold(ops, engine);
  pump_write_some(ops, engine, t, now);
  return release(ops, engine, pump_mask(ops, engine));
}

/* ---- ms_conn as an engine ------------------------------------------------ */

static int conn_feed(void *e, const uint8_t *data, size_t len, int64_t now) {
  return ms_conn_feed((ms_conn *)e, data, len, now);
}
static const uint8_t *conn_peek(void *e, size_t *len) {
  return ms_conn_peek((ms_conn *)e, len);
}
static void conn_consume(void *e, size_t n) {
  ms_conn_consume((ms_conn *)e, n);
}
static int conn_want_read(const void *e) {
  return ms_conn_want_read((const ms_conn *)e);
}
static int conn_want_write(const void *e) {
  return ms_conn_want_write((const ms_conn *)e);
}
static void conn_eof(void *e, int64_t now) { ms_conn_eof((ms_conn *)e, now); }
static void conn_hold(void *e) { ms_conn_hold((ms_conn *)e); }
static int conn_release(void *e) { return ms_conn_release((ms_conn *)e); }

const ms_engine_ops ms_conn_engine_ops = {
    conn_feed,       conn_peek, conn_consume, conn_want_read,
    conn_want_write, conn_eof,  conn_hold,    conn_release,
};
