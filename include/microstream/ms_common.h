/* microstream: error codes, allocator hook, export macro, shared types. */
#ifndef MICROSTREAM_MS_COMMON_H
#define MICROSTREAM_MS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MS_BUILDING_LIBRARY) && defined(__GNUC__)
#define MS_EXTERN __attribute__((visibility("default")))
#else
#define MS_EXTERN
#endif

#define MS_VERSION_STRING "0.1.0"
#define MS_PROTOCOL_VERSION 1

/*
 * The lifetime rule, for every object (ms_conn, ms_client, ms_hub and its
 * ms_hub_conn, the drivers in ms_posix.h, and an engine inside ms_pump()):
 *
 *  - Callbacks run only from inside a call on the object (feed, tick, eof,
 *    a driver's loop) on the caller's thread.
 *  - Any callback may delete the object it was called from, or its owner
 *    (a hub from a hub connection's callback). The delete is deferred: the
 *    object stops calling back at once and is freed when the outermost
 *    call on it returns. The code that made that outermost call gets it
 *    back normally and must not touch the object afterwards (ms_pump()
 *    says so with MS_PUMP_FREED; the drivers detach themselves).
 *  - One exception to "stops calling back": a request's callback always
 *    runs exactly once, so requests still pending at a delete get
 *    MS_ERR_CANCELLED (or the error already on its way) then.
 *  - Between such a delete and the return of that outermost call, every
 *    public call on the deleted object (and, for a hub, on its
 *    connections) is refused: functions returning an error code return
 *    MS_ERR_STATE (ms_hub_http_guard: 503), queries answer empty (0, NULL,
 *    MS_NO_DEADLINE), the rest do nothing. Simple getters (user data, ids,
 *    stats) still answer. A second *_del is a no-op.
 *  - Outside callbacks a delete frees at once. Every *_del(NULL) is a
 *    no-op.
 *  - Sends never call back: a send from a callback only queues output.
 *
 * Inside the library this is one mechanism (a call depth and a
 * free-pending flag per object); tests delete every object from each of
 * its callbacks.
 */

/* "No deadline" as returned by every *_next_deadline() function. */
#define MS_NO_DEADLINE INT64_MAX

/*
 * Error codes. 0 is success; every error is negative and grouped by
 * hundreds:
 *   -1xx  try again later (not an error of the object)
 *   -2xx  protocol errors caused by the peer's bytes
 *   -3xx  usage errors (bad argument, wrong state, limits)
 *   -4xx  wire error codes (PROTOCOL.md "Error codes"), as seen by a caller
 *   -5xx  callback failures
 *   -6xx  I/O and connection state
 *   -9xx  fatal: after one of these only the destructor may be called
 */
