/*
 * Shared by the benchmark load generators: clock, latency record, the
 * hub's CPU time from /proc, and the one-line JSON result every driver
 * prints, so bench/run.py reads every system the same way.
 */
#ifndef MS_BENCH_COMMON_H
#define MS_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define BENCH_PAYLOAD 64
#define BENCH_MAX_CONC 1024

static inline int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* utime + stime of a process in seconds (all its threads), -1 when the
 * process is not readable. Measured on the hub, never on the driver. */
static inline double bench_proc_cpu(long pid) {
  char path[64], buf[1024];
  FILE *f;
  size_t n;
  char *p;
  unsigned long ut = 0, st = 0;
  int field;
  if (pid <= 0) return -1;
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  f = fopen(path, "r");
  if (!f) return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  /* comm may hold spaces: fields count from after the last ')'. */
  p = strrchr(buf, ')');
  if (!p) return -1;
  p += 2;
  for (field = 3; field < 14 && p; field++) {
    p = strchr(p, ' ');
    if (p) p++;
  }
  if (!p || sscanf(p, "%lu %lu", &ut, &st) != 2) return -1;
  return (double)(ut + st) / 100.0; /* USER_HZ is 100 on Linux */
}

/* Latencies in nanoseconds, preallocated so recording costs a store. */
typedef struct bench_lat {
  uint32_t *v;
  size_t n, cap;
} bench_lat;

static inline void bench_lat_init(bench_lat *l, size_t cap) {
  l->v = malloc(cap * sizeof *l->v);
  l->n = 0;
  l->cap = l->v ? cap : 0;
  if (l->v) memset(l->v, 0, cap * sizeof *l->v); /* fault the pages in now */
}

static inline void bench_lat_add(bench_lat *l, int64_t ns) {
  if (l->n < l->cap) l->v[l->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int bench_cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static inline double bench_lat_pct_us(bench_lat *l, double q) {
  size_t i;
  if (!l->n) return 0;
  i = (size_t)(q * (double)(l->n - 1));
  return l->v[i] / 1000.0;
}

/* Print the result line: {"requests":..,"seconds":..,...}. */
static inline void bench_report(bench_lat *l, uint64_t requests,
                                uint64_t errors, double seconds,
                                double hub_cpu_s) {
  qsort(l->v, l->n, sizeof *l->v, bench_cmp_u32);
  printf("{\"requests\":%llu,\"errors\":%llu,\"seconds\":%.6f,"
         "\"rps\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"hub_cpu_s\":%.3f}\n",
         (unsigned long long)requests, (unsigned long long)errors, seconds,
         seconds > 0 ? (double)requests / seconds : 0.0,
         bench_lat_pct_us(l, 0.50), bench_lat_pct_us(l, 0.99), hub_cpu_s);
  fflush(stdout);
}

/* Raise the soft fd limit to the hard one (idle phases hold N sockets). */
static inline void bench_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* Common options of every driver. */
typedef struct bench_opts {
  const char *mode;  /* echo | req | idle (relay: relay | echo | req) */
  const char *url;   /* hub URL or host:port */
  int conc;          /* requests in flight */
  double warmup;     /* seconds */
  double seconds;    /* measured phase */
  long count;        /* > 0: stop after this many responses instead */
  long pid;          /* the hub's pid, for its CPU time */
  long n;            /* idle connections */
  const char *name;  /* idle: name prefix */
} bench_opts;

static inline int bench_parse(int argc, char **argv, bench_opts *o) {
  int i;
  memset(o, 0, sizeof *o);
  o->conc = 1;
  o->warmup = 2;
  o->seconds = 10;
  o->name = "idle";
  if (argc < 2) return -1;
  o->mode = argv[1];
  for (i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--url")) o->url = v;
    else if (!strcmp(k, "--conc")) o->conc = atoi(v);
    else if (!strcmp(k, "--warmup")) o->warmup = atof(v);
    else if (!strcmp(k, "--seconds")) o->seconds = atof(v);
    else if (!strcmp(k, "--count")) o->count = atol(v);
    else if (!strcmp(k, "--pid")) o->pid = atol(v);
    else if (!strcmp(k, "--n")) o->n = atol(v);
    else if (!strcmp(k, "--name")) o->name = v;
    else return -1;
  }
  if (i != argc || !o->url || o->conc < 1 || o->conc > BENCH_MAX_CONC)
    return -1;
  return 0;
}

#define BENCH_USAGE                                                         \
  "usage: %s echo|req|idle --url URL [--conc C] [--warmup S] [--seconds S]" \
  " [--count N] [--pid HUB_PID] [--n N] [--name PREFIX]\n"

/*
 * The measurement schedule shared by every driver: warm-up, then a
 * measured window (or a fixed count of responses). bench_phase_tick() is
 * called on each response with its latency; it returns 0 to keep sending.
 */
typedef struct bench_phase {
  const bench_opts *o;
  int64_t t_begin, t_measure, t_end;
  int measuring, done;
  uint64_t requests, errors;
  double cpu0, cpu1, secs;
  bench_lat lat;
} bench_phase;

static inline void bench_phase_init(bench_phase *ph, const bench_opts *o) {
  size_t cap = o->count > 0 ? (size_t)o->count + 1024 : 8u << 20;
  memset(ph, 0, sizeof *ph);
  ph->o = o;
  bench_lat_init(&ph->lat, cap);
}

static inline void bench_phase_start(bench_phase *ph) {
  ph->t_begin = bench_now_ns();
  if (ph->o->count > 0 || ph->o->warmup <= 0) {
    ph->measuring = 1;
    ph->t_measure = ph->t_begin;
    ph->cpu0 = bench_proc_cpu(ph->o->pid);
  } else {
    ph->t_measure = ph->t_begin + (int64_t)(ph->o->warmup * 1e9);
  }
  ph->t_end = ph->t_measure + (int64_t)(ph->o->seconds * 1e9);
}

/* Returns non-zero once the phase is over (stop sending). */
static inline int bench_phase_tick(bench_phase *ph, int64_t now, int64_t lat,
                                   int err) {
  if (ph->done) return 1;
  if (!ph->measuring && now >= ph->t_measure) {
    ph->measuring = 1;
    ph->t_measure = now;
    ph->t_end = now + (int64_t)(ph->o->seconds * 1e9);
    ph->cpu0 = bench_proc_cpu(ph->o->pid);
  }
  if (ph->measuring) {
    if (err)
      ph->errors++;
    else {
      ph->requests++;
      bench_lat_add(&ph->lat, lat);
    }
    if (ph->o->count > 0 ? (long)ph->requests >= ph->o->count
                         : now >= ph->t_end) {
      ph->cpu1 = bench_proc_cpu(ph->o->pid);
      ph->secs = (double)(now - ph->t_measure) / 1e9;
      ph->done = 1;
    }
  }
  return ph->done;
}

static inline void bench_phase_report(bench_phase *ph) {
  double cpu = ph->cpu0 >= 0 && ph->cpu1 >= 0 ? ph->cpu1 - ph->cpu0 : -1;
  bench_report(&ph->lat, ph->requests, ph->errors, ph->secs, cpu);
}

#endif
