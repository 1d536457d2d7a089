/* The hub's Socket.IO sessions over HTTP long-polling, with a fake clock
 * and no sockets: the exact text a watcher is sent for log records and a
 * refused service for its CONNECT. */
#include "ms_test.h"
#include "siosim.h"

static int64_t wall_2026(void *ud) {
  (void)ud;
  return INT64_C(1767225600123456); /* 2026-01-01T00:00:00.123456Z */
}

static void base_cfg(ms_hub_config *cfg) {
  ms_hub_config_init(cfg);
  cfg->hub_id = "hub-test";
  cfg->heartbeat_ms = 1000000;
}

static void watcher_gets_records_as_winston_objects(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *a = sim_client_new("svc-a", 0);
  CHECK(a != NULL);
  ms_log_set_clock(a, wall_2026, NULL);
  sim_add(&s, a);
  sim_pump(&s);
  char sid[24];
  CHECK_EQ_INT(sio_open(&s, NULL, sid), 0);
  char *out = malloc(65536), pkt[1024];
  CHECK(out != NULL);
  sio_poll(&s, sid, out, 65536);
  /* Fields: level, message and service are the record's own; a timestamp
   * field wins over the hub's; keys that are not strings become their
   * text; floats, bin, nesting. */
  static const uint8_t f1[] = {
      0x87, 0xa5, 'l', 'e', 'v', 'e', 'l', 0x01, 0xa3, 'p', 'c', 't', 0x5b,
      0x07, 0xa1, 'd', 0xa1, 's', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0,
      0xa1, 'b', 0xc4, 0x02, 0x00, 0xff, 0xa1, 'l', 0x92, 0xc0, 0x81,
      0xa1, 'x', 0xc3, 0xa7, 's', 'e', 'r', 'v', 'i', 'c', 'e', 0xa1, 'z'};
  CHECK_EQ_INT(ms_log_raw(a, MS_LEVEL_WARN, "disk \"full\"", 11, f1,
                          sizeof f1),
               0);
  static const uint8_t f2[] = {0x81, 0xa9, 't', 'i', 'm', 'e', 's', 't',
                               'a',  'm',  'p', 0xa1, 'T'};
  CHECK_EQ_INT(ms_log_raw(a, MS_LEVEL_INFO, "own ts", 6, f2, sizeof f2), 0);
  sim_pump(&s);
  const char *body = sio_poll(&s, sid, out, 65536);
  CHECK_EQ_INT(sio_packet(body, "42[\"log\",{\"level\":\"warn\"", pkt,
                      sizeof pkt),
               0);
  CHECK_EQ_STR(pkt, "42[\"log\",{\"level\":\"warn\",\"message\":"
                    "\"disk \\\"full\\\"\",\"service\":\"svc-a\","
                    "\"timestamp\":\"2026-01-01T00:00:00.123Z\","
                    "\"pct\":91,\"7\":\"d\",\"s\":1.5,\"b\":\"AP8=\","
                    "\"l\":[null,{\"x\":true}]}]");
  CHECK_EQ_INT(sio_packet(body, "42[\"log\",{\"level\":\"info\"", pkt,
                      sizeof pkt),
               0);
  CHECK_EQ_STR(pkt, "42[\"log\",{\"level\":\"info\",\"message\":\"own ts\","
                    "\"service\":\"svc-a\",\"timestamp\":\"T\"}]");
  free(out);
  sim_free(&s);
}

/* Resuming after records the ring no longer has: a gap event first. */
static void watcher_gets_a_gap_event(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  cfg.log_ring = 2;
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *a = sim_client_new("svc-a", 0);
  CHECK(a != NULL);
  ms_log_set_clock(a, wall_2026, NULL);
  sim_add(&s, a);
  sim_pump(&s);
  for (int i = 0; i < 5; i++)
    ms_log(a, MS_LEVEL_INFO, "r%d", i);
  sim_pump(&s);
  char sid[24];
  CHECK_EQ_INT(sio_open(&s, NULL, sid), 0);
  char *out = malloc(65536), pkt[1024];
  CHECK(out != NULL);
  sio_poll(&s, sid, out, 65536);
  char head[256];
  static const char sub[] = "42[\"subscribe\",{\"since_seq\":1}]";
  snprintf(head, sizeof head,
           "POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\n"
           "Host: x\r\nContent-Length: %zu\r\n\r\n",
           sid, sizeof sub - 1);
  sio_http(&s, head, sub, out, 65536);
  sim_pump(&s);
  const char *body = sio_poll(&s, sid, out, 65536);
  CHECK_EQ_INT(sio_packet(body, "42[\"gap\"", pkt, sizeof pkt), 0);
  CHECK_EQ_STR(pkt, "42[\"gap\",{\"missed\":2}]");
  CHECK_EQ_INT(sio_packet(body, "42[\"log\"", pkt, sizeof pkt), 0);
  CHECK_EQ_STR(pkt, "42[\"log\",{\"level\":\"info\",\"message\":\"r3\","
                    "\"service\":\"svc-a\","
                    "\"timestamp\":\"2026-01-01T00:00:00.123Z\"}]");
  free(out);
  sim_free(&s);
}

static void refused_service_gets_connect_error(void) {
  sim s;
  ms_hub_config cfg;
  base_cfg(&cfg);
  CHECK_EQ_INT(sim_init(&s, &cfg), 0);
  ms_client *a = sim_client_new("svc-a", 0);
  CHECK(a != NULL);
  sim_add(&s, a);
  sim_pump(&s);
  char sid[24], out[4096], pkt[512];
  CHECK_EQ_INT(sio_open(&s, "svc-a", sid), 0);
  const char *body = sio_poll(&s, sid, out, sizeof out);
  CHECK_EQ_INT(sio_packet(body, "44", pkt, sizeof pkt), 0);
  CHECK_EQ_STR(pkt, "44{\"message\":\"DUPLICATE_SERVICE_REGISTRATION\","
                    "\"data\":{\"code\":\"DUPLICATE_SERVICE_REGISTRATION\","
                    "\"message\":\"Duplicate Service Registration Name! A "
                    "service with the same name is already registered.\","
                    "\"errorData\":{\"serviceName\":\"svc-a\"}}}");
  sim_free(&s);
}

static const ms_test_case tests[] = {
    TEST(watcher_gets_records_as_winston_objects),
    TEST(watcher_gets_a_gap_event),
    TEST(refused_service_gets_connect_error),
};

MS_TEST_MAIN(tests)
