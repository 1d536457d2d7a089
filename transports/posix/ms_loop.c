/*
 * microstream: a small epoll event loop with fd watches, timers in a
 * binary min-heap and a queue of deferred calls.
 *
 * Callbacks may add, change or remove any watch or timer, their own
 * included: events are re-checked against the watch table before each
 * dispatch (a generation number in the epoll cookie drops events of an
 * fd that was unwatched and watched again within one batch), and a timer
 * stopped from its own callback is freed when the callback returns.
 *
 * Timer handles: a one-shot timer started without a handle (pt NULL) is
 * freed after it fires. With a handle, the timer stays allocated after it
 * fires (disarmed) until ms_timer_stop() or ms_loop_del(), so its owner
 * may always call ms_timer_stop() on it.
 */
#include "ms_internal.h"
#include "ms_posix_internal.h"

#include <errno.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

typedef struct loop_watch {
  ms_fd_fn fn;
  void *user_data;
  unsigned events; /* MS_EV_*; 0 = not watched */
  uint32_t gen;
} loop_watch;

struct ms_timer {
  ms_loop *loop;
  int64_t when;
  int64_t repeat_ms;
  uint64_t seq;     /* FIFO order among timers due at the same time */
  ms_timer_fn fn;
  void *user_data;
  size_t heap_idx;  /* SIZE_MAX when not armed */
  int owned;        /* the caller kept a handle */
  int running;      /* inside its callback */
  int stopped;      /* ms_timer_stop() called while running */
  ms_timer *all_prev, *all_next; /* every allocated timer, for ms_loop_del */
};

typedef struct loop_defer {
  void (*fn)(void *);
  void *user_data;
} loop_defer;

struct ms_loop {
  const ms_allocator *mem;
  int epfd;
  int64_t now;
  int stop;

  loop_watch *watches;
  size_t nwatches_cap;
  size_t nwatched; /* fds with events != 0 */

  ms_timer **heap;
  size_t heap_len, heap_cap;
  uint64_t timer_seq;
  ms_timer *all_timers;

  loop_defer *defers;
  size_t ndefers, defers_cap;
};

int64_t ms_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ms_wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int ms_loop_new(ms_loop **ploop, const ms_allocator *mem) {
  if (!ploop)
    return MS_ERR_INVALID_ARG;
  /* A program with a loop does I/O: give the library the OS's randomness
   * before it creates its objects (unless it has its own). */
  if (!ms_random_is_set())
    ms_set_random(ms_posix_random, NULL);
  mem = ms_mem_or_default(mem);
  ms_loop *l = ms_calloc(mem, 1, sizeof(*l));
  if (!l)
    return MS_ERR_NOMEM;
  l->mem = mem;
  l->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (l->epfd < 0) {
    ms_free(mem, l);
    return MS_ERR_IO;
  }
  l->now = ms_now_ms();
  *ploop = l;
  return 0;
}

void ms_loop_del(ms_loop *loop) {
  if (!loop)
    return;
  ms_timer *t = loop->all_timers;
  while (t) {
    ms_timer *next = t->all_next;
    ms_free(loop->mem, t);
    t = next;
  }
  ms_free(loop->mem, loop->heap);
  ms_free(loop->mem, loop->watches);
  ms_free(loop->mem, loop->defers);
  close(loop->epfd);
  ms_free(loop->mem, loop);
}

void ms_loop_stop(ms_loop *loop) { loop->stop = 1; }

int64_t ms_loop_now(const ms_loop *loop) { return loop->now; }

/* ---- watches ------------------------------------------------------------- */

static uint32_t to_epoll(unsigned ev) {
  return ((ev & MS_EV_READ) ? EPOLLIN : 0u) |
         ((ev & MS_EV_WRITE) ? EPOLLOUT : 0u);
}

int ms_loop_watch(ms_loop *loop, int fd, unsigned events, ms_fd_fn fn,
                  void *user_data) {
  if (!loop || fd < 0)
    return MS_ERR_INVALID_ARG;
  events &= MS_EV_READ | MS_EV_WRITE;
  if (events && !fn)
    return MS_ERR_INVALID_ARG;
  if ((size_t)fd >= loop->nwatches_cap) {
    if (!events)
      return 0;
    size_t cap = loop->nwatches_cap ? loop->nwatches_cap : 64;
    while (cap <= (size_t)fd)
      cap *= 2;
    loop_watch *w = ms_realloc(loop->mem, loop->watches, cap * sizeof(*w));
    if (!w)
      return MS_ERR_NOMEM;
    memset(w + loop->nwatches_cap, 0,
           (cap - loop->nwatches_cap) * sizeof(*w));
    loop->watches = w;
    loop->nwatches_cap = cap;
  }
  loop_watch *w = &loop->watches[fd];
  if (!events) {
    if (w->events) {
      /* The fd may already be closed (epoll dropped it): ignore errors. */
      epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
      w->events = 0;
      w->fn = NULL;
      w->user_data = NULL;
      loop->nwatched--;
    }
    return 0;
  }
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = to_epoll(events);
  if (!w->events) {
    w->gen++;
    ev.data.u64 = ((uint64_t)w->gen << 32) | (uint32_t)fd;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
      /* A closed-and-reused fd can still be in the set under an older
       * registration; replace it. */
      if (errno != EEXIST || epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
        return MS_ERR_IO;
    }
    loop->nwatched++;
  } else if (w->events != events) {
    ev.data.u64 = ((uint64_t)w->gen << 32) | (uint32_t)fd;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
      /* The fd was closed and reopened without unwatching: epoll forgot
       * it, so add it again. */
      if (errno != ENOENT || epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return MS_ERR_IO;
    }
  }
  w->events = events;
  w->fn = fn;
  w->user_data = user_data;
  return 0;
}

