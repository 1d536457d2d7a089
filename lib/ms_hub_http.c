/* The hub's HTTP endpoints: /healthz, /metrics (Prometheus text),
 * /api/services (JSON). Anything else goes to the user's on_http hook. */
#include "ms_hub_int.h"
#include "ms_viewer.h"

#include <stdio.h>

static int path_is(const ms_http_request *req, const char *p) {
  size_t n = strlen(p);
  return req->path_len == n && memcmp(req->path, p, n) == 0;
}


static int cluster_metrics(const ms_hub *h, ms_buf *b) {
  const ms_hub_cluster_stats *c = &h->cstats;
  int rv = 0;
#define CMETRIC(name, help, val)                                           \
  if (rv == 0)                                                             \
    rv = ms_buf_appendf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",  \
                        name, help, name, name, (unsigned long long)(val))
  CMETRIC("microstream_cluster_requests_out_total",
          "Requests sent to services on other hubs.", c->requests_out);
  CMETRIC("microstream_cluster_requests_in_total",
          "Requests from other hubs routed to local services.",
          c->requests_in);
  CMETRIC("microstream_cluster_answers_out_total",
          "Answers sent back to other hubs.", c->answers_out);
  CMETRIC("microstream_cluster_answers_in_total",
          "Answers from other hubs routed to local requesters.",
          c->answers_in);
  CMETRIC("microstream_cluster_claims_total",
          "Service names claimed in the cluster.", c->claims);
  CMETRIC("microstream_cluster_claims_refused_total",
          "Claims refused: the name is held on another hub.",
          c->claims_refused);
  CMETRIC("microstream_cluster_claims_unavailable_total",
          "Claims that failed: the cluster could not be reached.",
          c->claims_unavailable);
  CMETRIC("microstream_cluster_names_lost_total",
          "Local holders closed because another hub holds the name.",
          c->names_lost);
  CMETRIC("microstream_cluster_hubs_down_total",
          "Other hubs found gone or unreachable.", c->hubs_down);
  CMETRIC("microstream_cluster_unavailable_total",
          "CLUSTER_UNAVAILABLE answers.", c->unavailable);
  CMETRIC("microstream_cluster_bad_messages_total",
          "Undecodable hub-to-hub messages.", c->bad_messages);
#undef CMETRIC
  if (rv == 0 && h->cl.metrics)
    rv = h->cl.metrics(h->cl_ctx, b);
  return rv;
}

int ms_hub_metrics_text(const ms_hub *h, ms_buf *b) {
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  const ms_hub_stats *s = &h->stats;
  int rv = 0;
#define METRIC(name, type, help, val)                                      \
  if (rv == 0)                                                             \
    rv = ms_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name,  \
                        help, name, type, name, (unsigned long long)(val))
  METRIC("microstream_connections", "gauge", "Open connections.",
         s->connections);
  METRIC("microstream_services", "gauge", "Registered service names.",
         s->services);
  METRIC("microstream_connections_accepted_total", "counter",
         "Connections accepted since start.", s->accepted_total);
  METRIC("microstream_requests_routed_total", "counter",
         "Requests forwarded to a target.", s->requests_routed);
  METRIC("microstream_responses_routed_total", "counter",
         "Answers forwarded back to a requester in time.",
         s->responses_routed);
  METRIC("microstream_late_responses_routed_total", "counter",
         "Answers forwarded inside a late window.", s->late_routed);
  METRIC("microstream_late_responses_dropped_total", "counter",
         "Answers for ids not in flight (after the window, or unknown).",
         s->late_dropped);
  METRIC("microstream_requests_pending", "gauge", "Requests in flight.",
         s->pending);
  METRIC("microstream_bytes_in_total", "counter", "Bytes received.",
         s->bytes_in);
  METRIC("microstream_bytes_out_total", "counter",
         "Protocol message bytes sent.", s->bytes_out);
  METRIC("microstream_log_records_total", "counter", "Log records kept.",
         s->log_records);
  METRIC("microstream_socketio_sessions", "gauge",
         "Socket.IO sessions open (polling or WebSocket).", s->sio_sessions);
#undef METRIC
  if (rv == 0)
    rv = ms_buf_appendf(b, "# HELP microstream_errors_total Errors sent, by "
                           "code.\n# TYPE microstream_errors_total counter\n");
  for (int i = 0; rv == 0 && i < -MS_ERR_TOO_MANY_SUBSCRIPTIONS - 400; i++)
    rv = ms_buf_appendf(b, "microstream_errors_total{code=\"%s\"} %llu\n",
                        ms_err_to_wire(-401 - i),
                        (unsigned long long)s->errors_by_code[i]);
  if (rv == 0 && h->clustered)
    rv = cluster_metrics(h, b);
  if (rv == 0)
    rv = ms_hub_metrics_routes_text(h, b);
  if (rv == 0 && h->cfg.on_metrics)
    rv = h->cfg.on_metrics((ms_hub *)h, b, h->ud);
  return rv;
}

