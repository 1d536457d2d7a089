/* Error strings and the mapping to and from the wire's error codes. */
#include "ms_internal.h"

static const char *const wire_codes[] = {
    "TARGET_SERVICE_NOT_FOUND", "EVENT_NOT_FOUND",
    "REQUEST_TIMEOUT",          "INTERNAL_SERVER_ERROR",
    "DUPLICATE_SERVICE_REGISTRATION", "TARGET_DISCONNECTED",
    "UNAUTHORIZED",             "PAYLOAD_TOO_LARGE",
    "TOO_MANY_PENDING",         "BAD_REQUEST",
    "UNSUPPORTED_VERSION",      "CANCELLED",
    "SLOW_CONSUMER",            "HUB_UNAVAILABLE",
    "TOO_MANY_SUBSCRIPTIONS",
};

/* Access control codes, -417 and on. */
static const char *const auth_codes[] = {"TOKEN_EXPIRED", "FORBIDDEN"};
/* Codes of the cluster, from -422 on. */
static const char *const cluster_codes[] = {"CLUSTER_UNAVAILABLE"};

const char *ms_err_to_wire(int err) {
  if (err <= MS_ERR_CLUSTER_UNAVAILABLE &&
      err > MS_ERR_CLUSTER_UNAVAILABLE - (int)MS_ARRAY_LEN(cluster_codes))
    return cluster_codes[MS_ERR_CLUSTER_UNAVAILABLE - err];
  if (err <= MS_ERR_TARGET_SERVICE_NOT_FOUND && err >= MS_ERR_TOO_MANY_SUBSCRIPTIONS)
    return wire_codes[-err - 401];
  if (err <= MS_ERR_TOKEN_EXPIRED && err >= MS_ERR_FORBIDDEN)
    return auth_codes[-err - 417];
  return NULL;
}

int ms_err_from_wire(const char *code, size_t len) {
  if (!code)
    return MS_ERR_APPLICATION;
  for (size_t i = 0; i < MS_ARRAY_LEN(wire_codes); i++) {
    if (strlen(wire_codes[i]) == len && memcmp(wire_codes[i], code, len) == 0)
      return -401 - (int)i;
  }
  for (size_t i = 0; i < MS_ARRAY_LEN(auth_codes); i++) {
    if (strlen(auth_codes[i]) == len && memcmp(auth_codes[i], code, len) == 0)
      return -417 - (int)i;
  }
  for (size_t i = 0; i < MS_ARRAY_LEN(cluster_codes); i++) {
    if (strlen(cluster_codes[i]) == len &&
        memcmp(cluster_codes[i], code, len) == 0)
      return MS_ERR_CLUSTER_UNAVAILABLE - (int)i;
  }
  return MS_ERR_APPLICATION;
}

const char *ms_strerror(int err) {
  switch (err) {
  case MS_OK: return "success";
  case MS_ERR_WOULDBLOCK: return "operation would block";
  case MS_ERR_AGAIN: return "try again";
  case MS_ERR_PROTO: return "protocol error";
  case MS_ERR_BAD_MESSAGE: return "malformed message";
  case MS_ERR_HTTP: return "malformed HTTP";
  case MS_ERR_HANDSHAKE: return "WebSocket handshake failed";
  case MS_ERR_TOO_BIG: return "message too big";
  case MS_ERR_UTF8: return "invalid UTF-8";
  case MS_ERR_NEED_MORE: return "need more input";
  case MS_ERR_INVALID_ARG: return "invalid argument";
  case MS_ERR_STATE: return "invalid state for this call";
  case MS_ERR_NOT_FOUND: return "not found";
  case MS_ERR_EXISTS: return "already exists";
  case MS_ERR_LIMIT: return "limit reached";
  case MS_ERR_BUFFER_FULL: return "output buffer full";
  case MS_ERR_TARGET_SERVICE_NOT_FOUND: return "target service not found";
  case MS_ERR_EVENT_NOT_FOUND: return "event not found";
  case MS_ERR_REQUEST_TIMEOUT: return "request timed out";
  case MS_ERR_INTERNAL_SERVER_ERROR: return "internal server error";
  case MS_ERR_DUPLICATE_SERVICE_REGISTRATION:
    return "service name already registered";
  case MS_ERR_TARGET_DISCONNECTED: return "target disconnected";
  case MS_ERR_UNAUTHORIZED: return "unauthorized";
  case MS_ERR_PAYLOAD_TOO_LARGE: return "payload too large";
  case MS_ERR_TOO_MANY_PENDING: return "too many requests in flight";
  case MS_ERR_BAD_REQUEST: return "bad request";
  case MS_ERR_UNSUPPORTED_VERSION: return "unsupported protocol version";
  case MS_ERR_CANCELLED: return "cancelled";
  case MS_ERR_SLOW_CONSUMER: return "slow consumer";
  case MS_ERR_TOO_MANY_SUBSCRIPTIONS: return "too many subscriptions";
  case MS_ERR_HUB_UNAVAILABLE: return "hub unavailable";
  case MS_ERR_TOKEN_EXPIRED: return "token expired";
  case MS_ERR_FORBIDDEN: return "forbidden";
  case MS_ERR_CLUSTER_UNAVAILABLE: return "cluster unavailable";
  case MS_ERR_APPLICATION: return "application error";
  case MS_ERR_CALLBACK_FAILURE: return "callback failure";
  case MS_ERR_IO: return "I/O error";
  case MS_ERR_CLOSED: return "connection closed";
  case MS_ERR_TIMEOUT: return "timed out";
  case MS_ERR_ADDRESS: return "bad or unresolvable address";
  case MS_ERR_RANDOM: return "random source failed";
  case MS_ERR_TLS: return "TLS handshake or certificate verification failed";
  case MS_ERR_TLS_TIMEOUT: return "TLS handshake timed out";
  case MS_ERR_NOMEM: return "out of memory";
  case MS_ERR_INTERNAL: return "internal error";
  default: return "unknown error";
  }
}

int ms_err_is_fatal(int err) { return err <= -900; }
