/* The hub's per-route figures: for each (target, event) pair, requests by
 * outcome and a latency histogram, as the hub sees them (from forwarding
 * the REQUEST to forwarding the answer). /metrics shows them in the
 * Prometheus text format, /api/stats as JSON for the live page.
 *
 * The cost per request is one hash lookup and a few increments: a pair's
 * entry is allocated the first time the pair is seen, at most
 * MS_HUB_MAX_ROUTE_STATS of them; later pairs share one "other" entry, so
 * a client inventing event names cannot grow the hub's memory. */
#include "ms_hub_int.h"

#include <stdio.h>

#define MS_HUB_MAX_ROUTE_STATS 512

/* Upper bounds of the latency buckets, in milliseconds (then +Inf). */
static const int64_t bucket_ms[MS_HUB_LAT_BUCKETS - 1] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

static const char *const outcome_name[MS_OUTCOME_COUNT] = {
    "ok", "error", "timeout", "disconnected", "cancelled"};

struct hub_metrics {
  ms_strmap by_key; /* "target\x1f" "event" -> hub_route_stats */
  hub_route_stats *list; /* in order of first sight */
  hub_route_stats *tail;
  size_t n;
  hub_route_stats *other; /* past the cap */
};

static hub_route_stats *rs_new(ms_hub *h, const char *target, size_t tlen,
                               const char *event, size_t elen) {
  hub_route_stats *rs = ms_calloc(h->mem, 1, sizeof *rs + tlen + elen + 2);
  if (!rs)
    return NULL;
  rs->target_len = tlen;
  rs->event_len = elen;
  memcpy(rs->key, target, tlen);
  rs->key[tlen] = '\x1f';
  memcpy(rs->key + tlen + 1, event, elen);
  rs->key[tlen + 1 + elen] = '\0';
  return rs;
}

int ms_hub_metrics_new(ms_hub *h) {
  hub_metrics *m = ms_calloc(h->mem, 1, sizeof *m);
  if (!m)
    return MS_ERR_NOMEM;
  ms_strmap_init(&m->by_key, h->mem, 0x6d657472696373ULL);
  m->other = rs_new(h, "", 0, "", 0);
  if (!m->other) {
    ms_free(h->mem, m);
    return MS_ERR_NOMEM;
  }
  h->metrics = m;
  return 0;
}

void ms_hub_metrics_del(ms_hub *h) {
  hub_metrics *m = h->metrics;
  if (!m)
    return;
  hub_route_stats *rs = m->list;
  while (rs) {
    hub_route_stats *next = rs->next;
    ms_free(h->mem, rs);
    rs = next;
  }
  ms_free(h->mem, m->other);
  ms_strmap_free(&m->by_key);
  ms_free(h->mem, m);
  h->metrics = NULL;
}

hub_route_stats *ms_hub_route_stats(ms_hub *h, const char *target,
                                    size_t tlen, const char *event,
                                    size_t elen) {
  hub_metrics *m = h->metrics;
  if (!m)
    return NULL;
  char key[512];
  if (tlen + elen + 1 > sizeof key)
    return m->other;
  memcpy(key, target, tlen);
  key[tlen] = '\x1f';
  memcpy(key + tlen + 1, event, elen);
  hub_route_stats *rs = ms_strmap_get(&m->by_key, key, tlen + 1 + elen);
  if (rs)
    return rs;
  if (m->n >= MS_HUB_MAX_ROUTE_STATS)
    return m->other;
  rs = rs_new(h, target, tlen, event, elen);
  if (!rs)
    return m->other;
  if (ms_strmap_put(&m->by_key, rs->key, tlen + 1 + elen, rs) != 0) {
    ms_free(h->mem, rs);
    return m->other;
  }
  if (m->tail)
    m->tail->next = rs;
  else
    m->list = rs;
  m->tail = rs;
  m->n++;
  return rs;
}

