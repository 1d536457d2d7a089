#!/usr/bin/env python3
"""The hub's log store survives a restart.

Starts microstream-hub with --store in a temporary directory, sends LOG
messages from a client (websockets + msgpack, as PROTOCOL.md describes),
stops the hub with SIGTERM, starts a new hub on the same file and reads the
records back from GET /api/logs. Also checks the 400 and 503 answers.

Usage: store_restart.py BUILD_ROOT     (output: TAP)
"""
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import msgpack
import websockets

HELLO, WELCOME, LOG = 1, 2, 7

_count = 0
_failed = 0


def check(cond, desc, diag=None):
    global _count, _failed
    _count += 1
    print("%s %d - %s" % ("ok" if cond else "not ok", _count, desc), flush=True)
    if not cond:
        _failed += 1
        if diag is not None:
            for line in str(diag).splitlines() or [""]:
                print("#   " + line, flush=True)
    return bool(cond)


def check_eq(got, want, desc):
    return check(got == want, desc, "expected %r\nobserved %r" % (want, got))


class Hub:
    def __init__(self, exe, *args):
        self.proc = subprocess.Popen(
            [exe, "--listen", "127.0.0.1:0", "--log-level", "warn", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r":(\d+)\s*$", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("hub did not start: %r %r" %
                               (line, self.proc.stderr.read()))
        self.port = int(m.group(1))

    def get(self, path):
        """(status, parsed JSON body) of a GET."""
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


async def send_logs(port, service, logs):
    """HELLO, wait for WELCOME, send the LOG messages; returns the hub id."""
    async with websockets.connect("ws://127.0.0.1:%d/ws" % port,
                                  subprotocols=["microstream.v1"]) as ws:
        await ws.send(msgpack.packb([HELLO, 1, service, None, {}]))
        hub_id = None
        while hub_id is None:
            msg = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10))
            if msg[0] == WELCOME:
                hub_id = msg[1]
        for log in logs:
            await ws.send(msgpack.packb(log))
        # The store flushes every 200 ms; the hub is stopped after this.
        await asyncio.sleep(0.5)
        return hub_id


def main():
    build = sys.argv[1]
    exe = os.path.join(build, "tools", "microstream-hub")
    tmp = tempfile.mkdtemp(prefix="ms_store_restart_")
    db = os.path.join(tmp, "logs.db")
    service = "store-test-%d" % os.getpid()
    # A client-given time an hour ahead: newer than the hub-stamped records
    # (so last in the answer) and inside the 7-day retention.
    sent_s = int(time.time()) + 3600
    sent_ts = sent_s * 1000000 + 123456
    iso = lambda s: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    logs = [[LOG, 0, 20, "msg %d" % i, {"k": i}] for i in range(5)]
    logs.append([LOG, sent_ts, 30, "with time", {"k": 5, "s": "x y"}])
    hubs = []
    try:
        hub = Hub(exe, "--store", db)
        hubs.append(hub)
        hub_id = asyncio.run(send_logs(hub.port, service, logs))
        check(isinstance(hub_id, str) and hub_id, "WELCOME carries a hub id")
        check_eq(hub.stop(), 0, "first hub exits 0 on SIGTERM")
        check(os.path.exists(db), "store file created")

        hub = Hub(exe, "--store", db)
        hubs.append(hub)
        status, body = hub.get("/api/logs?service=" + service)
        check_eq(status, 200, "GET /api/logs after restart: 200")
        recs = body.get("records", [])
        check_eq(body.get("count"), len(logs), "all records are there")
        check_eq([r.get("message") for r in recs],
                 ["msg %d" % i for i in range(5)] + ["with time"],
                 "messages in order")
        check(all(r.get("service") == service for r in recs), "service kept")
        check(all(r.get("hub_id") == hub_id for r in recs),
              "hub id of the first hub kept")
        check_eq([r.get("level") for r in recs], [20] * 5 + [30], "levels kept")
        check_eq([r.get("fields") for r in recs],
                 [{"k": i} for i in range(5)] + [{"k": 5, "s": "x y"}],
                 "fields kept as JSON objects")
        seqs = [r.get("seq") for r in recs]
        check(all(isinstance(s, int) for s in seqs) and seqs == sorted(seqs)
              and len(set(seqs)) == len(seqs), "seq increasing", seqs)
        if recs:
            last = recs[-1]
            check_eq(last.get("ts_us"), sent_ts, "client time kept")
            check_eq(last.get("time"), iso(sent_s) + ".123Z",
                     "ISO time with milliseconds")
            now_us = int(time.time() * 1e6)
            first = recs[0].get("ts_us", 0)
            check(abs(now_us - first) < 60 * 1e6,
                  "hub-stamped time is the wall clock", first)

        status, body = hub.get("/api/logs?service=%s&min_level=30&limit=1"
                               % service)
        check_eq([r.get("message") for r in body.get("records", [])],
                 ["with time"], "filters on the HTTP query")
        status, body = hub.get(
            "/api/logs?since=%sZ&until=%sZ&service=%s"
            % (iso(sent_s).replace(":", "%3A"), iso(sent_s + 1), service))
        check_eq([r.get("message") for r in body.get("records", [])],
                 ["with time"], "since/until in ISO 8601")
        status, body = hub.get("/api/logs?limit=nope")
        check(status == 400 and isinstance(body.get("error"), str),
              "bad parameter: 400 with a JSON error", (status, body))
        check_eq(hub.stop(), 0, "second hub exits 0")

        hub = Hub(exe, "--no-store")
        hubs.append(hub)
        status, body = hub.get("/api/logs")
        check_eq((status, body), (503, {"error": "no store"}),
                 "--no-store: 503")
        check_eq(hub.stop(), 0, "hub without store exits 0")
    except Exception as e:  # a crash is one failed check, not a lost plan
        check(False, "scenario ran to the end", repr(e))
    finally:
        for h in hubs:
            if h.proc.poll() is None:
                h.proc.kill()
                h.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("1..%d" % _count, flush=True)
    return 1 if _failed else 0


if __name__ == "__main__":
    sys.exit(main())
