/* The library has no random source of its own: what needs randomness
 * fails with MS_ERR_RANDOM when none is installed or the installed one
 * fails, and works again once one is there. */
#include "ms_test.h"

#include <microstream/microstream.h>

#define T0 1000

static int failing(void *buf, size_t len, void *ud) {
  (void)buf;
  (void)len;
  (void)ud;
  return MS_ERR_IO;
}

/* Runs the creations with `fn` installed (NULL: none), then restores the
 * test source. */
static void creations(ms_random_fn fn, int want, int want_client) {
  ms_set_random(fn, NULL);
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  ms_hub *h = NULL;
  int hub_rv = ms_hub_new(&h, &hc, NULL, NULL);
  /* A client WebSocket needs masks; a server one does not. */
  ms_conn_config cc;
  ms_conn_config_init(&cc, MS_CONN_CLIENT);
  ms_conn_callbacks cb;
  memset(&cb, 0, sizeof cb);
  ms_conn *c = NULL;
  int conn_rv = ms_conn_new(&c, &cc, &cb, NULL, NULL);
  ms_conn_config_init(&cc, MS_CONN_SERVER);
  ms_conn *s = NULL;
  int srv_rv = ms_conn_new(&s, &cc, &cb, NULL, NULL);
  /* A client is created without a source (ids are not secret) but cannot
   * connect; a source that fails is an error at once. */
  ms_client_config ccfg;
  ms_client_config_init(&ccfg);
  ccfg.service = "svc";
  ms_client *cl = NULL;
  int client_rv = ms_client_new(&cl, &ccfg, NULL, NULL);
  int connect_rv = cl ? ms_client_connected(cl, T0) : -1;
  ms_set_random(ms_test_random_, NULL);
  ms_hub_del(h);
  ms_conn_del(c);
  ms_conn_del(s);
  ms_client_del(cl);
  CHECK_EQ_INT(hub_rv, want);
  CHECK(want != 0 || h != NULL);
  CHECK(want == 0 || h == NULL);
  CHECK_EQ_INT(conn_rv, want);
  CHECK_EQ_INT(srv_rv, 0);
  CHECK_EQ_INT(client_rv, want_client);
  if (want_client == 0)
    CHECK_EQ_INT(connect_rv, want);
}

static void no_random_source_is_an_error(void) {
  creations(NULL, MS_ERR_RANDOM, 0);
  CHECK(ms_random_is_set());
}

static void failing_random_source_is_an_error(void) {
  creations(failing, MS_ERR_RANDOM, MS_ERR_RANDOM);
}

static void installed_source_works(void) { creations(ms_test_random_, 0, 0); }

static void hub_ids_differ(void) {
  ms_hub_config hc;
  ms_hub_config_init(&hc);
  ms_hub *a = NULL, *b = NULL;
  CHECK_EQ_INT(ms_hub_new(&a, &hc, NULL, NULL), 0);
  CHECK_EQ_INT(ms_hub_new(&b, &hc, NULL, NULL), 0);
  int same = strcmp(ms_hub_id(a), ms_hub_id(b)) == 0;
  ms_hub_del(a);
  ms_hub_del(b);
  CHECK(!same);
}

static const ms_test_case tests[] = {
    TEST(no_random_source_is_an_error),
    TEST(failing_random_source_is_an_error),
    TEST(installed_source_works),
    TEST(hub_ids_differ),
};

MS_TEST_MAIN(tests)
