/* Engine.IO / Socket.IO packet parsing (lib/ms_eio.c). */
#include "ms_eio.h"
#include "ms_test.h"

static const ms_allocator *mem(void) { return ms_default_allocator(); }

static void payload_splits_at_record_separators(void) {
  static const char body[] = "40\x1e" "42[\"a\",1]\x1e" "3";
  ms_buf b;
  ms_buf_init(&b, mem());
  size_t pos = 0;
  ms_eio_packet p;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)body, sizeof body - 1,
                                   &pos, &b, &p), 0);
  CHECK_EQ_INT(p.type, MS_EIO_MESSAGE);
  CHECK_MEM(p.data, p.len, "0", 1);
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)body, sizeof body - 1,
                                   &pos, &b, &p), 0);
  CHECK_MEM(p.data, p.len, "2[\"a\",1]", 8);
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)body, sizeof body - 1,
                                   &pos, &b, &p), 0);
  CHECK_EQ_INT(p.type, MS_EIO_PONG);
  CHECK_EQ_INT(p.len, 0);
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)body, sizeof body - 1,
                                   &pos, &b, &p), MS_ERR_NEED_MORE);
  ms_buf_free(&b);
}

static void payload_binary_is_base64(void) {
  static const char body[] = "bAQID/w==\x1e" "4x";
  ms_buf b;
  ms_buf_init(&b, mem());
  size_t pos = 0;
  ms_eio_packet p;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)body, sizeof body - 1,
                                   &pos, &b, &p), 0);
  CHECK(p.binary);
  CHECK_MEM(p.data, p.len, "\x01\x02\x03\xff", 4);
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)body, sizeof body - 1,
                                   &pos, &b, &p), 0);
  CHECK(!p.binary);
  pos = 0;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)"b!!!!", 5, &pos, &b, &p),
               MS_ERR_BAD_MESSAGE);
  pos = 0;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)"bAQI=", 5, &pos, &b, &p),
               0);
  CHECK_EQ_INT(p.len, 2);
  ms_buf_free(&b);
}

static void payload_rejects_empty_and_unknown(void) {
  ms_buf b;
  ms_buf_init(&b, mem());
  ms_eio_packet p;
  size_t pos = 0;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)"", 0, &pos, &b, &p),
               MS_ERR_BAD_MESSAGE);
  pos = 0;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)"4a\x1e", 3, &pos, &b, &p),
               MS_ERR_BAD_MESSAGE); /* a trailing separator: empty packet */
  pos = 0;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)"7", 1, &pos, &b, &p),
               MS_ERR_BAD_MESSAGE);
  pos = 0;
  CHECK_EQ_INT(ms_eio_payload_next((const uint8_t *)"\x1e" "4", 2, &pos, &b,
                                   &p),
               MS_ERR_BAD_MESSAGE);
  ms_buf_free(&b);
}

static void websocket_packets(void) {
  ms_eio_packet p;
  CHECK_EQ_INT(ms_eio_parse_ws(0, (const uint8_t *)"2probe", 6, &p), 0);
  CHECK_EQ_INT(p.type, MS_EIO_PING);
  CHECK_MEM(p.data, p.len, "probe", 5);
  CHECK_EQ_INT(ms_eio_parse_ws(1, (const uint8_t *)"\x00\x01", 2, &p), 0);
  CHECK(p.binary && p.type == MS_EIO_MESSAGE && p.len == 2);
  CHECK_EQ_INT(ms_eio_parse_ws(0, (const uint8_t *)"", 0, &p),
               MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_eio_parse_ws(0, (const uint8_t *)"x", 1, &p),
               MS_ERR_BAD_MESSAGE);
}

static void query_values_are_percent_decoded(void) {
  static const char q[] = "EIO=4&transport=polling&serviceName=a%20b+c&t=x&"
                          "bad=%2&sid=";
  char out[16];
  size_t n;
  CHECK_EQ_INT(ms_eio_query_get(q, sizeof q - 1, "EIO", out, sizeof out, &n),
               1);
  CHECK_EQ_STR(out, "4");
  CHECK_EQ_INT(ms_eio_query_get(q, sizeof q - 1, "serviceName", out,
                                sizeof out, &n), 1);
  CHECK_EQ_STR(out, "a b c");
  CHECK_EQ_INT(n, 5);
  CHECK_EQ_INT(ms_eio_query_get(q, sizeof q - 1, "bad", out, sizeof out, &n),
               -1);
  CHECK_EQ_INT(ms_eio_query_get(q, sizeof q - 1, "sid", out, sizeof out, &n),
               1);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_INT(ms_eio_query_get(q, sizeof q - 1, "token", out, sizeof out,
                                &n), 0);
  /* "t" must not match "transport" */
  CHECK_EQ_INT(ms_eio_query_get(q, sizeof q - 1, "t", out, sizeof out, &n), 1);
  CHECK_EQ_STR(out, "x");
  /* longer than the room given */
  CHECK_EQ_INT(ms_eio_query_get(q, sizeof q - 1, "transport", out, 4, &n), -1);
}

static void socketio_packets(void) {
  ms_sio_packet p;
  static const char ev[] = "2[\"request\",{\"a\":1}]";
  CHECK_EQ_INT(ms_sio_parse(ev, sizeof ev - 1, &p), 0);
  CHECK_EQ_INT(p.type, MS_SIO_EVENT);
  CHECK_MEM(p.nsp, p.nsp_len, "/", 1);
  CHECK(!p.has_ack);
  CHECK_MEM(p.data, p.data_len, ev + 1, sizeof ev - 2);
  static const char ack[] = "2/admin,17[\"x\"]";
  CHECK_EQ_INT(ms_sio_parse(ack, sizeof ack - 1, &p), 0);
  CHECK_MEM(p.nsp, p.nsp_len, "/admin", 6);
  CHECK(p.has_ack);
  CHECK_EQ_INT(p.ack_id, 17);
  CHECK_MEM(p.data, p.data_len, "[\"x\"]", 5);
  static const char bin[] = "51-[\"e\",{\"_placeholder\":true,\"num\":0}]";
  CHECK_EQ_INT(ms_sio_parse(bin, sizeof bin - 1, &p), 0);
  CHECK_EQ_INT(p.type, MS_SIO_BINARY_EVENT);
  CHECK_EQ_INT(p.attachments, 1);
  CHECK_EQ_INT(ms_sio_parse("0", 1, &p), 0);
  CHECK_EQ_INT(p.type, MS_SIO_CONNECT);
  CHECK_EQ_INT(p.data_len, 0);
  CHECK_EQ_INT(ms_sio_parse("5[", 2, &p), MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_sio_parse("8", 1, &p), MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_sio_parse("", 0, &p), MS_ERR_BAD_MESSAGE);
  CHECK_EQ_INT(ms_sio_parse("21234567890123456[]", 19, &p),
               MS_ERR_BAD_MESSAGE);
}

static const ms_test_case tests[] = {
    TEST(payload_splits_at_record_separators),
    TEST(payload_binary_is_base64),
    TEST(payload_rejects_empty_and_unknown),
    TEST(websocket_packets),
    TEST(query_values_are_percent_decoded),
    TEST(socketio_packets),
};

MS_TEST_MAIN(tests)