typedef enum ms_err {
  MS_OK = 0,

  MS_ERR_WOULDBLOCK = -101,
  MS_ERR_AGAIN = -102,

  MS_ERR_PROTO = -201,        /* peer broke RFC 6455 or PROTOCOL.md */
  MS_ERR_BAD_MESSAGE = -202,  /* a protocol message did not decode */
  MS_ERR_HTTP = -203,         /* malformed HTTP head */
  MS_ERR_HANDSHAKE = -204,    /* upgrade refused or invalid */
  MS_ERR_TOO_BIG = -205,      /* message or header over its limit */
  MS_ERR_UTF8 = -206,         /* invalid UTF-8 in a text message */
  MS_ERR_NEED_MORE = -207,    /* parser needs more bytes */

  MS_ERR_INVALID_ARG = -301,
  MS_ERR_STATE = -302,        /* call not valid in the current state */
  MS_ERR_NOT_FOUND = -303,
  MS_ERR_EXISTS = -304,
  MS_ERR_LIMIT = -305,        /* a configured bound was reached */
  MS_ERR_BUFFER_FULL = -306,  /* output above the high-water mark */

  /* Wire error codes. ms_err_to_wire() gives the string. */
  MS_ERR_TARGET_SERVICE_NOT_FOUND = -401,
  MS_ERR_EVENT_NOT_FOUND = -402,
  MS_ERR_REQUEST_TIMEOUT = -403,
  MS_ERR_INTERNAL_SERVER_ERROR = -404,
  MS_ERR_DUPLICATE_SERVICE_REGISTRATION = -405,
  MS_ERR_TARGET_DISCONNECTED = -406,
  MS_ERR_UNAUTHORIZED = -407,
  MS_ERR_PAYLOAD_TOO_LARGE = -408,
  MS_ERR_TOO_MANY_PENDING = -409,
  MS_ERR_BAD_REQUEST = -410,
  MS_ERR_UNSUPPORTED_VERSION = -411,
  MS_ERR_CANCELLED = -412,
  MS_ERR_SLOW_CONSUMER = -413,
  MS_ERR_HUB_UNAVAILABLE = -414,
  MS_ERR_TOO_MANY_SUBSCRIPTIONS = -415,
  MS_ERR_TOKEN_EXPIRED = -417, /* the token's exp has passed */
  MS_ERR_FORBIDDEN = -418,     /* valid token, but not for this */
  MS_ERR_CLUSTER_UNAVAILABLE = -422, /* the hub cannot reach its cluster */
  MS_ERR_APPLICATION = -499,  /* an application's own code string */

  MS_ERR_CALLBACK_FAILURE = -501,

  MS_ERR_IO = -601,
  MS_ERR_CLOSED = -602,
  MS_ERR_TIMEOUT = -603,
  MS_ERR_ADDRESS = -604,
  MS_ERR_RANDOM = -605, /* the random source failed */
  MS_ERR_TLS = -610,          /* TLS handshake or certificate check failed */
  MS_ERR_TLS_TIMEOUT = -611,  /* TLS handshake not done in time */

  MS_ERR_NOMEM = -901,
  MS_ERR_INTERNAL = -902
} ms_err;

/* A short English description of an error code; never NULL. */
MS_EXTERN const char *ms_strerror(int err);

/* Non-zero when err leaves the object unusable (only *_del may follow). */
MS_EXTERN int ms_err_is_fatal(int err);

/* Wire code string for a -4xx code ("REQUEST_TIMEOUT"), NULL for others
 * (including MS_ERR_APPLICATION, whose string is the application's). */
MS_EXTERN const char *ms_err_to_wire(int err);

/* The -4xx code of a wire code string, MS_ERR_APPLICATION for strings
 * that are not one of the standard codes. */
MS_EXTERN int ms_err_from_wire(const char *code, size_t len);

/*
 * Allocator hook. Every object takes an optional allocator at construction
 * (NULL = libc); the struct it points to must outlive the object and the
 * drivers attached to it.
 *
 * Through it go every allocation the library makes itself: the objects,
 * their tables and queues, output buffers, the buffers messages are
 * packed into (msgpack-c's packer writes into memory from the hook, not
 * into a msgpack_sbuffer), the buffers of the JSON edge (JSON text and
 * the MessagePack made from it, on microstream.json.v1 and Socket.IO),
 * and the drivers' own memory (transports/common: a driver and each
 * stream it accepts come from the allocator of its client or hub; see
 * ms_client_allocator, ms_hub_allocator; so does all of a clustered hub's
 * Redis side of its own: its maps, buffers and queues).
 *
 * Not through it, because those libraries take no per-object allocator:
 *  - wslay: its event context and frame queues use libc (no hook);
 *  - msgpack-c: the zones that hold a decoded message's msgpack_object
 *    tree;
 *  - hiredis (cluster): the RESP reader, the replies it builds and each
 *    formatted command use libc; hiredis 0.14 has no allocator hook
 *    (hiredisSetAllocators, process-wide, came with 1.0);
 *  - jansson and cJSON (the trees JSON is parsed into), c-ares (name
 *    lookups), GnuTLS: their allocator hooks (json_set_alloc_funcs,
 *    cJSON_InitHooks, ares_library_init_mem, ...) are process-wide, and
 *    the library never sets them behind the application's back; a program
 *    may set them itself before creating objects.
 * All of these fail cleanly too: an allocation failure anywhere is an
 * error (MS_ERR_NOMEM), never a crash (the unit suite fails every
 * allocation, hooked or not, in turn).
 */
