#!/usr/bin/env python3
"""/metrics as Prometheus reads it and /api/stats as the page reads it,
from a real hub with a service, callers, log shippers and a follower;
`promtool check metrics` must find nothing to warn about. Prints TAP
(skips when promtool is missing).

usage: metrics_test.py BUILD_ROOT
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import check, free_port, procs, run, finish, programs  # noqa: E402
import tap  # noqa: E402

HUB, REQ, LOG, TAIL, JWT = programs(sys.argv[1])
PROMTOOL = shutil.which("promtool")


def get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def value(text, series):
    """The value of one exact series line, or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line[len(series) + 1:])
    return None


def main():
    if not PROMTOOL:
        print("1..0 # SKIP promtool not installed (Debian package prometheus)")
        sys.exit(0)  # TAP: the plan "1..0 # SKIP" makes meson report a skip
    tmp = tempfile.mkdtemp(prefix="ms-metrics-")
    port = free_port()
    url = "ws://127.0.0.1:%d/ws" % port
    hub = tap.start_hub(HUB, port, os.path.join(tmp, "logs.db"))
    jwt = subprocess.Popen([JWT, "--hub", url], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    procs.append(jwt)
    ok = 0
    for _ in range(100):
        if run([REQ, "--hub", url, "jwt-service", "generate_jwt",
                '{"user":"a"}']).returncode == 0:
            ok = 1
            break
        time.sleep(0.1)
    for _ in range(2):
        ok += run([REQ, "--hub", url, "jwt-service", "generate_jwt",
                   '{"user":"b"}']).returncode == 0
    check("three requests answered", ok == 3, ok)
    r = run([REQ, "--hub", url, "jwt-service", "generate_jwt", "{}"])
    check("a request the service refuses", r.returncode == 1, r.stderr)
    r = run([REQ, "--hub", url, "jwt-service", "nope"])
    check("an event the service does not know", r.returncode == 1, r.stderr)
    run([LOG, "--hub", url, "--service", "shipper"],
        input="".join("line %d\n" % i for i in range(300)))
    # A follower: the hub sends it the last 50 from memory.
    f = subprocess.Popen([TAIL, "--hub", url, "--service", "shipper", "-n",
                          "50", "--json", "-f"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    procs.append(f)
    n = 0
    for _ in range(50):
        if f.stdout.readline():
            n += 1
    check("a follower read 50 records", n == 50, n)
    sent = 0
    for _ in range(100):
        _, _, t = get(port, "/metrics")
        sent = value(t, "microstream_log_records_sent_total") or 0
        if sent >= 50:
            break
        time.sleep(0.1)
    f.kill()
    f.wait()
    time.sleep(0.6)  # one store write (every 200 ms)

    status, ctype, text = get(port, "/metrics")
    check("/metrics answers 200 in the text format",
          status == 200 and ctype.startswith("text/plain"), (status, ctype))
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    check("promtool check metrics: no errors, no warnings",
          p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(),
          (p.returncode, p.stdout, p.stderr))
    ok_series = ('microstream_requests_total{target="jwt-service",'
                 'event="generate_jwt",outcome="ok"}')
    check("requests by target, event and outcome",
          value(text, ok_series) == 3, value(text, ok_series))
    err_series = ('microstream_requests_total{target="jwt-service",'
                  'event="generate_jwt",outcome="error"}')
    check("errors the service returned are counted",
          value(text, err_series) == 1, value(text, err_series))
    nf_series = ('microstream_requests_total{target="jwt-service",'
                 'event="nope",outcome="error"}')
    check("EVENT_NOT_FOUND from the service is counted as its error",
          value(text, nf_series) == 1, value(text, nf_series))
    cnt = ('microstream_request_duration_seconds_count{target="jwt-service",'
           'event="generate_jwt"}')
    inf = ('microstream_request_duration_seconds_bucket{target="jwt-service",'
           'event="generate_jwt",le="+Inf"}')
    check("a latency histogram per route",
          value(text, cnt) == 4 and value(text, inf) == 4,
          (value(text, cnt), value(text, inf)))
    check("connections by protocol",
          value(text, 'microstream_connections_by_protocol{protocol="microstream.v1"}')
          is not None and
          value(text, 'microstream_connections_by_protocol{protocol="http"}') >= 1,
          re.findall(r"microstream_connections_by_protocol.*", text))
    check("bytes in and out", value(text, "microstream_bytes_in_total") > 0 and
          value(text, "microstream_bytes_out_total") > 0)
    check("log records in, sent, stored",
          value(text, "microstream_log_records_total") >= 300 and
          value(text, "microstream_log_records_sent_total") >= 50 and
          value(text, "microstream_log_records_stored_total") >= 300,
          re.findall(r"microstream_log_records\w*_total \S+", text))
    check("log records dropped and missed are shown",
          value(text, "microstream_log_records_dropped_total") == 0 and
          value(text, "microstream_log_records_missed_total") == 0)
    check("store write latency and size",
          value(text, "microstream_store_write_duration_seconds_count") >= 1 and
          value(text, "microstream_store_size_bytes") > 0)
    check("process metrics",
          value(text, "process_resident_memory_bytes") > 1e6 and
          value(text, "process_open_fds") >= 3 and
          value(text, "process_cpu_seconds_total") > 0 and
          value(text, "process_start_time_seconds") > 1.6e9)
    check("build info", re.search(r'^microstream_build_info\{version="[^"]+"\} 1$',
                                  text, re.M))

    status, ctype, body = get(port, "/api/stats")
    st = json.loads(body)
    route = [x for x in st["routes"]
             if x["target"] == "jwt-service" and x["event"] == "generate_jwt"]
    check("/api/stats has the route's counts and buckets",
          status == 200 and route and route[0]["ok"] == 3 and
          route[0]["error"] == 1 and sum(route[0]["buckets"]) == 4 and
          len(route[0]["buckets"]) == len(st["bucket_le_ms"]) + 1,
          body[:400])
    hub.send_signal(signal.SIGTERM)
    hub.wait(10)


if __name__ == "__main__":
    finish(main)
