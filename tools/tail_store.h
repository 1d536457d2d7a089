/* ms-tail's history from the hub's log store: GET /api/logs on the hub's
 * own port, records handed to the same printer as live ones. */
#ifndef MS_TAIL_STORE_H
#define MS_TAIL_STORE_H

#include <microstream/ms_log.h>
#include <microstream/ms_posix.h>

typedef struct tail_query {
  const char *const *services; /* exact names; NULL: all */
  size_t n_services;
  int64_t min_level;
  const char *contains;
  const char *since, *until; /* as the hub takes them, or NULL */
  uint64_t limit;            /* the newest `limit` matching records */
  const char *token;
} tail_query;

enum {
  TAIL_STORE_OK = 0,
  TAIL_STORE_UNREACHABLE = -1, /* no connection to the hub */
  TAIL_STORE_NONE = -2,        /* the hub keeps no store (or refuses us) */
  TAIL_STORE_BAD = -3          /* an answer we cannot read */
};

/* Fetch and hand each record, oldest first, to fn (kind MS_RECORD_LOG, or
 * MS_RECORD_GAP for a gap the store marked). `why` gets a message on
 * failure. Returns a TAIL_STORE_* code. */
int tail_store_fetch(const ms_url *hub, const tail_query *q,
                     void (*fn)(const ms_record *r, void *ud), void *ud,
                     char *why, size_t why_size);

#endif
