#!/usr/bin/env python3
"""The installed programs end to end on 127.0.0.1: ms-req, ms-log, ms-tail
against a real microstream-hub and the example services. Prints TAP.

usage: tools_test.py BUILD_ROOT
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import check, finish, free_port, procs, run, start_hub as tap_start_hub, stop, wait_for  # noqa: E402

BUILD = sys.argv[1]
HUB = os.path.join(BUILD, "tools", "microstream-hub")
REQ = os.path.join(BUILD, "tools", "ms-req")
LOG = os.path.join(BUILD, "tools", "ms-log")
TAIL = os.path.join(BUILD, "tools", "ms-tail")
JWT = os.path.join(BUILD, "examples", "jwt_service")


def start_hub(port, store_dir):
    return tap_start_hub(HUB, port, os.path.join(store_dir, "logs.db"),
                         "--heartbeat-ms", "1000")


def tail_json(url, *extra):
    r = run([TAIL, "--hub", url, "--json"] + list(extra))
    out = []
    for line in r.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return r, out


def main():
    tmp = tempfile.mkdtemp(prefix="ms-tools-")
    port = free_port()
    url = "ws://127.0.0.1:%d/ws" % port
    hub = start_hub(port, tmp)

    # ---- ms-req ----
    jwt = subprocess.Popen([JWT, "--hub", url], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    procs.append(jwt)
    ok = False
    r = None
    for _ in range(50):
        r = run([REQ, "--hub", url, "jwt-service", "generate_jwt",
                 '{"user":"alice"}'])
        if r.returncode == 0:
            ok = True
            break
        time.sleep(0.1)
    check("ms-req prints the response as JSON and exits 0", ok,
          r and (r.returncode, r.stderr))
    if ok:
        data = json.loads(r.stdout)
        check("ms-req response carries the service's data",
              data.get("user") == "alice" and data.get("token", "").startswith("alice."),
              r.stdout)
    r = run([REQ, "--hub", url, "nobody", "x"])
    check("ms-req to an unknown service exits 1 with the code",
          r.returncode == 1 and "TARGET_SERVICE_NOT_FOUND" in r.stderr,
          (r.returncode, r.stderr))
    r = run([REQ, "--hub", url, "jwt-service", "no_such_event"])
    check("ms-req to an unknown event exits 1 with EVENT_NOT_FOUND",
          r.returncode == 1 and "EVENT_NOT_FOUND" in r.stderr, r.stderr)
    r = run([REQ, "--hub", url, "jwt-service", "generate_jwt", "{}"])
    check("ms-req passes an application error through",
          r.returncode == 1 and "BAD_REQUEST" in r.stderr, r.stderr)
    r = run([REQ, "--hub", url, "--json-wire", "jwt-service", "generate_jwt",
             '{"user":"bob"}'])
    check("ms-req over the JSON encoding", r.returncode == 0 and "bob" in r.stdout,
          (r.returncode, r.stdout, r.stderr))
    r = run([REQ, "--hub", url, "jwt-service", "generate_jwt", "{bad json"])
    check("ms-req refuses bad JSON with exit 2", r.returncode == 2, r.returncode)
    dead = "ws://127.0.0.1:%d/ws" % free_port()
    r = run([REQ, "--hub", dead, "jwt-service", "generate_jwt"])
    check("ms-req without a hub exits 3", r.returncode == 3, (r.returncode, r.stderr))
    stop(jwt)

    # ---- ms-log: a command's output, its exit status ----
    r = run([LOG, "--hub", url, "--service", "build", "--quiet", "--",
             "sh", "-c", "echo one; echo two >&2; printf 'bin\\001\\377\\n'; exit 7"])
    check("ms-log exits with the command's status", r.returncode == 7,
          (r.returncode, r.stderr))
    r, recs = tail_json(url, "--service", "build", "-n", "50")
    msgs = [(x["message"], x["level"], x["fields"].get("stream")) for x in recs]
    check("ms-log ships stdout lines at info",
          ("one", 20, "stdout") in msgs, msgs)
    check("ms-log ships stderr lines at warn",
          ("two", 30, "stderr") in msgs, msgs)
    check("ms-log escapes bytes that are not text",
          ("bin\\x01\\xff", 20, "stdout") in msgs, msgs)
    check("ms-tail without -f exits 0 after the history", r.returncode == 0,
          r.returncode)

    r = run([LOG, "--hub", url, "--service", "piped"], input="alpha\nbeta\n")
    check("ms-log reads standard input", r.returncode == 0, r.returncode)
    r, recs = tail_json(url, "--service", "piped")
    check("stdin lines arrive in order",
          [x["message"] for x in recs] == ["alpha", "beta"], recs)

    long_line = "x" * 40000 + "\n"
    run([LOG, "--hub", url, "--service", "long"], input=long_line)
    r, recs = tail_json(url, "--service", "long")
    check("a long line is split, nothing lost",
          len(recs) == 3 and sum(len(x["message"]) for x in recs) == 40000,
          [len(x["message"]) for x in recs])

    r, recs = tail_json(url, "--service", "build", "--min-level", "warn")
    check("ms-tail --min-level filters",
          [x["message"] for x in recs] == ["two"], recs)
    r, recs = tail_json(url, "--contains", "alp")
    check("ms-tail --contains filters",
          [x["message"] for x in recs] == ["alpha"], recs)
    r, recs = tail_json(url, "--service", "piped", "-n", "1")
    check("ms-tail -n limits the history",
          [x["message"] for x in recs] == ["beta"], recs)

    # ---- ms-log never blocks when the hub is away ----
    t0 = time.time()
    r = run([LOG, "--hub", dead, "--service", "offline", "--flush-ms", "300",
             "--", "echo", "hi"])
    took = time.time() - t0
    check("ms-log without a hub still runs the command and exits",
          r.returncode == 0 and "hi" in r.stdout and took < 20,  # it exits on its own: bounded, not a speed figure
          (r.returncode, took, r.stderr))
    check("ms-log reports what it could not deliver",
          "not delivered" in r.stderr, r.stderr)

    # ---- ms-tail -f follows across a hub restart without duplicates ----
    follower = subprocess.Popen([TAIL, "--hub", url, "--json", "-f", "-n", "0",
                                 "--service", "follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
    procs.append(follower)
    os.set_blocking(follower.stdout.fileno(), False)
    lines = []

    def read_lines():
        try:
            chunk = follower.stdout.read()
        except (TypeError, BlockingIOError):
            chunk = None
        if chunk:
            for line in chunk.splitlines():
                if line.strip():
                    lines.append(json.loads(line))

    time.sleep(0.5)
    run([LOG, "--hub", url, "--service", "follow"], input="f1\nf2\n")
    got = wait_for(lambda: (read_lines(), len(lines) >= 2)[1])
    check("ms-tail -f prints new records as they come", got,
          [x["message"] for x in lines])
    stop(hub)
    hub = start_hub(port, tmp)
    time.sleep(1.5)  # the follower reconnects (backoff) and resubscribes
    run([LOG, "--hub", url, "--service", "follow"], input="f3\n")
    got = wait_for(lambda: (read_lines(), len(lines) >= 3)[1], 8)
    msgs = [x["message"] for x in lines]
    check("ms-tail -f resumes after a hub restart", got and "f3" in msgs, msgs)
    keys = [(x["hub_id"], x["seq"]) for x in lines]
    check("no record is printed twice", len(keys) == len(set(keys))
          and msgs.count("f1") == 1 and msgs.count("f2") == 1, msgs)
    stop(follower)

    # ---- the store answers after the restart ----
    body = urlget(port, "/api/logs?service=build&limit=10")
    recs = json.loads(body).get("records", [])
    check("/api/logs keeps records across the hub restart",
          any(x["message"] == "one" for x in recs), body[:300])
    stop(hub)


def urlget(port, path):
    # /api/logs streams its answer (chunked): an HTTP client decodes it.
    url = "http://127.0.0.1:%d%s" % (port, path)
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


if __name__ == "__main__":
    finish(main)