typedef struct ms_allocator {
  void *(*malloc)(size_t size, void *user_data);
  void (*free)(void *ptr, void *user_data);
  void *(*calloc)(size_t nmemb, size_t size, void *user_data);
  void *(*realloc)(void *ptr, size_t size, void *user_data);
  void *user_data;
} ms_allocator;

/* The libc allocator. */
MS_EXTERN const ms_allocator *ms_default_allocator(void);

/*
 * The random source: fill buf with len unpredictable bytes, return 0 or a
 * negative ms_err. The library reads no OS source itself: the POSIX loop,
 * the drivers and the programs install one (ms_posix_random, getrandom)
 * when none is set yet, so set yours before those if you have one. It
 * keys each object's generator (WebSocket masks and keys, hub ids, hash
 * seeds, Socket.IO session ids) when the object is created or connects.
 * A failing source, or none at all, is MS_ERR_RANDOM from that call:
 * ms_hub_new, ms_conn_new for a client-role connection, and
 * ms_client_connected. There is no built-in fallback. ms_client_new
 * alone works without a source (request ids start from a fixed point; a
 * failing source is still MS_ERR_RANDOM there); a server-role ms_conn
 * needs none. Sans-IO tests and fuzz targets install a repeatable source
 * of their own. Process-wide; set it before creating objects.
 */
typedef int (*ms_random_fn)(void *buf, size_t len, void *user_data);
MS_EXTERN void ms_set_random(ms_random_fn fn, void *user_data);
/* Non-zero once a source is set. */
MS_EXTERN int ms_random_is_set(void);

/* Payload encodings, also the negotiated WebSocket subprotocol. */
typedef enum ms_encoding {
  MS_ENC_NONE = 0,
  MS_ENC_MSGPACK = 1, /* "microstream.v1" */
  MS_ENC_JSON = 2     /* "microstream.json.v1" */
} ms_encoding;

#define MS_SUBPROTO_MSGPACK "microstream.v1"
#define MS_SUBPROTO_JSON "microstream.json.v1"

/* WebSocket close codes used by microstream (PROTOCOL.md "Close codes"). */
enum {
  MS_CLOSE_NORMAL = 1000,
  MS_CLOSE_GOING_AWAY = 1001,
  MS_CLOSE_PROTOCOL_ERROR = 1002,
  MS_CLOSE_NO_STATUS = 1005,
  MS_CLOSE_ABNORMAL = 1006,
  MS_CLOSE_INVALID_UTF8 = 1007,
  MS_CLOSE_POLICY = 1008,
  MS_CLOSE_TOO_BIG = 1009,
  MS_CLOSE_INTERNAL = 1011,
  MS_CLOSE_UNAUTHORIZED = 4001,
  MS_CLOSE_PROTOCOL = 4002,
  MS_CLOSE_HEARTBEAT = 4008,
  MS_CLOSE_DUPLICATE = 4009,
  MS_CLOSE_TOKEN_EXPIRED = 4020,
  MS_CLOSE_FORBIDDEN = 4021,
  MS_CLOSE_SLOW_CONSUMER = 4029,
  MS_CLOSE_CLUSTER_UNAVAILABLE = 4040, /* could not claim the name: retry */
  MS_CLOSE_SHUTDOWN = 4050
};

/* Log levels (PROTOCOL.md LOG). */
enum {
  MS_LEVEL_DEBUG = 10,
  MS_LEVEL_INFO = 20,
  MS_LEVEL_WARN = 30,
  MS_LEVEL_ERROR = 40,
  MS_LEVEL_SILENT = 1000
};

#ifdef __cplusplus
}
#endif

#endif
