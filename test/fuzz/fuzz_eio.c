/* Fuzz the Engine.IO and Socket.IO packet parsers: the input as a polling
 * payload, as one WebSocket message (text and binary), as a Socket.IO
 * packet, and as a query string. */
#include "ms_eio.h"

#include <stdlib.h>

static volatile uint8_t sink;

static void touch(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    sink ^= p[i];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_buf scratch;
  ms_buf_init(&scratch, ms_default_allocator());
  size_t pos = 0;
  for (int i = 0; i < 100000; i++) {
    ms_eio_packet pk;
    int rv = ms_eio_payload_next(data, size, &pos, &scratch, &pk);
    if (rv)
      break;
    touch(pk.data, pk.len);
    if (pk.type == MS_EIO_MESSAGE && !pk.binary) {
      ms_sio_packet sp;
      if (ms_sio_parse((const char *)pk.data, pk.len, &sp) == 0) {
        touch((const uint8_t *)sp.nsp, sp.nsp_len);
        touch((const uint8_t *)sp.data, sp.data_len);
      }
    }
  }
  ms_buf_free(&scratch);

  ms_eio_packet pk;
  for (int binary = 0; binary < 2; binary++)
    if (ms_eio_parse_ws(binary, data, size, &pk) == 0)
      touch(pk.data, pk.len);

  ms_sio_packet sp;
  if (ms_sio_parse((const char *)data, size, &sp) == 0) {
    touch((const uint8_t *)sp.nsp, sp.nsp_len);
    touch((const uint8_t *)sp.data, sp.data_len);
  }

  static const char *keys[] = {"EIO", "transport", "sid", "serviceName",
                               "token", ""};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
    char out[64];
    size_t n;
    if (ms_eio_query_get((const char *)data, size, keys[k], out, sizeof out,
                         &n) == 1)
      touch((const uint8_t *)out, n + 1);
  }
  return 0;
}
