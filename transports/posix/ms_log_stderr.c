/* The default local log sink: one line per record on stderr. */
#include "ms_internal.h"

#include <microstream/ms_posix.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void print_fields(FILE *f, const msgpack_object *fields) {
  if (!fields || fields->type != MSGPACK_OBJECT_MAP)
    return;
  msgpack_sbuffer js;
  msgpack_sbuffer_init(&js);
  for (uint32_t i = 0; i < fields->via.map.size; i++) {
    const msgpack_object_kv *kv = &fields->via.map.ptr[i];
    if (kv->key.type == MSGPACK_OBJECT_STR)
      fprintf(f, " %.*s=", (int)kv->key.via.str.size, kv->key.via.str.ptr);
    else
      fputs(" ?=", f);
    if (kv->val.type == MSGPACK_OBJECT_STR) {
      fprintf(f, "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
    } else {
      js.size = 0;
      if (ms_msgpack_to_json(&kv->val, &js) == 0)
        fwrite(js.data, 1, js.size, f);
    }
  }
  msgpack_sbuffer_destroy(&js);
}

void ms_log_stderr_sink(ms_client *c, int64_t ts_us, int level,
                        const char *message, const msgpack_object *fields,
                        void *ud) {
  (void)ud;
  static int color = -1;
  if (color < 0)
    color = isatty(2) && !getenv("NO_COLOR");
  if (ts_us == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
  }
  time_t secs = (time_t)(ts_us / 1000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char tbuf[32];
  strftime(tbuf, sizeof tbuf, "%H:%M:%S", &tm);
  const char *col = "";
  if (color) {
    col = level >= MS_LEVEL_ERROR ? "\033[31m"
          : level >= MS_LEVEL_WARN ? "\033[33m"
          : level >= MS_LEVEL_INFO ? "\033[32m"
                                   : "\033[90m";
  }
  flockfile(stderr);
  fprintf(stderr, "%s.%03d %s%-5s%s %s: %s", tbuf,
          (int)((ts_us / 1000) % 1000), col, ms_log_level_name(level),
          color ? "\033[0m" : "", ms_client_service(c), message);
  print_fields(stderr, fields);
  fputc('\n', stderr);
  funlockfile(stderr);
}