int ms_hub_services_json(const ms_hub *h, ms_buf *b) {
  if (ms_life_dead(&h->life))
    return MS_ERR_STATE;
  int rv = ms_buf_append(b, "[", 1);
  size_t pos = 0;
  const ms_strmap_ent *e;
  int first = 1;
  while (rv == 0 && (e = ms_strmap_next(&h->registry, &pos)) != NULL) {
    const ms_hub_conn *hc = e->val;
    if (!hc->registered)
      continue; /* still claiming its name in the cluster */
    if (!first)
      rv = ms_buf_append(b, ",", 1);
    first = 0;
    if (rv == 0)
      rv = ms_buf_append(b, "{\"name\":", 8);
    if (rv == 0)
      rv = ms_buf_append_json_str(b, hc->name, hc->name_len);
    if (rv == 0 && hc->instance) {
      rv = ms_buf_append(b, ",\"instance\":", 12);
      if (rv == 0)
        rv = ms_buf_append_json_str(b, hc->instance, strlen(hc->instance));
    }
    if (rv == 0 && h->clustered) {
      rv = ms_buf_append(b, ",\"hub\":", 7);
      if (rv == 0)
        rv = ms_buf_append_json_str(b, h->hub_id, strlen(h->hub_id));
    }
    if (rv == 0)
      rv = ms_buf_appendf(
          b,
          ",\"protocol\":\"%s\",\"encoding\":\"%s\",\"connected_ms\":%lld,"
          "\"pending\":%zu}",
          hc->sio ? "socket.io" : "microstream",
          hc->sio ? "json"
                  : hc->enc == MS_ENC_JSON ? MS_SUBPROTO_JSON
                                           : MS_SUBPROTO_MSGPACK,
          (long long)(h->last_now - hc->ready_at), hc->n_out);
  }
  if (rv == 0 && h->clustered && h->cl.services)
    rv = h->cl.services(h->cl_ctx, b, first);
  if (rv == 0)
    rv = ms_buf_append(b, "]", 1);
  return rv;
}

/* 401/403 with a short JSON body. */
static void refuse(ms_hub *h, ms_conn *c, int status, const char *why) {
  char body[160];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\",\"reason\":\"%s\"}",
                   status == 401 ? "unauthorized" : "forbidden", why);
  (void)h;
  ms_conn_http_respond(c, status, "application/json",
                       status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL,
                       body, n > 0 ? (size_t)n : 0);
}

/* What a path needs: /api/ the watch scope, /metrics a token when so
 * configured, the rest (page, /healthz) nothing. */
static unsigned path_needs(const ms_hub *h, const ms_http_request *req) {
  if (req->path_len >= 5 && memcmp(req->path, "/api/", 5) == 0)
    return MS_SCOPE_WATCH;
  if (path_is(req, "/metrics") && h->cfg.metrics_need_token)
    return MS_SCOPE_SERVICE | MS_SCOPE_WATCH;
  return 0;
}

void ms_hub_http(ms_hub *h, ms_hub_conn *hc, ms_conn *c,
                 const ms_http_request *req) {
  const char *why = "";
  int st = ms_hub_http_guard(h, req, path_needs(h, req), hc->secure, hc->peer,
                             h->last_now, &why);
  if (st) {
    refuse(h, c, st, why);
    return;
  }
  ms_buf b;
  ms_buf_init(&b, h->mem);
  int is_get = req->method_len == 3 && memcmp(req->method, "GET", 3) == 0;
  int is_head = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
  if (!is_get && !is_head) {
    ms_conn_http_respond(c, 405, "text/plain; charset=utf-8", "Allow: GET\r\n",
                         "method not allowed\n", 19);
    return;
  }
  int rv;
  if (path_is(req, "/healthz")) {
    rv = ms_buf_appendf(&b,
                        "{\"status\":\"%s\",\"hub_id\":\"%s\",\"connections\":"
                        "%llu,\"services\":%llu,\"uptime_ms\":%lld}",
                        h->shutting_down ? "shutting_down" : "ok", h->hub_id,
                        (unsigned long long)h->stats.connections,
                        (unsigned long long)h->stats.services,
                        (long long)(h->last_now - h->started_at));
    if (rv == 0)
      ms_conn_http_respond(c, h->shutting_down ? 503 : 200, "application/json",
                           NULL, b.data, b.len);
  } else if (path_is(req, "/metrics")) {
    rv = ms_hub_metrics_text(h, &b);
    if (rv == 0)
      ms_conn_http_respond(c, 200, "text/plain; version=0.0.4", NULL, b.data,
                           b.len);
  } else if (h->cfg.serve_viewer &&
             (path_is(req, "/") || path_is(req, "/index.html"))) {
    rv = 0;
    ms_viewer_respond(c);
  } else if (path_is(req, "/api/stats")) {
    rv = ms_hub_stats_json(h, &b);
    if (rv == 0)
      ms_conn_http_respond(c, 200, "application/json",
                           "Cache-Control: no-cache\r\n", b.data, b.len);
  } else if (path_is(req, "/api/services")) {
    rv = ms_hub_services_json(h, &b);
    if (rv == 0)
      ms_conn_http_respond(c, 200, "application/json", NULL, b.data, b.len);
  } else {
    rv = 0;
    if (!h->cfg.on_http || h->cfg.on_http(h, c, req, h->ud) != 0)
      ms_conn_http_respond(c, 404, "text/plain; charset=utf-8", NULL,
                           "not found\n", 10);
  }
  if (rv)
    ms_conn_http_respond(c, 500, "text/plain; charset=utf-8", NULL,
                         "out of memory\n", 14);
  ms_buf_free(&b);
}