/* ---- timers: binary min-heap on (when, seq) ------------------------------ */

static int timer_less(const ms_timer *a, const ms_timer *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_set(ms_loop *l, size_t i, ms_timer *t) {
  l->heap[i] = t;
  t->heap_idx = i;
}

static void heap_up(ms_loop *l, size_t i) {
  ms_timer *t = l->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!timer_less(t, l->heap[p]))
      break;
    heap_set(l, i, l->heap[p]);
    i = p;
  }
  heap_set(l, i, t);
}

static void heap_down(ms_loop *l, size_t i) {
  ms_timer *t = l->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= l->heap_len)
      break;
    if (c + 1 < l->heap_len && timer_less(l->heap[c + 1], l->heap[c]))
      c++;
    if (!timer_less(l->heap[c], t))
      break;
    heap_set(l, i, l->heap[c]);
    i = c;
  }
  heap_set(l, i, t);
}

static int heap_push(ms_loop *l, ms_timer *t) {
  if (l->heap_len == l->heap_cap) {
    size_t cap = l->heap_cap ? l->heap_cap * 2 : 16;
    ms_timer **h = ms_realloc(l->mem, l->heap, cap * sizeof(*h));
    if (!h)
      return MS_ERR_NOMEM;
    l->heap = h;
    l->heap_cap = cap;
  }
  t->seq = l->timer_seq++;
  heap_set(l, l->heap_len++, t);
  heap_up(l, l->heap_len - 1);
  return 0;
}

static void heap_remove(ms_loop *l, ms_timer *t) {
  size_t i = t->heap_idx;
  if (i == SIZE_MAX)
    return;
  t->heap_idx = SIZE_MAX;
  l->heap_len--;
  if (i == l->heap_len)
    return;
  heap_set(l, i, l->heap[l->heap_len]);
  heap_up(l, i);
  heap_down(l, l->heap[i]->heap_idx);
}

static void timer_free(ms_timer *t) {
  ms_loop *l = t->loop;
  if (t->all_prev)
    t->all_prev->all_next = t->all_next;
  else
    l->all_timers = t->all_next;
  if (t->all_next)
    t->all_next->all_prev = t->all_prev;
  ms_free(l->mem, t);
}

int ms_loop_timer_start(ms_loop *loop, int64_t delay_ms, int64_t repeat_ms,
                        ms_timer_fn fn, void *user_data, ms_timer **pt) {
  if (!loop || !fn)
    return MS_ERR_INVALID_ARG;
  ms_timer *t = ms_calloc(loop->mem, 1, sizeof(*t));
  if (!t)
    return MS_ERR_NOMEM;
  t->loop = loop;
  t->when = loop->now + (delay_ms > 0 ? delay_ms : 0);
  t->repeat_ms = repeat_ms > 0 ? repeat_ms : 0;
  t->fn = fn;
  t->user_data = user_data;
  t->heap_idx = SIZE_MAX;
  t->owned = pt != NULL;
  if (heap_push(loop, t) < 0) {
    ms_free(loop->mem, t);
    return MS_ERR_NOMEM;
  }
  t->all_next = loop->all_timers;
  if (loop->all_timers)
    loop->all_timers->all_prev = t;
  loop->all_timers = t;
  if (pt)
    *pt = t;
  return 0;
}

void ms_timer_stop(ms_timer *t) {
  if (!t)
    return;
  heap_remove(t->loop, t);
  if (t->running) {
    t->stopped = 1; /* freed when its callback returns */
    return;
  }
  timer_free(t);
}

void ms_timer_set_at(ms_timer *t, int64_t when) {
  ms_loop *l = t->loop;
  heap_remove(l, t);
  if (when == MS_NO_DEADLINE)
    return;
  t->when = when;
  /* heap_push only fails on allocation; the slot existed before, so the
   * heap array is already big enough unless it never held this timer. */
  if (heap_push(l, t) < 0) {
    /* Out of memory: keep the timer in a safe state (fires never). */
    t->heap_idx = SIZE_MAX;
  }
}

/* Run the timers due at loop->now that were armed before this pass
 * began, so a timer re-armed with delay 0 from a callback cannot spin. */
