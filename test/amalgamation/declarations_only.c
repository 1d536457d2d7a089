/* Only the declarations of the single header: packs a string and sends
 * it as a request. */
#include "microstream.h"

#include <string.h>

#include "declarations_only.h"

int send_user(ms_client *c, const char *target, const char *event,
              const char *user, ms_response_fn cb, void *ud) {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_str(&pk, strlen(user));
  msgpack_pack_str_body(&pk, user, strlen(user));
  int rc = ms_client_request(c, target, event, (const uint8_t *)sb.data,
                             sb.size, NULL, cb, ud, NULL);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}
