/* Engine.IO protocol 4 and Socket.IO protocol 5 packets: parsing and the
 * few encodings the hub needs. Pure functions over caller buffers; nothing
 * here knows about sessions (ms_hub_sio.c has those). */
#ifndef MS_EIO_H
#define MS_EIO_H

#include "ms_internal.h"

#include <stddef.h>
#include <stdint.h>

/* ---- Engine.IO ---------------------------------------------------------- */

enum {
  MS_EIO_OPEN = 0,
  MS_EIO_CLOSE = 1,
  MS_EIO_PING = 2,
  MS_EIO_PONG = 3,
  MS_EIO_MESSAGE = 4,
  MS_EIO_UPGRADE = 5,
  MS_EIO_NOOP = 6
};

/* Polling payloads separate packets with this byte. */
#define MS_EIO_SEP 0x1e

typedef struct ms_eio_packet {
  int type;            /* MS_EIO_* */
  int binary;          /* a binary message (type MS_EIO_MESSAGE) */
  const uint8_t *data; /* after the type character; for binary: the bytes */
  size_t len;
} ms_eio_packet;

/* One WebSocket message as an Engine.IO packet: text is a type digit and
 * its data; a binary message is a binary MESSAGE. Returns 0 or
 * MS_ERR_BAD_MESSAGE (empty text, unknown type). */
int ms_eio_parse_ws(int binary, const uint8_t *p, size_t n,
                    ms_eio_packet *out);

/* The next packet of a polling payload (packets joined by 0x1e; binary ones
 * as 'b' + standard base64, decoded into `scratch`, which must outlive the
 * use of out->data). *pos starts at 0. Returns 0, MS_ERR_NEED_MORE when the
 * payload is exhausted, MS_ERR_BAD_MESSAGE, MS_ERR_NOMEM. An empty payload
 * is malformed (MS_ERR_BAD_MESSAGE on the first call). */
int ms_eio_payload_next(const uint8_t *body, size_t len, size_t *pos,
                        ms_buf *scratch, ms_eio_packet *out);

/* The value of `key` in a URL query string (a=b&c=d), percent-decoded
 * ('+' is a space) into out[0..cap) and NUL-terminated. Returns 1 found,
 * 0 absent, -1 malformed escape or longer than cap - 1. */
int ms_eio_query_get(const char *q, size_t qlen, const char *key, char *out,
                     size_t cap, size_t *out_len);

/* ---- Socket.IO ---------------------------------------------------------- */

enum {
  MS_SIO_CONNECT = 0,
  MS_SIO_DISCONNECT = 1,
  MS_SIO_EVENT = 2,
  MS_SIO_ACK = 3,
  MS_SIO_CONNECT_ERROR = 4,
  MS_SIO_BINARY_EVENT = 5,
  MS_SIO_BINARY_ACK = 6
};

typedef struct ms_sio_packet {
  int type;           /* MS_SIO_* */
  uint64_t attachments; /* binary types: the count before '-' */
  const char *nsp;    /* namespace; "/" when absent */
  size_t nsp_len;
  int has_ack;
  uint64_t ack_id;
  const char *data;   /* the JSON text that follows, maybe empty */
  size_t data_len;
} ms_sio_packet;

/* Parse the text of one Socket.IO packet (the data of an Engine.IO
 * MESSAGE): type digit, for binary types "<n>-", an optional "/nsp,", an
 * optional ack id, then JSON (not validated here). Returns 0 or
 * MS_ERR_BAD_MESSAGE. */
int ms_sio_parse(const char *p, size_t n, ms_sio_packet *out);

#endif
