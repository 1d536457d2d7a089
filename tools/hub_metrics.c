/* The hub program's own /metrics figures (see hub_metrics.h). */
#include "hub_metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static const double flush_le_s[HUB_FLUSH_BUCKETS - 1] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0};

void hub_store_timing_observe(hub_store_timing *t, double seconds) {
  int b = 0;
  while (b < HUB_FLUSH_BUCKETS - 1 && seconds > flush_le_s[b])
    b++;
  t->buckets[b]++;
  t->count++;
  t->sum_s += seconds;
}

static long long file_size(const char *path, const char *suffix) {
  char p[4096];
  struct stat sb;
  if (snprintf(p, sizeof p, "%s%s", path, suffix) >= (int)sizeof p)
    return 0;
  return stat(p, &sb) == 0 ? (long long)sb.st_size : 0;
}

static int store_text(ms_buf *b, const ms_store *store, const char *path,
                      const hub_store_timing *t) {
  ms_store_stats ss;
  ms_store_get_stats(store, &ss);
  int rv = ms_buf_appendf(
      b,
      "# HELP microstream_log_records_stored_total Log records written to "
      "the store.\n"
      "# TYPE microstream_log_records_stored_total counter\n"
      "microstream_log_records_stored_total %llu\n"
      "# HELP microstream_log_records_dropped_total Log records the store "
      "dropped (its batch was full while writes failed).\n"
      "# TYPE microstream_log_records_dropped_total counter\n"
      "microstream_log_records_dropped_total %llu\n"
      "# HELP microstream_store_records Records in the store now.\n"
      "# TYPE microstream_store_records gauge\n"
      "microstream_store_records %llu\n"
      "# HELP microstream_store_pending_records Records waiting for the "
      "next store write.\n"
      "# TYPE microstream_store_pending_records gauge\n"
      "microstream_store_pending_records %llu\n"
      "# HELP microstream_store_deleted_total Records removed by "
      "retention.\n"
      "# TYPE microstream_store_deleted_total counter\n"
      "microstream_store_deleted_total %llu\n"
      "# HELP microstream_store_write_errors_total Store writes that "
      "failed.\n"
      "# TYPE microstream_store_write_errors_total counter\n"
      "microstream_store_write_errors_total %llu\n"
      "# HELP microstream_store_size_bytes Size of the store's files "
      "(database and write-ahead log).\n"
      "# TYPE microstream_store_size_bytes gauge\n"
      "microstream_store_size_bytes %lld\n"
      "# HELP microstream_store_write_duration_seconds Time of one batched "
      "store write.\n"
      "# TYPE microstream_store_write_duration_seconds histogram\n",
      (unsigned long long)ss.written, (unsigned long long)ss.dropped,
      (unsigned long long)ss.rows, (unsigned long long)ss.pending,
      (unsigned long long)ss.deleted, (unsigned long long)ss.flush_errors,
      file_size(path, "") + file_size(path, "-wal"));
  uint64_t cum = 0;
  for (int k = 0; rv == 0 && k < HUB_FLUSH_BUCKETS; k++) {
    cum += t->buckets[k];
    if (k < HUB_FLUSH_BUCKETS - 1)
      rv = ms_buf_appendf(
          b, "microstream_store_write_duration_seconds_bucket{le=\"%g\"} %llu\n",
          flush_le_s[k], (unsigned long long)cum);
    else
      rv = ms_buf_appendf(
          b, "microstream_store_write_duration_seconds_bucket{le=\"+Inf\"} "
             "%llu\n",
          (unsigned long long)cum);
  }
  if (rv == 0)
    rv = ms_buf_appendf(b,
                        "microstream_store_write_duration_seconds_sum %.6f\n"
                        "microstream_store_write_duration_seconds_count %llu\n",
                        t->sum_s, (unsigned long long)t->count);
  return rv;
}

static long long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  long long n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

static long long rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  long long size = 0, rss = 0;
  int ok = fscanf(f, "%lld %lld", &size, &rss) == 2;
  fclose(f);
  return ok ? rss * sysconf(_SC_PAGESIZE) : -1;
}

static long long vsz_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  long long size = 0;
  int ok = fscanf(f, "%lld", &size) == 1;
  fclose(f);
  return ok ? size * sysconf(_SC_PAGESIZE) : -1;
}

int hub_metrics_text(ms_buf *b, const ms_store *store, const char *store_path,
                     const hub_store_timing *t, double start_time_s) {
  int rv = 0;
  if (store)
    rv = store_text(b, store, store_path, t);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  struct rlimit rl;
  long long max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
                              rl.rlim_cur != RLIM_INFINITY
                          ? (long long)rl.rlim_cur
                          : -1;
  if (rv == 0)
    rv = ms_buf_appendf(
        b,
        "# HELP process_cpu_seconds_total User and system CPU time spent.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total %.3f\n"
        "# HELP process_start_time_seconds Start time since the Unix epoch.\n"
        "# TYPE process_start_time_seconds gauge\n"
        "process_start_time_seconds %.3f\n",
        cpu, start_time_s);
  long long rss = rss_bytes(), vsz = vsz_bytes(), fds = open_fds();
  if (rv == 0 && rss >= 0)
    rv = ms_buf_appendf(
        b,
        "# HELP process_resident_memory_bytes Resident memory size.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes %lld\n",
        rss);
  if (rv == 0 && vsz >= 0)
    rv = ms_buf_appendf(
        b,
        "# HELP process_virtual_memory_bytes Virtual memory size.\n"
        "# TYPE process_virtual_memory_bytes gauge\n"
        "process_virtual_memory_bytes %lld\n",
        vsz);
  if (rv == 0 && fds >= 0)
    rv = ms_buf_appendf(b,
                        "# HELP process_open_fds Open file descriptors.\n"
                        "# TYPE process_open_fds gauge\n"
                        "process_open_fds %lld\n",
                        fds);
  if (rv == 0 && max_fds >= 0)
    rv = ms_buf_appendf(
        b,
        "# HELP process_max_fds Limit of open file descriptors.\n"
        "# TYPE process_max_fds gauge\n"
        "process_max_fds %lld\n",
        max_fds);
  return rv;
}