static int run_timers(ms_loop *l) {
  int count = 0;
  uint64_t seq_limit = l->timer_seq;
  while (l->heap_len > 0) {
    ms_timer *t = l->heap[0];
    if (t->when > l->now || t->seq >= seq_limit)
      break;
    heap_remove(l, t);
    t->running = 1;
    t->fn(l, t, t->user_data);
    t->running = 0;
    count++;
    if (t->stopped) {
      timer_free(t);
    } else if (t->heap_idx != SIZE_MAX) {
      /* re-armed from its own callback (ms_timer_set_at) */
    } else if (t->repeat_ms > 0) {
      t->when += t->repeat_ms;
      if (t->when <= l->now)
        t->when = l->now + t->repeat_ms; /* fell behind: don't burst */
      heap_push(l, t);
    } else if (!t->owned) {
      timer_free(t);
    }
  }
  return count;
}

/* ---- deferred calls ------------------------------------------------------ */

int ms_loop_defer(ms_loop *loop, void (*fn)(void *user_data),
                  void *user_data) {
  if (!loop || !fn)
    return MS_ERR_INVALID_ARG;
  if (loop->ndefers == loop->defers_cap) {
    size_t cap = loop->defers_cap ? loop->defers_cap * 2 : 16;
    loop_defer *d = ms_realloc(loop->mem, loop->defers, cap * sizeof(*d));
    if (!d)
      return MS_ERR_NOMEM;
    loop->defers = d;
    loop->defers_cap = cap;
  }
  loop->defers[loop->ndefers].fn = fn;
  loop->defers[loop->ndefers].user_data = user_data;
  loop->ndefers++;
  return 0;
}

void ms_loop_defer_cancel(ms_loop *loop, void (*fn)(void *user_data),
                          void *user_data) {
  for (size_t i = 0; i < loop->ndefers; i++)
    if (loop->defers[i].fn == fn && loop->defers[i].user_data == user_data)
      loop->defers[i].fn = NULL; /* skipped when run */
}

/* Run the calls queued so far; calls queued by them wait for the next
 * iteration (which then does not block). */
static int run_defers(ms_loop *l) {
  size_t n = l->ndefers;
  int count = 0;
  if (n == 0)
    return 0; /* also: never memmove from a NULL array */
  for (size_t i = 0; i < n; i++) {
    /* Re-read each entry: a call may cancel a later one or grow the
     * array (realloc). */
    loop_defer d = l->defers[i];
    if (!d.fn)
      continue;
    l->defers[i].fn = NULL;
    d.fn(d.user_data);
    count++;
  }
  memmove(l->defers, l->defers + n, (l->ndefers - n) * sizeof(*l->defers));
  l->ndefers -= n;
  return count;
}

/* ---- running ------------------------------------------------------------- */

int ms_loop_run_once(ms_loop *loop, int timeout_ms) {
  loop->now = ms_now_ms();
  int64_t wait = timeout_ms;
  if (loop->ndefers > 0)
    wait = 0;
  if (loop->heap_len > 0) {
    int64_t until = loop->heap[0]->when - loop->now;
    if (until < 0)
      until = 0;
    if (wait < 0 || until < wait)
      wait = until;
  }
  if (wait > INT32_MAX)
    wait = INT32_MAX;

  struct epoll_event evs[LOOP_MAX_EVENTS];
  int n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, (int)wait);
  if (n < 0) {
    if (errno != EINTR)
      return MS_ERR_IO;
    n = 0;
  }
  loop->now = ms_now_ms();

  int count = 0;
  for (int i = 0; i < n; i++) {
    int fd = (int)(uint32_t)(evs[i].data.u64 & 0xffffffffu);
    uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
    if ((size_t)fd >= loop->nwatches_cap)
      continue;
    loop_watch *w = &loop->watches[fd];
    if (!w->events || w->gen != gen)
      continue; /* unwatched (or re-watched) by an earlier callback */
    unsigned ev = 0;
    if (evs[i].events & EPOLLIN)
      ev |= MS_EV_READ;
    if (evs[i].events & EPOLLOUT)
      ev |= MS_EV_WRITE;
    /* Errors and hang-ups wake whatever the watcher waits for; its read or
     * write then sees the condition. */
    if (evs[i].events & (EPOLLERR | EPOLLHUP))
      ev |= w->events;
    ev &= w->events;
    if (!ev)
      continue;
    w->fn(loop, fd, ev, w->user_data);
    count++;
  }

  count += run_timers(loop);
  count += run_defers(loop);
  return count;
}

int ms_loop_run(ms_loop *loop) {
  int rv = 0;
  while (!loop->stop) {
    if (loop->nwatched == 0 && loop->heap_len == 0 && loop->ndefers == 0)
      break;
    int n = ms_loop_run_once(loop, -1);
    if (n < 0) {
      rv = n;
      break;
    }
  }
  loop->stop = 0;
  return rv;
}