hub_route_stats *ms_hub_route_stats_cached(ms_hub *h, hub_route_stats **cache,
                                           const char *target, size_t tlen,
                                           const char *event, size_t elen) {
  hub_route_stats *c = *cache;
  /* Entries live as long as the hub, so the cache never dangles. */
  if (c && c->target_len == tlen && c->event_len == elen &&
      memcmp(c->key + tlen + 1, event, elen) == 0 &&
      memcmp(c->key, target, tlen) == 0)
    return c;
  c = ms_hub_route_stats(h, target, tlen, event, elen);
  *cache = c;
  return c;
}

void ms_hub_route_done(hub_route_stats *rs, int outcome, int64_t started,
                       int64_t now) {
  if (!rs || outcome < 0 || outcome >= MS_OUTCOME_COUNT)
    return;
  rs->outcomes[outcome]++;
  if (outcome != MS_OUTCOME_OK && outcome != MS_OUTCOME_ERROR)
    return; /* only answers have a latency */
  int64_t ms = now - started;
  if (ms < 0)
    ms = 0;
  int b = 0;
  while (b < MS_HUB_LAT_BUCKETS - 1 && ms > bucket_ms[b])
    b++;
  rs->buckets[b]++;
  rs->latency_sum_ms += (uint64_t)ms;
}

/* Label values are service names and event names: escape for the text
 * format (backslash, quote, newline). */
static int append_label(ms_buf *b, const char *s, size_t n) {
  int rv = 0;
  for (size_t i = 0; rv == 0 && i < n; i++) {
    char c = s[i];
    if (c == '\\' || c == '"')
      rv = ms_buf_appendf(b, "\\%c", c);
    else if (c == '\n')
      rv = ms_buf_append(b, "\\n", 2);
    else
      rv = ms_buf_append(b, &c, 1);
  }
  return rv;
}

static int append_route_labels(ms_buf *b, const hub_route_stats *rs,
                               int other) {
  if (other)
    return ms_buf_appendf(b, "target=\"_other\",event=\"_other\"");
  int rv = ms_buf_append(b, "target=\"", 8);
  if (rv == 0)
    rv = append_label(b, rs->key, rs->target_len);
  if (rv == 0)
    rv = ms_buf_append(b, "\",event=\"", 9);
  if (rv == 0)
    rv = append_label(b, rs->key + rs->target_len + 1, rs->event_len);
  if (rv == 0)
    rv = ms_buf_append(b, "\"", 1);
  return rv;
}

static uint64_t answered(const hub_route_stats *rs) {
  return rs->outcomes[MS_OUTCOME_OK] + rs->outcomes[MS_OUTCOME_ERROR];
}

