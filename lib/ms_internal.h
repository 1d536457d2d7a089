/* Internal helpers shared by the library's modules. Not installed. */
#ifndef MS_INTERNAL_H
#define MS_INTERNAL_H

#include <microstream/ms_common.h>
#include <microstream/ms_hub.h> /* ms_buf */

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#define MS_UNUSED(x) ((void)(x))
#define MS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static inline const ms_allocator *ms_mem_or_default(const ms_allocator *m) {
  return m ? m : ms_default_allocator();
}
static inline void *ms_malloc(const ms_allocator *m, size_t n) {
  return m->malloc(n, m->user_data);
}
static inline void *ms_calloc(const ms_allocator *m, size_t k, size_t n) {
  return m->calloc(k, n, m->user_data);
}
static inline void *ms_realloc(const ms_allocator *m, void *p, size_t n) {
  return m->realloc(p, n, m->user_data);
}
static inline void ms_free(const ms_allocator *m, void *p) {
  if (p)
    m->free(p, m->user_data);
}
/*
 * The one lifetime mechanism (the rule is stated in ms_common.h). Every
 * public entry that may run a callback brackets its work with
 * ms_life_enter / ms_life_leave; a delete calls ms_life_del and frees only
 * when that returns 1, otherwise the outermost ms_life_leave returns 1 and
 * its caller frees. After ms_life_del no callback may run (check
 * ms_life_dead before each one).
 */
typedef struct ms_life {
  int depth; /* library frames on the stack for this object */
  int dead;  /* deleted while inside: free at the outermost leave */
} ms_life;

static inline void ms_life_enter(ms_life *l) { l->depth++; }
/* 1 when the object must be freed now (deleted, outermost frame). */
static inline int ms_life_leave(ms_life *l) {
  return --l->depth == 0 && l->dead;
}
/* Mark deleted; 1 when no frame is on the stack and it can go now. */
static inline int ms_life_del(ms_life *l) {
  l->dead = 1;
  return l->depth == 0;
}
static inline int ms_life_dead(const ms_life *l) { return l->dead; }
static inline int ms_life_inside(const ms_life *l) { return l->depth > 0; }

/* Liveness (PROTOCOL.md): a peer silent for this many heartbeat intervals
 * is gone, and a handshake (upgrade, HELLO/WELCOME) gets as long. */
#define MS_HEARTBEAT_MISSES 3

/* NUL-terminated copy (n bytes of s); NULL on allocation failure. */
char *ms_strndup(const ms_allocator *m, const char *s, size_t n);

/* Growing byte buffer (ms_buf is declared in ms_hub.h). */
void ms_buf_init(ms_buf *b, const ms_allocator *mem);
int ms_buf_reserve(ms_buf *b, size_t extra);
int ms_buf_append(ms_buf *b, const void *data, size_t len);
int ms_buf_appendf(ms_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int ms_buf_append_json_str(ms_buf *b, const char *s, size_t len);
void ms_buf_reset(ms_buf *b);

/* Fill buf with len bytes from the installed random source (see
 * ms_set_random); 0 or MS_ERR_RANDOM (also when no source is set: then
 * buf is zeroed). */
int ms_random(void *buf, size_t len);

/* ms_conn's feed budget (ms_conn.c), for the hub: at most `messages`
 * messages per ms_conn_feed() / ms_conn_resume() call (0: no bound). */
struct ms_conn;
void ms_conn_set_feed_budget(struct ms_conn *c, size_t messages);
/* Input bytes held back by the budget (0 once the connection is done). */
size_t ms_conn_held(const struct ms_conn *c);
/* Held input that may be read on now: not while the output is above its
 * high-water mark (the backpressure want_read applies to new input). */
int ms_conn_resumable(const struct ms_conn *c);
/* Reads on through the held input, one more budget of it (nothing while
 * it is not resumable). Returns like ms_conn_feed(). */
int ms_conn_resume(struct ms_conn *c, int64_t now);

#endif
