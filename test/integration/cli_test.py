#!/usr/bin/env python3
"""The programs as a terminal user meets them: nothing lost by ms-log,
options checked, failures said clearly with documented exit codes.
Prints TAP.

usage: cli_test.py BUILD_ROOT
"""
import json
import os
import signal
import sqlite3
import tempfile
import urllib.error
import urllib.request
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import (check, free_port, procs, run, stop, wait_for,  # noqa: E402
                 finish, programs)
import tap  # noqa: E402

HUB, REQ, LOG, TAIL, JWT = programs(sys.argv[1])


def start_hub(port, db, *extra):
    return tap.start_hub(HUB, port, db, *extra)


def tail_json(url, *extra):
    r = run([TAIL, "--hub", url, "--json"] + list(extra))
    return r, [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]


def main():
    tmp = tempfile.mkdtemp(prefix="ms-cli-")
    port = free_port()
    url = "ws://127.0.0.1:%d/ws" % port
    db = os.path.join(tmp, "logs.db")
    hub = start_hub(port, db)
    dead = "ws://127.0.0.1:%d/ws" % free_port()

    # ---- ms-log loses nothing: the pipe pushes back ----
    n = 200000
    data = "".join("%d\n" % i for i in range(1, n + 1))
    r = run([LOG, "--hub", url, "--service", "flood"], input=data, timeout=240)
    check("ms-log ships 200000 piped lines and exits 0",
          r.returncode == 0 and "dropped" not in r.stderr, (r.returncode, r.stderr))
    r = run([LOG, "--hub", url, "--service", "flood-cmd", "--quiet", "--",
             "seq", "1", "50000"], timeout=240)
    check("ms-log -- COMMAND ships all of a large output", r.returncode == 0,
          (r.returncode, r.stderr))
    r = run([LOG, "--hub", dead, "--service", "gone", "--drop", "--queue", "100",
             "--flush-ms", "100"], input="x\n" * 5000, timeout=60)
    check("ms-log --drop never blocks and counts what it dropped",
          "dropped" in r.stderr and r.returncode == 3, (r.returncode, r.stderr))

    # ---- every tool: --version, --help with exit codes, numbers checked ----
    for prog in (HUB, REQ, LOG, TAIL):
        name = os.path.basename(prog)
        r = run([prog, "--version"])
        check("%s --version" % name,
              r.returncode == 0 and r.stdout.startswith(name + " "), r.stdout)
    for prog in (REQ, LOG, TAIL):
        name = os.path.basename(prog)
        r = run([prog, "--help"])
        check("%s --help lists the exit codes and MS_HUB" % name,
              r.returncode == 0 and "exit codes" in r.stdout
              and "MS_HUB" in r.stdout and "MS_TOKEN" in r.stdout, r.stdout)
    for args in ([REQ, "--timeout-ms", "abc", "a", "b"],
                 [REQ, "--timeout-ms", "-5", "a", "b"],
                 [TAIL, "-n", "-5"], [TAIL, "-n", "12x"],
                 [LOG, "--service", "x", "--flush-ms", "soon"],
                 [LOG, "--service", "x", "--queue", "0"]):
        r = run(args)
        check("%s rejected with usage and exit 2" % " ".join(args[1:]),
              r.returncode == 2 and "usage:" in r.stderr
              and "whole number" in r.stderr, (r.returncode, r.stderr))

    # ---- MS_HUB, ms-req - and --time ----
    jwt = subprocess.Popen([JWT, "--hub", url], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    procs.append(jwt)
    ok = False
    end = time.monotonic() + 60  # until the service has registered
    while not ok and time.monotonic() < end:
        r = run([REQ, "--timeout-ms", "30000", "jwt-service", "generate_jwt", "-"],
                input='{"user": "carol"}', env={"MS_HUB": url})
        ok = r.returncode == 0
        if not ok:
            time.sleep(0.1)
    check("ms-req reads MS_HUB and the payload from stdin with -", ok
          and json.loads(r.stdout).get("user") == "carol", (r.returncode, r.stderr))
    r = run([REQ, "--hub", url, "--time", "--timeout-ms", "30000", "jwt-service",
             "generate_jwt", '{"user":"dan"}'])
    check("ms-req --time prints the round trip on stderr",
          r.returncode == 0 and "round trip:" in r.stderr and " ms" in r.stderr,
          (r.returncode, r.stderr))
    r = run([REQ, "jwt-service", "generate_jwt", "-"], input="{nope",
            env={"MS_HUB": url})
    check("ms-req - with bad JSON exits 2", r.returncode == 2 and
          "standard input" in r.stderr, (r.returncode, r.stderr))
    stop(jwt)
    check("an example service stops cleanly on SIGTERM", jwt.returncode == 0,
          jwt.returncode)
    r, recs = tail_json(url, "--service", "jwt-service", "-n", "5")
    check("its last record, logged while stopping, reached the hub",
          recs and recs[-1]["message"] == "stopping", recs)

    # ---- ms-tail: several services, globs; fails fast with a reason ----
    for svc in ("api-users", "api-orders", "web"):
        run([LOG, "--hub", url, "--service", svc], input="hello from %s\n" % svc)
    r, recs = tail_json(url, "--service", "api-*", "-n", "50")
    got = sorted(x["service"] for x in recs)
    check("ms-tail --service takes a glob", got == ["api-orders", "api-users"], got)
    r, recs = tail_json(url, "--service", "web,api-users", "-n", "50")
    got = sorted(x["service"] for x in recs)
    check("ms-tail --service takes a comma list", got == ["api-users", "web"], got)
    r, recs = tail_json(url, "--service", "web", "--service", "api-orders")
    got = sorted(x["service"] for x in recs)
    check("ms-tail --service repeats", got == ["api-orders", "web"], got)
    r = run([TAIL, "--hub", dead], timeout=20)
    check("ms-tail without a hub exits 3 and says why",
          r.returncode == 3 and "cannot reach the hub" in r.stderr,
          (r.returncode, r.stderr))
    r = run([TAIL, "--hub", dead, "-f"], timeout=20)
    check("ms-tail -f without a hub fails fast too",
          r.returncode == 3 and "cannot reach the hub" in r.stderr,
          (r.returncode, r.stderr))
    r = run([TAIL, "-n", "1", "--service", "web", "--json"], env={"MS_HUB": url})
    check("ms-tail reads MS_HUB", r.returncode == 0 and "hello from web" in r.stdout,
          (r.returncode, r.stdout, r.stderr))

    # ---- refused token: exit 4 with the reason ----
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write("s3cret\n")
    sport = free_port()
    surl = "ws://127.0.0.1:%d/ws" % sport
    shub = start_hub(sport, os.path.join(tmp, "s.db"), "--secret-file", secret)
    r = run([TAIL, "--hub", surl, "--token", "wrong"], timeout=20)
    check("ms-tail with a refused token exits 4",
          r.returncode == 4 and "refused" in r.stderr, (r.returncode, r.stderr))
    r = run([TAIL, "--hub", surl, "-f"], env={"MS_TOKEN": "wrong"}, timeout=20)
    check("ms-tail -f with a refused MS_TOKEN exits 4",
          r.returncode == 4 and "refused" in r.stderr, (r.returncode, r.stderr))
    r = run([LOG, "--hub", surl, "--service", "x", "--token", "wrong"],
            input="a\n", timeout=20)
    check("ms-log with a refused token exits 4",
          r.returncode == 4 and "refused" in r.stderr, (r.returncode, r.stderr))
    r = run([REQ, "--hub", surl, "x", "y"], env={"MS_TOKEN": "wrong"})
    check("ms-req with a refused token exits 4",
          r.returncode == 4, (r.returncode, r.stderr))
    stop(shub)

    # ---- the hub names the cause when it cannot listen ----
    r = run([HUB, "--listen", "127.0.0.1:%d" % port, "--no-store"], timeout=20)
    check("microstream-hub says the address is already in use",
          r.returncode == 1 and "already in use" in r.stderr.lower(), r.stderr)

    # ---- the hub's configuration file and SIGHUP ----
    conf = os.path.join(tmp, "hub.conf")
    cport, oport = free_port(), free_port()
    conf_db = os.path.join(tmp, "conf.db")

    def write_conf(level, origin, rows):
        with open(conf, "w") as f:
            f.write("# a comment\nlisten = 127.0.0.1:%d\nlog-level = %s\n"
                    "store = %s\nreplace-stale = true\nretention-days = 3\n"
                    "allow-origin = %s\nretention-rows = %d\n"
                    % (cport, level, conf_db, origin, rows))

    def origin_status(origin):
        req = urllib.request.Request(
            "http://127.0.0.1:%d/api/services" % oport,
            headers={"Origin": origin})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    write_conf("warn", "http://old.example", 0)
    errlog = open(os.path.join(tmp, "hub-conf.err"), "w+")
    ch = subprocess.Popen([HUB, "--config", conf, "--listen",
                           "127.0.0.1:%d" % oport], stdout=subprocess.PIPE,
                          stderr=errlog, text=True)
    procs.append(ch)
    line = ch.stdout.readline()
    check("the command line wins over the configuration file",
          line.strip() == "listening on 127.0.0.1:%d" % oport, line)
    st = (origin_status("http://old.example"),
          origin_status("http://new.example"))
    check("the file's allowed origin is taken, another is refused",
          st == (200, 403), st)
    write_conf("debug", "http://new.example", 5)
    ch.send_signal(signal.SIGHUP)
    ok = wait_for(lambda: "read again; log level debug" in
                  open(errlog.name).read())
    check("SIGHUP reads the file again and takes the new log level", ok,
          open(errlog.name).read())
    check("and reports the new access lists and retention",
          "1 allowed origin(s), 0 allowed host(s), retention 3 day(s) "
          "5 row(s)" in open(errlog.name).read(), open(errlog.name).read())
    st = (origin_status("http://new.example"),
          origin_status("http://old.example"))
    check("after SIGHUP the new origin is allowed and the removed one "
          "refused with 403", st == (200, 403), st)
    run([LOG, "--hub", "ws://127.0.0.1:%d/ws" % oport, "--service", "ret"],
        input="".join("r-%d\n" % i for i in range(1, 11)))

    def stored():
        con = sqlite3.connect(conf_db, timeout=10)
        try:
            return [m for (m,) in con.execute(
                "SELECT message FROM records WHERE service='ret' "
                "ORDER BY seq")]
        finally:
            con.close()
    ok = wait_for(lambda: stored() == ["r-%d" % i for i in range(6, 11)],
                  timeout=30)
    check("after SIGHUP the store keeps only the new retention-rows",
          ok, stored())
    with open(conf, "a") as f:
        f.write("no-such-option = 1\n")
    ch.send_signal(signal.SIGHUP)
    ok = wait_for(lambda: "not reloaded" in open(errlog.name).read())
    check("a file that does not parse on SIGHUP changes nothing",
          ok and ch.poll() is None, open(errlog.name).read())
    stop(ch)
    check("and the hub still stops cleanly", ch.returncode == 0, ch.returncode)
    r = run([HUB, "--config", conf], timeout=20)
    check("an unknown key stops the hub with the file and line",
          r.returncode == 2 and "hub.conf:9: unknown key 'no-such-option'"
          in r.stderr, (r.returncode, r.stderr))
    with open(conf, "w") as f:
        f.write("heartbeat-ms = soon\n")
    r = run([HUB, "--config", conf], timeout=20)
    check("a bad number in the file is a usage error",
          r.returncode == 2 and "--heartbeat-ms" in r.stderr, r.stderr)
    r = run([HUB, "--heartbeat-ms", "-5"], timeout=20)
    check("a bad number on the command line is a usage error",
          r.returncode == 2 and "whole number" in r.stderr, r.stderr)

    # ---- what the 200000 lines left in the store ----
    stop(hub)
    con = sqlite3.connect(db)
    rows = [m for (m,) in con.execute(
        "SELECT message FROM records WHERE service='flood' ORDER BY seq")]
    cmd_rows = con.execute(
        "SELECT count(*) FROM records WHERE service='flood-cmd'").fetchone()[0]
    con.close()
    check("all 200000 lines are stored, in order",
          rows == [str(i) for i in range(1, n + 1)],
          (len(rows), rows[:3], rows[-3:]))
    check("all 50000 lines of the command are stored", cmd_rows == 50000, cmd_rows)

    # ---- history from the store after a restart: -n, --since, --until ----
    hub = start_hub(port, db)
    run([LOG, "--hub", url, "--service", "hist"],
        input="".join("old-%d\n" % i for i in range(1, 6)))
    stop(hub)
    hub = start_hub(port, db)  # a new hub run: its memory is empty
    r, recs = tail_json(url, "--service", "hist", "-n", "3")
    check("after a restart ms-tail -n shows the stored history",
          r.returncode == 0 and
          [x["message"] for x in recs] == ["old-3", "old-4", "old-5"],
          (r.returncode, recs, r.stderr))
    r, recs = tail_json(url, "--service", "hist", "--since", "1h")
    check("--since 1h reads the store",
          [x["message"] for x in recs] == ["old-%d" % i for i in range(1, 6)],
          recs)
    r, all5 = tail_json(url, "--service", "hist", "--since", "1h")
    cut = all5[1]["ts_us"] if len(all5) == 5 else 0
    r, recs = tail_json(url, "--service", "hist", "--until", str(cut))
    check("--until bounds it",
          [x["message"] for x in recs] == ["old-1", "old-2"], recs)
    r, recs = tail_json(url, "--service", "hist", "--since", "1d", "-n", "2")
    check("--since with -n takes the newest N",
          [x["message"] for x in recs] == ["old-4", "old-5"], recs)
    r, recs = tail_json(url, "--service", "hist", "--since", "1h",
                        "--contains", "old-3")
    check("--contains narrows the stored history",
          [x["message"] for x in recs] == ["old-3"], recs)
    r = run([TAIL, "--hub", url, "--until", "1h", "-f"])
    check("--until with -f is a usage error", r.returncode == 2, r.returncode)
    follower = subprocess.Popen([TAIL, "--hub", url, "--json", "-f", "-n", "3",
                                 "--service", "hist"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    procs.append(follower)
    lines = []
    os.set_blocking(follower.stdout.fileno(), False)

    def got(n):
        try:
            chunk = follower.stdout.read()
        except (TypeError, BlockingIOError):
            chunk = None
        if chunk:
            lines.extend(json.loads(x)["message"] for x in chunk.splitlines()
                         if x.startswith("{"))
        return len(lines) >= n
    wait_for(lambda: got(3))
    run([LOG, "--hub", url, "--service", "hist"], input="new-1\n")
    wait_for(lambda: got(4))
    time.sleep(0.5)
    got(99)
    check("-f: stored history, then live, nothing twice",
          lines == ["old-3", "old-4", "old-5", "new-1"], lines)
    follower.kill()
    follower.wait()
    stop(hub)


if __name__ == "__main__":
    finish(main)