int ms_hub_metrics_routes_text(const ms_hub *h, ms_buf *b) {
  const hub_metrics *m = h->metrics;
  if (!m)
    return 0;
  int rv = ms_buf_appendf(
      b, "# HELP microstream_requests_total Requests routed, by target, "
         "event and outcome (ok; error: the service answered with an error; "
         "timeout; disconnected: the target went away; cancelled).\n"
         "# TYPE microstream_requests_total counter\n");
  int has_other = answered(m->other) || m->other->outcomes[MS_OUTCOME_TIMEOUT] ||
                  m->other->outcomes[MS_OUTCOME_DISCONNECTED] ||
                  m->other->outcomes[MS_OUTCOME_CANCELLED];
  for (int pass = 0; pass < 2 && rv == 0; pass++) {
    for (const hub_route_stats *rs = pass ? m->other : m->list; rs && rv == 0;
         rs = pass ? NULL : rs->next) {
      if (pass && !has_other)
        break;
      for (int o = 0; o < MS_OUTCOME_COUNT && rv == 0; o++) {
        rv = ms_buf_append(b, "microstream_requests_total{", 27);
        if (rv == 0)
          rv = append_route_labels(b, rs, pass);
        if (rv == 0)
          rv = ms_buf_appendf(b, ",outcome=\"%s\"} %llu\n", outcome_name[o],
                              (unsigned long long)rs->outcomes[o]);
      }
    }
  }
  if (rv == 0)
    rv = ms_buf_appendf(
        b, "# HELP microstream_request_duration_seconds Time from forwarding "
           "a request to forwarding its answer, by target and event.\n"
           "# TYPE microstream_request_duration_seconds histogram\n");
  for (int pass = 0; pass < 2 && rv == 0; pass++) {
    for (const hub_route_stats *rs = pass ? m->other : m->list; rs && rv == 0;
         rs = pass ? NULL : rs->next) {
      if (pass && !has_other)
        break;
      uint64_t cum = 0;
      for (int k = 0; k < MS_HUB_LAT_BUCKETS && rv == 0; k++) {
        cum += rs->buckets[k];
        rv = ms_buf_append(b, "microstream_request_duration_seconds_bucket{",
                           44);
        if (rv == 0)
          rv = append_route_labels(b, rs, pass);
        if (rv == 0 && k < MS_HUB_LAT_BUCKETS - 1)
          rv = ms_buf_appendf(b, ",le=\"%g\"} %llu\n",
                              (double)bucket_ms[k] / 1000.0,
                              (unsigned long long)cum);
        else if (rv == 0)
          rv = ms_buf_appendf(b, ",le=\"+Inf\"} %llu\n",
                              (unsigned long long)cum);
      }
      if (rv == 0)
        rv = ms_buf_append(b, "microstream_request_duration_seconds_sum{", 41);
      if (rv == 0)
        rv = append_route_labels(b, rs, pass);
      if (rv == 0)
        rv = ms_buf_appendf(b, "} %.3f\n", (double)rs->latency_sum_ms / 1000.0);
      if (rv == 0)
        rv = ms_buf_append(b, "microstream_request_duration_seconds_count{",
                           43);
      if (rv == 0)
        rv = append_route_labels(b, rs, pass);
      if (rv == 0)
        rv = ms_buf_appendf(b, "} %llu\n", (unsigned long long)answered(rs));
    }
  }
  /* Open connections by what they speak. */
  /* http, msgpack, json, closing, socket.io. A Socket.IO session counts
   * once: as its WebSocket once upgraded (a WebSocket at /socket.io/ speaks
   * Engine.IO, not msgpack), else as the polling session (its parked GET
   * is plain HTTP). */
  uint64_t by[5] = {0, 0, 0, 0, 0};
  for (const ms_hub_conn *hc = h->all; hc; hc = hc->all_next) {
    if (hc->sio) {
      if (!ms_hub_sio_on_ws(hc))
        by[4]++;
    } else if (hc->eio_ws && hc->state != HC_HTTP && hc->state != HC_CLOSING &&
               hc->state != HC_GONE) {
      by[4]++;
    } else if (hc->state == HC_HTTP)
      by[0]++;
    else if (hc->state == HC_CLOSING || hc->state == HC_GONE)
      by[3]++;
    else
      by[hc->enc == MS_ENC_JSON ? 2 : 1]++;
  }
  if (rv == 0)
    rv = ms_buf_appendf(
        b,
        "# HELP microstream_connections_by_protocol Open connections by "
        "protocol (http: plain HTTP or before the upgrade).\n"
        "# TYPE microstream_connections_by_protocol gauge\n"
        "microstream_connections_by_protocol{protocol=\"http\"} %llu\n"
        "microstream_connections_by_protocol{protocol=\"" MS_SUBPROTO_MSGPACK
        "\"} %llu\n"
        "microstream_connections_by_protocol{protocol=\"" MS_SUBPROTO_JSON
        "\"} %llu\n"
        "microstream_connections_by_protocol{protocol=\"closing\"} %llu\n"
        "microstream_connections_by_protocol{protocol=\"socket.io\"} %llu\n",
        (unsigned long long)by[0], (unsigned long long)by[1],
        (unsigned long long)by[2], (unsigned long long)by[3],
        (unsigned long long)by[4]);
  if (rv == 0)
    rv = ms_buf_appendf(
        b,
        "# HELP microstream_log_records_sent_total Log records sent to "
        "subscribers.\n"
        "# TYPE microstream_log_records_sent_total counter\n"
        "microstream_log_records_sent_total %llu\n"
        "# HELP microstream_log_records_missed_total Log records subscribers "
        "missed (reported to them as gaps).\n"
        "# TYPE microstream_log_records_missed_total counter\n"
        "microstream_log_records_missed_total %llu\n"
        "# HELP microstream_connections_refused_total Connections closed "
        "as they were accepted: over the per-address rate (rate), over the "
        "per-address count without a session (unauthenticated), over "
        "max-connections (full).\n"
        "# TYPE microstream_connections_refused_total counter\n"
        "microstream_connections_refused_total{reason=\"rate\"} %llu\n"
        "microstream_connections_refused_total{reason=\"unauthenticated\"} "
        "%llu\n"
        "microstream_connections_refused_total{reason=\"full\"} %llu\n"
        "# HELP microstream_tls_failures_total TLS streams that failed "
        "(handshake failed or timed out, alert, plaintext on a TLS port, "
        "TLS on a plain port).\n"
        "# TYPE microstream_tls_failures_total counter\n"
        "microstream_tls_failures_total %llu\n"
        "# HELP microstream_events_suppressed_total Event log lines held "
        "back during a flood (refusals, failed authentications, TLS "
        "failures).\n"
        "# TYPE microstream_events_suppressed_total counter\n"
        "microstream_events_suppressed_total %llu\n"
        "# HELP microstream_build_info The hub's version.\n"
        "# TYPE microstream_build_info gauge\n"
        "microstream_build_info{version=\"%s\"} 1\n",
        (unsigned long long)h->stats.log_records_out,
        (unsigned long long)h->stats.log_records_missed,
        (unsigned long long)h->stats.refused_rate,
        (unsigned long long)h->stats.refused_unauth,
        (unsigned long long)h->stats.refused_full,
        (unsigned long long)h->stats.tls_failures,
        (unsigned long long)h->stats.events_suppressed, MS_VERSION_STRING);
  return rv;
}

int ms_hub_stats_json(const ms_hub *h, ms_buf *b) {
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  const hub_metrics *m = h->metrics;
  int rv = ms_buf_appendf(
      b, "{\"hub_id\":\"%s\",\"uptime_ms\":%lld,\"connections\":%llu,"
         "\"services\":%llu,\"log_records\":%llu,\"bucket_le_ms\":[",
      h->hub_id, (long long)(h->last_now - h->started_at),
      (unsigned long long)h->stats.connections,
      (unsigned long long)h->stats.services,
      (unsigned long long)h->stats.log_records);
  for (int k = 0; rv == 0 && k < MS_HUB_LAT_BUCKETS - 1; k++)
    rv = ms_buf_appendf(b, "%s%lld", k ? "," : "", (long long)bucket_ms[k]);
  if (rv == 0)
    rv = ms_buf_append(b, "],\"routes\":[", 12);
  int first = 1;
  for (const hub_route_stats *rs = m ? m->list : NULL; rs && rv == 0;
       rs = rs->next) {
    rv = ms_buf_appendf(b, "%s{\"target\":", first ? "" : ",");
    first = 0;
    if (rv == 0)
      rv = ms_buf_append_json_str(b, rs->key, rs->target_len);
    if (rv == 0)
      rv = ms_buf_append(b, ",\"event\":", 9);
    if (rv == 0)
      rv = ms_buf_append_json_str(b, rs->key + rs->target_len + 1,
                                  rs->event_len);
    for (int o = 0; o < MS_OUTCOME_COUNT && rv == 0; o++)
      rv = ms_buf_appendf(b, ",\"%s\":%llu", outcome_name[o],
                          (unsigned long long)rs->outcomes[o]);
    if (rv == 0)
      rv = ms_buf_appendf(b, ",\"latency_sum_ms\":%llu,\"buckets\":[",
                          (unsigned long long)rs->latency_sum_ms);
    for (int k = 0; k < MS_HUB_LAT_BUCKETS && rv == 0; k++)
      rv = ms_buf_appendf(b, "%s%llu", k ? "," : "",
                          (unsigned long long)rs->buckets[k]);
    if (rv == 0)
      rv = ms_buf_append(b, "]}", 2);
  }
  if (rv == 0)
    rv = ms_buf_append(b, "]}", 2);
  return rv;
}
