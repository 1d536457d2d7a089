#!/usr/bin/python3
"""Benchmark microstream-hub against nats-server, a Node MicroStream-style
hub (socket.io 4) and a plain TCP relay (the floor), in one run. The
Socket.IO path: microstream-hub's /socket.io/ endpoint ("socketio") against
the Node hub in its MicroStream mode ("node-ms"), both driven by the same
Node client speaking what MicroStream Node services speak.

Workload, identical for every system: service "echo" answers event "echo"
with its data; a requester sends 64-byte payloads with C=1 and C=64 requests
in flight (each response sends the next). Idle phases connect N registered,
heartbeating services that do nothing. See the README's Benchmarks section.

The C=1 and C=64 phases alternate the systems run by run (A, B, C, A, B,
C, ...: --runs alternations) with every hub up for the whole phase, so the
machine's swings hit all of them; each figure is reported as median and
best with its min-max, and ratios to a peer are the median of the ratios
within each alternation. The idle64 phase alternates the same way between
a hub with the idle services connected and a second hub of the same system
without them. A system that cannot run (nats-server missing, a
build directory configured before libnats-dev) is named in the output.

  bench/run.py                      the default run (about 20 minutes)
  bench/run.py --quick              a smoke run (under a minute)
  bench/run.py --system nats --phase c64
"""
import argparse
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

IDLE_SETTLE_S = 5.0

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMS = ["microstream", "nats", "node", "relay", "socketio", "node-ms",
           "ms-cluster-same", "ms-cluster", "nats-cluster", "ms-tls", "nats-tls"]
# TLS systems: microstream-hub with a tls:// listener and nats-server with
# --tls, the same certificate (a test CA made with certtool), clients
# verifying chain and host name.
TLS_SYSTEMS = ("ms-tls", "nats-tls")
# Cluster systems: two microstream hubs on one redis-server (requester and
# echo service on the same hub, or on different hubs), and two nats-server
# nodes in a cluster (requester on one, responder on the other).
CLUSTER_SYSTEMS = ("ms-cluster-same", "ms-cluster", "nats-cluster")
PHASES = ["c1", "c64", "idle", "idle64", "callgrind"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on port %d" % port)


def proc_status(pid, key):
    """A /proc/<pid>/status figure in KiB (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def read_line(p, timeout):
    """One line of a child's stdout, or raise after timeout."""
    r, _, _ = select.select([p.stdout], [], [], timeout)
    if not r:
        raise RuntimeError("timed out waiting for %s" % p.args[0])
    line = p.stdout.readline()
    if not line:
        raise RuntimeError("%s exited (%s)" % (p.args[0], p.poll()))
    return line.decode().strip()


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


class System:
    """A hub (or relay) plus its echo service; subclasses say how to start
    them. Every driver takes the same options and prints one JSON line."""

    name = ""
    idle_per_proc = 1 << 30
    extra = []  # driver options after the mode's own

    def __init__(self, args):
        self.args = args
        self.hub = None
        self.echo = None
        self.port = 0
        self.hub_pid = 0

    def available(self):
        return not self.missing()

    def missing(self):
        """Why this system cannot run here, or None."""
        return None

    def driver(self):
        raise NotImplementedError

    def hub_cmd(self, port):
        raise NotImplementedError

    def url(self):
        raise NotImplementedError

    def start(self, wrap=None, timeout=30.0):
        self.port = free_port()
        cmd = (wrap or []) + self.hub_cmd(self.port)
        self.hub = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout)
        self.hub_pid = self.hub.pid
        self.start_echo(wrap)

    def start_echo(self, wrap=None):
        self.echo = subprocess.Popen(self.driver() + ["echo", "--url", self.url()] + self.extra,
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL)
        time.sleep(0.5 if not wrap else 3.0)  # registered before the first request

    def stop(self):
        if self.echo:
            self.echo.stdin.close()
            try:
                self.echo.wait(10)
            except subprocess.TimeoutExpired:
                self.echo.kill()
                self.echo.wait()
            self.echo = None
        if self.hub:
            self.hub.send_signal(signal.SIGTERM)
            if self.hub_pid and self.hub_pid != self.hub.pid:
                try:
                    os.kill(self.hub_pid, signal.SIGTERM)
                except OSError:
                    pass
            try:
                self.hub.wait(60)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
            self.hub = None

    def req(self, conc, warmup, seconds, count=0):
        cmd = self.driver() + ["req", "--url", self.url(), "--conc", str(conc),
                               "--warmup", str(warmup), "--seconds", str(seconds),
                               "--pid", str(self.hub_pid)] + self.extra
        if count:
            cmd += ["--count", str(count)]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True,
                             timeout=seconds + warmup + 600).stdout.decode()
        return json.loads(out.strip().splitlines()[-1])

    def idle_start(self, n):
        """Connect n idle services; returns the driver processes."""
        procs = []
        per = self.idle_per_proc
        for k in range(0, n, per):
            m = min(per, n - k)
            procs.append(subprocess.Popen(
                self.driver() + ["idle", "--url", self.idle_url(), "--n", str(m),
                                 "--name", "idle%d" % k],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for p in procs:
            line = read_line(p, 300)
            if not line.startswith("ready"):
                raise RuntimeError("idle driver: " + line)
        return procs

    def idle_url(self):
        return self.url()

    @staticmethod
    def idle_stop(procs):
        for p in procs:
            p.stdin.close()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Microstream(System):
    name = "microstream"

    def driver(self):
        return [os.path.join(self.args.build_dir, "bench", "ms-bench")]

    def hub_cmd(self, port):
        return [os.path.join(self.args.build_dir, "tools", "microstream-hub"),
                "--listen", "127.0.0.1:%d" % port, "--no-store",
                "--log-level", "warn", "--max-pending", "4096"]

    def url(self):
        return "ws://127.0.0.1:%d/ws" % self.port


class Nats(System):
    name = "nats"

    def missing(self):
        if not which("nats-server"):
            return "nats-server is not installed (bash scripts/deps.sh bench)"
        if not os.path.exists(os.path.join(self.args.build_dir, "bench", "nats-bench")):
            return ("%s has no bench/nats-bench (libnats-dev missing when it was "
                    "configured?)" % self.args.build_dir)
        return None

    def driver(self):
        return [os.path.join(self.args.build_dir, "bench", "nats-bench")]

    def hub_cmd(self, port):
        return [which("nats-server"), "-a", "127.0.0.1", "-p", str(port)]

    def url(self):
        return "nats://127.0.0.1:%d" % self.port


def tls_certs(args):
    """The test CA and server certificate (test/tls/make_certs.py), made once
    per run; None without certtool."""
    d = os.path.join(args.tmp, "certs")
    if not os.path.exists(os.path.join(d, "server.pem")):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "test", "tls", "make_certs.py"), d],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            return None
    os.environ["MS_BENCH_CA"] = os.path.join(d, "ca.pem")
    return d


class MicrostreamTls(Microstream):
    name = "ms-tls"

    def missing(self):
        if not tls_certs(self.args):
            return "certtool is not installed (gnutls-bin): no test certificate"
        return None

    def hub_cmd(self, port):
        d = tls_certs(self.args)
        return [os.path.join(self.args.build_dir, "tools", "microstream-hub"),
                "--listen", "tls://127.0.0.1:%d" % port, "--no-store",
                "--tls-cert", os.path.join(d, "server.pem"),
                "--tls-key", os.path.join(d, "server.key"),
                "--log-level", "warn", "--max-pending", "4096",
                # The idle phase opens thousands of TLS streams from one
                # address: more than the default per-address limit of
                # streams still in their handshake.
                "--max-unauth-per-peer", "0"]

    def url(self):
        return "wss://127.0.0.1:%d/ws" % self.port


class NatsTls(Nats):
    name = "nats-tls"

    def missing(self):
        return Nats.missing(self) or MicrostreamTls.missing(self)

    def hub_cmd(self, port):
        d = tls_certs(self.args)
        return [which("nats-server"), "-a", "127.0.0.1", "-p", str(port), "--tls",
                "--tlscert", os.path.join(d, "server.pem"),
                "--tlskey", os.path.join(d, "server.key")]

    def url(self):
        return "tls://127.0.0.1:%d" % self.port


class Node(System):
    name = "node"
    idle_per_proc = 2500

    def missing(self):
        if not which("node"):
            return "node is not installed"
        if not os.path.isdir(os.path.join(ROOT, "node_modules", "socket.io")):
            return "node_modules/socket.io is missing (npm ci)"
        return None

    def driver(self):
        return [which("node"), os.path.join(ROOT, "bench", "node", "load.js")]

    def hub_cmd(self, port):
        return [which("node"), os.path.join(ROOT, "bench", "node", "hub.js"),
                "--port", str(port)]

    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, wrap=None, timeout=30.0):
        # The hub prints its port and its own pid (node may be a launcher).
        self.hub = subprocess.Popen(self.hub_cmd(0), stdout=subprocess.PIPE)
        words = read_line(self.hub, timeout).split()
        self.port, self.hub_pid = int(words[1]), int(words[3])
        self.start_echo()


class SocketIO(Microstream):
    """microstream-hub's Socket.IO endpoint, driven by the Node client."""
    name = "socketio"
    extra = ["--proto", "ms"]

    def missing(self):
        return Node.missing(self)

    def driver(self):
        return Node.driver(self)

    def url(self):
        return "http://127.0.0.1:%d" % self.port


class NodeMS(Node):
    """The Node hub in its MicroStream mode, with the same Node client."""
    name = "node-ms"
    extra = ["--proto", "ms"]


class Relay(System):
    name = "relay"

    def driver(self):
        return [os.path.join(self.args.build_dir, "bench", "relay-bench")]

    def start(self, wrap=None, timeout=30.0):
        self.hub = subprocess.Popen(self.driver() + ["relay", "--url", "0"],
                                    stdout=subprocess.PIPE)
        self.port = int(read_line(self.hub, 10).split()[1])
        self.hub_pid = self.hub.pid
        self.echo = subprocess.Popen(self.driver() + ["echo", "--url", str(self.port)],
                                     stdin=subprocess.PIPE)
        time.sleep(0.2)

    def url(self):
        return str(self.port)


def redis_metric(port, name):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
    return 0.0


def stop_cluster(sysobj, servers):
    """Stop a cluster system's echo service, then its servers (SIGTERM)."""
    if sysobj.echo:
        sysobj.echo.stdin.close()
        try:
            sysobj.echo.wait(10)
        except subprocess.TimeoutExpired:
            sysobj.echo.kill()
        sysobj.echo = None
    for p in servers:
        p.send_signal(signal.SIGTERM)
    for p in servers:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    sysobj.hub = None


class MsCluster(Microstream):
    """Two clustered hubs on a redis-server of their own; the echo service
    on hub B, the requester on hub A (cross-hub)."""
    name = "ms-cluster"
    cross = True

    def missing(self):
        if not which("redis-server"):
            return "redis-server is not installed (bash scripts/deps.sh test)"
        return None

    def start(self, wrap=None, timeout=30.0):
        self.rport = free_port()
        self.redis = subprocess.Popen(
            [which("redis-server"), "--port", str(self.rport), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.rport)
        self.ports = []
        self.hubs = []
        for _ in range(2):
            port = free_port()
            self.hubs.append(subprocess.Popen(
                self.hub_cmd(port) + ["--cluster", "redis://127.0.0.1:%d" % self.rport],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            wait_port(port, timeout)
            self.ports.append(port)
        end = time.time() + 15
        while time.time() < end and not all(
                redis_metric(p, "microstream_cluster_up") == 1 for p in self.ports):
            time.sleep(0.1)
        self.hub = self.hubs[0]
        self.hub_pid = self.hubs[0].pid  # CPU figures: the requester's hub
        self.port = self.ports[1 if self.cross else 0]
        self.start_echo(wrap)
        self.port = self.ports[0]
        time.sleep(0.5)  # the other hub has heard of "echo"

    def req(self, conc, warmup, seconds, count=0):
        before = sum(redis_metric(p, "microstream_cluster_redis_commands_total")
                     for p in self.ports)
        res = System.req(self, conc, warmup, seconds, count)
        after = sum(redis_metric(p, "microstream_cluster_redis_commands_total")
                    for p in self.ports)
        # Warm-up requests count too: divide by everything that was sent.
        total = res.get("requests", 0) + res.get("warmup_requests", 0)
        res["redis_cmds"] = after - before
        res["redis_cmds_per_req"] = (after - before) / total if total else None
        return res

    def stop(self):
        stop_cluster(self, self.hubs)
        self.hubs = []
        self.redis.kill()
        self.redis.wait()


class MsClusterSame(MsCluster):
    """The same two clustered hubs, requester and echo on hub A: what
    --cluster costs a same-hub request."""
    name = "ms-cluster-same"
    cross = False


class NatsCluster(Nats):
    """Two nats-server nodes in a cluster; the responder on node B, the
    requester on node A."""
    name = "nats-cluster"

    def start(self, wrap=None, timeout=30.0):
        ports = [free_port(), free_port()]
        cports = [free_port(), free_port()]
        self.nodes = []
        for i in range(2):
            self.nodes.append(subprocess.Popen(
                [which("nats-server"), "-a", "127.0.0.1", "-p", str(ports[i]),
                 "--cluster_name", "bench",
                 "--cluster", "nats://127.0.0.1:%d" % cports[i],
                 "--routes", "nats://127.0.0.1:%d" % cports[1 - i]],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            wait_port(ports[i], timeout)
        time.sleep(1.0)  # the route between the nodes is up
        self.hub = self.nodes[0]
        self.hub_pid = self.nodes[0].pid
        self.port = ports[1]
        self.start_echo(wrap)
        self.port = ports[0]
        time.sleep(0.5)  # the subscription has reached node A

    def stop(self):
        stop_cluster(self, self.nodes)


def which(prog):
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/usr/bin"]:
        p = os.path.join(d, prog)
        if os.access(p, os.X_OK):
            return p
    return None


def run_cpu(r):
    """Hub CPU microseconds per request of one run, or None."""
    if r["requests"] and r.get("hub_cpu_s", -1) >= 0:
        return r["hub_cpu_s"] * 1e6 / r["requests"]
    return None


def summarize(runs):
    """Median and best of each figure over the runs, with min-max. The
    historical keys (rps, p50_us, p99_us, cpu_us_per_req) are the medians."""
    def spread(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return None, None, None
        return statistics.median(vals), min(vals), max(vals)
    rps, rps_min, rps_max = spread(r["rps"] for r in runs)
    p50, p50_min, p50_max = spread(r["p50_us"] for r in runs)
    p99, p99_min, p99_max = spread(r["p99_us"] for r in runs)
    cpu, cpu_min, cpu_max = spread(run_cpu(r) for r in runs)
    return {
        "rps": rps, "rps_min": rps_min, "rps_max": rps_max, "rps_best": rps_max,
        "p50_us": p50, "p50_min": p50_min, "p50_max": p50_max, "p50_best": p50_min,
        "p99_us": p99, "p99_min": p99_min, "p99_max": p99_max, "p99_best": p99_min,
        "cpu_us_per_req": cpu, "cpu_min": cpu_min, "cpu_max": cpu_max,
        "cpu_best": cpu_min,
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
        # ms-cluster: Redis commands per cross-hub request (median).
        "redis_cmds_per_req": spread(r.get("redis_cmds_per_req") for r in runs)[0],
    }


def run_alternated(objs, args, phases):
    """The C=1 and C=64 phases with the systems alternated run by run (A,
    B, C, A, B, C, ...), every hub up for the whole phase, so that the
    machine's swings hit every system alike and ratios can be taken run
    by run (paired)."""
    res = {s.name: {} for s in objs}
    started = []
    try:
        for s in objs:
            s.start()
            started.append(s)
        for ph, conc in (("c1", 1), ("c64", 64)):
            if ph not in phases:
                continue
            runs = {s.name: [] for s in objs}
            for i in range(args.runs):
                for s in objs:
                    r = s.req(conc, args.warmup, args.seconds)
                    log("  alternation %d/%d %s %s: %.0f req/s p50 %.1f us p99 %.1f us" %
                        (i + 1, args.runs, ph, s.name, r["rps"], r["p50_us"], r["p99_us"]))
                    runs[s.name].append(r)
            for s in objs:
                res[s.name][ph] = summarize(runs[s.name])
        for s in objs:
            res[s.name]["rss_kib"] = proc_status(s.hub_pid, "VmRSS")
            res[s.name]["hwm_kib"] = proc_status(s.hub_pid, "VmHWM")
    finally:
        for s in started:
            s.stop()
    return res


def paired_ratio(a, b, key):
    """Median over the alternations of a's figure / b's figure, each pair
    taken from the same alternation; None without pairs."""
    ra, rb = a.get("runs", []), b.get("runs", [])
    vals = []
    for x, y in zip(ra, rb):
        vx = run_cpu(x) if key == "cpu" else x[key]
        vy = run_cpu(y) if key == "cpu" else y[key]
        if vx is not None and vy:
            vals.append(vx / vy)
    return statistics.median(vals) if vals else None


def callgrind(sysobj, args):
    """Instructions the hub executes per routed request (C=64)."""
    out = tempfile.mktemp(prefix="callgrind.", dir=args.tmp)
    wrap = [which("valgrind"), "--tool=callgrind", "--callgrind-out-file=" + out]
    sysobj.start(wrap=wrap, timeout=120)
    try:
        res = sysobj.req(64, 0, 0, count=args.callgrind_requests)
    finally:
        sysobj.stop()
    total = None
    with open(out) as f:
        for line in f:
            m = re.match(r"(summary|totals):\s+(\d+)", line)
            if m:
                total = int(m.group(2))
    os.unlink(out)
    return {"requests": res["requests"], "instructions": total,
            "instr_per_req": total / res["requests"] if total else None}


def run_idle64(sysobj, n, args):
    """C=64 with n idle services on sysobj's hub against C=64 on a second
    hub of the same system with none, the two alternated run by run (plain,
    idle, plain, idle, ...: --runs alternations) with both hubs up for the
    whole phase. The idle services' drivers run throughout, so the machine
    carries the same load for both: what differs is the hub's n idle
    connections. The ratio is the median of the ratios within each
    alternation, with min-max."""
    plain = type(sysobj)(args)
    plain.start()
    try:
        runs = {"plain": [], "idle": []}
        for i in range(args.runs):
            for key, s in (("plain", plain), ("idle", sysobj)):
                r = s.req(64, args.warmup, args.seconds)
                log("  alternation %d/%d c64 %s, %s: %.0f req/s p50 %.1f us" %
                    (i + 1, args.runs, sysobj.name,
                     "%d idle" % n if key == "idle" else "plain hub", r["rps"], r["p50_us"]))
                runs[key].append(r)
    finally:
        plain.stop()
    res = dict(summarize(runs["idle"]), n=n, plain=summarize(runs["plain"]))
    ratios = [x["rps"] / y["rps"] for x, y in zip(runs["idle"], runs["plain"]) if y["rps"]]
    if ratios:
        res["rps_ratio"] = statistics.median(ratios)
        res["rps_ratio_min"], res["rps_ratio_max"] = min(ratios), max(ratios)
    return res


def run_system(sysobj, args, phases):
    """The phases that are not alternated between systems (idle, idle64,
    callgrind); idle64 alternates two hubs of the one system."""
    r = {}
    # Idle phases: the plain hubs, and microstream-hub over TLS (the idle
    # memory of a TLS session; nats-bench's idle mode is plain text only).
    if (sysobj.name not in ("relay", "socketio", "node-ms", "nats-tls") + CLUSTER_SYSTEMS
            and ("idle" in phases or "idle64" in phases)):
        r["idle"] = {}
        # idle64 alone: only the largest count it runs with.
        for n in args.idle if "idle" in phases else [max(args.idle)]:
            sysobj.start()
            try:
                before = proc_status(sysobj.hub_pid, "VmRSS")
                t0 = time.time()
                procs = sysobj.idle_start(n)
                connect_s = time.time() - t0
                # Steady state: idle services heartbeat; give every system
                # the same few seconds to settle after the connection storm.
                time.sleep(IDLE_SETTLE_S)
                after = proc_status(sysobj.hub_pid, "VmRSS")
                try:
                    entry = {"n": n, "rss_before_kib": before, "rss_after_kib": after,
                             "kib_per_conn": (after - before) / n,
                             "connect_s": connect_s}
                    log("  %s idle %d: %.2f KiB per connection" %
                        (sysobj.name, n, entry["kib_per_conn"]))
                    r["idle"][str(n)] = entry
                    if "idle64" in phases and n == max(args.idle):
                        r["idle64"] = run_idle64(sysobj, n, args)
                        log("  %s c64 with %d idle: %.0f req/s, %s the plain hub's "
                            "(median of %d alternations)" %
                            (sysobj.name, n, r["idle64"]["rps"],
                             fmt(r["idle64"].get("rps_ratio"), "%.3fx"), args.runs))
                finally:
                    System.idle_stop(procs)
            finally:
                sysobj.stop()
    if "callgrind" in phases and sysobj.name == "nats-cluster":
        pass
    elif "callgrind" in phases and sysobj.name == "nats":
        # Valgrind aborts on the Go runtime (checked with valgrind 3.19 and
        # nats-server 2.9): no instruction count for nats-server.
        r["callgrind"] = {"error": "valgrind cannot run nats-server (Go runtime)"}
    if "callgrind" in phases and which("valgrind") and sysobj.name in ("microstream", "ms-tls"):
        try:
            r["callgrind"] = callgrind(sysobj, args)
            log("  %s callgrind: %s instructions per request" %
                (sysobj.name, r["callgrind"]["instr_per_req"]))
        except Exception as e:  # nats-server under valgrind is best effort
            log("  %s callgrind failed: %s" % (sysobj.name, e))
            r["callgrind"] = {"error": str(e)}
    return r


# ---- report -----------------------------------------------------------------

def fmt(v, f="%.1f"):
    return "-" if v is None else f % v


def figures(r):
    """The comparable figures of one system: name -> (value, lower is better)."""
    f = {}
    for ph in ("c1", "c64"):
        if ph in r:
            f[ph + " req/s"] = (r[ph]["rps"], False)
            f[ph + " p50 us"] = (r[ph]["p50_us"], True)
            f[ph + " p99 us"] = (r[ph]["p99_us"], True)
            f[ph + " cpu us/req"] = (r[ph]["cpu_us_per_req"], True)
    if "rss_kib" in r:
        f["hub RSS MiB"] = (r["rss_kib"] / 1024, True)
    for n, e in sorted(r.get("idle", {}).items(), key=lambda kv: int(kv[0])):
        f["KiB/idle conn @%s" % n] = (e["kib_per_conn"], True)
    if "idle64" in r:
        f["c64 req/s @%d idle" % r["idle64"]["n"]] = (r["idle64"]["rps"], False)
    cg = r.get("callgrind", {})
    if cg.get("instr_per_req"):
        f["instr/req (callgrind)"] = (cg["instr_per_req"], True)
    return f


def table(results):
    lines = []
    systems = [s for s in SYSTEMS if s in results]
    lines.append("| phase | system | req/s median (min-max) | req/s best | "
                 "p50 us median (min-max) | p50 us best | p99 us median | "
                 "hub CPU us/req median (min-max) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for ph in ("c1", "c64", "idle64"):
        for s in systems:
            x = results[s].get(ph)
            if not x:
                continue
            label = ph if ph != "idle64" else "c64 + %d idle" % x["n"]
            rows = [(label, x)]
            if ph == "idle64":
                rows.append(("c64, its plain hub", x["plain"]))
            for label, x in rows:
                lines.append("| %s | %s | %s (%s-%s) | %s | %s (%s-%s) | %s | %s | %s (%s-%s) |" % (
                    label, s, fmt(x["rps"], "%.0f"), fmt(x["rps_min"], "%.0f"),
                    fmt(x["rps_max"], "%.0f"), fmt(x.get("rps_best"), "%.0f"),
                    fmt(x["p50_us"]), fmt(x.get("p50_min")), fmt(x.get("p50_max")),
                    fmt(x.get("p50_best")), fmt(x["p99_us"]),
                    fmt(x["cpu_us_per_req"], "%.2f"), fmt(x.get("cpu_min"), "%.2f"),
                    fmt(x.get("cpu_max"), "%.2f")))
    i64 = [(s, results[s]["idle64"]) for s in systems
           if results[s].get("idle64", {}).get("rps_ratio") is not None]
    if i64:
        lines.append("")
        lines.append("| system | c64 req/s with %d idle / on its plain hub (median of the "
                     "ratios within each alternation, min-max) |" % i64[0][1]["n"])
        lines.append("|---|---|")
        for s, x in i64:
            lines.append("| %s | %.3f (%.3f-%.3f) |" % (
                s, x["rps_ratio"], x["rps_ratio_min"], x["rps_ratio_max"]))
    lines.append("")
    lines.append("| system | hub RSS after run MiB | " + " | ".join(
        "KiB per idle conn @%s" % n for n in ARGS_IDLE) + " | hub instr/req (callgrind) |")
    lines.append("|---|---|" + "---|" * len(ARGS_IDLE) + "---|")
    for s in systems:
        r = results[s]
        idle = r.get("idle", {})
        cg = r.get("callgrind", {})
        lines.append("| %s | %s | %s | %s |" % (
            s, fmt(r["rss_kib"] / 1024 if "rss_kib" in r else None),
            " | ".join(fmt(idle[str(n)]["kib_per_conn"], "%.2f") if str(n) in idle else "-"
                       for n in ARGS_IDLE),
            fmt(cg.get("instr_per_req"), "%.0f")))
    ms = results.get("microstream")
    if ms:
        mf = figures(ms)
        peers = [s for s in systems if s not in ("microstream", "socketio", "node-ms")]
        if peers:
            lines.append("")
            lines.append("| microstream / peer (c1, c64: median of the ratios "
                         "within each alternation) | " + " | ".join(peers) + " |")
            lines.append("|---|" + "---|" * len(peers))
            keys = {"req/s": "rps", "p50 us": "p50_us", "p99 us": "p99_us",
                    "cpu us/req": "cpu"}
            for k, (v, _) in mf.items():
                cells = []
                for p in peers:
                    m = re.match(r"(c1|c64) (.*)$", k)
                    if m and m.group(1) in results[p] and m.group(2) in keys:
                        pr = paired_ratio(ms[m.group(1)], results[p][m.group(1)],
                                          keys[m.group(2)])
                        cells.append(fmt(pr, "%.2f"))
                        continue
                    pv = figures(results[p]).get(k, (None, True))[0]
                    cells.append(fmt(v / pv, "%.2f") if v is not None and pv else "-")
                if any(c != "-" for c in cells):
                    lines.append("| %s | %s |" % (k, " | ".join(cells)))
    return "\n".join(lines)


def goals(results):
    ms, nats, relay = (results.get(k, {}) for k in ("microstream", "nats", "relay"))
    g = []

    def add(name, ok, detail):
        g.append({"goal": name, "met": ok, "detail": detail})

    c64 = ms.get("c64", {})
    if c64.get("cpu_us_per_req") is not None:
        add("hub CPU per request at C=64 <= 1.5 us (median)",
            c64["cpu_us_per_req"] <= 1.5, "%.2f us" % c64["cpu_us_per_req"])
    if c64 and nats.get("c64"):
        ratio = paired_ratio(c64, nats["c64"], "rps")
        add("requests/s at C=64 >= 3x nats-server (paired median)", ratio >= 3.0,
            "%.2fx" % ratio)
    if ms.get("c1") and relay.get("c1"):
        ratio = paired_ratio(ms["c1"], relay["c1"], "p50_us")
        add("p50 at C=1 within 1.3x the relay floor (paired median)", ratio <= 1.3,
            "%.2fx; best %.1f us vs %.1f us" % (ratio, ms["c1"]["p50_best"],
                                                relay["c1"]["p50_best"]))
    cg = ms.get("callgrind", {})
    if cg.get("instr_per_req"):
        add("hub instructions per routed request at C=64 <= 5000 (callgrind)",
            cg["instr_per_req"] <= 5000, "%.0f" % cg["instr_per_req"])
    idle = ms.get("idle", {}).get("10000")
    if idle:
        add("RSS per idle connection at 10000 <= 1.5 KiB", idle["kib_per_conn"] <= 1.5,
            "%.2f KiB" % idle["kib_per_conn"])
    sio, nms = (results.get(k, {}).get("c64", {}) for k in ("socketio", "node-ms"))
    if sio.get("cpu_us_per_req") and nms.get("cpu_us_per_req"):
        ratio = sio["cpu_us_per_req"] / nms["cpu_us_per_req"]
        add("Socket.IO path: hub CPU per request at C=64 <= 1/5 of the Node hub's",
            ratio <= 0.2, "%.2f us vs %.2f us (%.2fx)" % (
                sio["cpu_us_per_req"], nms["cpu_us_per_req"], ratio))
    if sio and nms:
        ratio = sio["rps"] / nms["rps"]
        add("Socket.IO path: requests/s at C=64 >= the Node hub's (same Node client)",
            ratio >= 1.0, "%.2fx" % ratio)
    i64 = ms.get("idle64", {})
    if i64.get("rps_ratio") is not None:
        add("C=64 with %d idle within 10%% of without (paired median)" % i64["n"],
            i64["rps_ratio"] >= 0.90, "%+.1f%% (%+.1f%% to %+.1f%%)" % (
                100 * (i64["rps_ratio"] - 1), 100 * (i64["rps_ratio_min"] - 1),
                100 * (i64["rps_ratio_max"] - 1)))
    tls, ntls = (results.get(k, {}) for k in ("ms-tls", "nats-tls"))
    if tls.get("c64") and ntls.get("c64"):
        ratio = paired_ratio(tls["c64"], ntls["c64"], "rps")
        add("TLS: requests/s at C=64 >= 3x nats-server over TLS (paired median)",
            ratio >= 3.0, "%.2fx" % ratio)
    if tls.get("c64") and c64:
        ratio = paired_ratio(tls["c64"], c64, "cpu")
        if ratio is not None:
            add("TLS: hub CPU per request at C=64 <= 2x plaintext (paired median)",
                ratio <= 2.0, "%.2fx; %.2f us vs %.2f us" % (
                    ratio, tls["c64"]["cpu_us_per_req"], c64["cpu_us_per_req"]))
    tcg, mcg = tls.get("callgrind", {}), ms.get("callgrind", {})
    if tcg.get("instr_per_req") and mcg.get("instr_per_req"):
        add("TLS: hub instructions per request at C=64 vs plaintext (callgrind, info)", True,
            "%.0f vs %.0f (%.2fx)" % (tcg["instr_per_req"], mcg["instr_per_req"],
                                      tcg["instr_per_req"] / mcg["instr_per_req"]))
    for n, e in sorted(tls.get("idle", {}).items(), key=lambda kv: int(kv[0])):
        plain = ms.get("idle", {}).get(n)
        add("TLS: RSS per idle TLS connection at %s (info)" % n, True,
            "%.2f KiB%s" % (e["kib_per_conn"], "; plaintext %.2f KiB" % plain["kib_per_conn"]
                            if plain else ""))
    mc, mcs, nc = (results.get(k, {}).get("c64", {})
                   for k in ("ms-cluster", "ms-cluster-same", "nats-cluster"))
    if mc and nc:
        ratio = paired_ratio(mc, nc, "rps") or mc["rps"] / nc["rps"]
        add("cluster: cross-hub requests/s at C=64 >= 2x a two-node nats-server cluster "
            "(paired median)", ratio >= 2.0, "%.2fx" % ratio)
    if mc.get("redis_cmds_per_req") is not None:
        add("cluster: Redis commands per cross-hub request at C=64 well under 1",
            mc["redis_cmds_per_req"] < 0.5, "%.3f" % mc["redis_cmds_per_req"])
    if mcs and c64:
        drop = 1 - (paired_ratio(mcs, c64, "rps") or mcs["rps"] / c64["rps"])
        add("cluster: same-hub C=64 with --cluster within noise (10%) of without "
            "(paired median)", drop <= 0.10, "%+.1f%%" % (-100 * drop))
    if mc and mcs:
        add("cluster: cross-hub p50 added at C=64 (info)", True,
            "%.0f us vs %.0f us same-hub" % (mc["p50_us"], mcs["p50_us"]))
    return g


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = proc_meminfo()
    vers = {}
    for k, cmd in (("nats-server", ["nats-server", "--version"]),
                   ("node", ["node", "--version"])):
        try:
            vers[k] = subprocess.run(cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT).stdout.decode().strip()
        except OSError:
            pass
    try:
        with open(os.path.join(ROOT, "node_modules", "socket.io", "package.json")) as f:
            vers["socket.io"] = json.load(f)["version"]
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "mem_mib": mem,
            "kernel": platform.release(), "versions": vers}


def proc_meminfo():
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) // 1024
    except OSError:
        return None


ARGS_IDLE = []


def has_libnats():
    return subprocess.run(["pkg-config", "--exists", "libnats"],
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def build(args):
    """Configure (or reconfigure a stale) build directory and build what
    the run needs. A directory configured before libnats-dev was installed
    has no nats-bench target: it is reconfigured, not silently used."""
    d = args.build_dir
    if not os.path.exists(os.path.join(d, "build.ninja")):
        subprocess.run(["meson", "setup", d, "--buildtype=release", "-Dbench=enabled"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    nats_target = os.path.exists(os.path.join(d, "bench", "nats-bench.p")) or \
        os.path.exists(os.path.join(d, "bench", "nats-bench"))
    if not nats_target and has_libnats():
        log("%s was configured without libnats: reconfiguring" % d)
        subprocess.run(["meson", "setup", "--reconfigure", d], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    targets = ["tools/microstream-hub", "bench/ms-bench", "bench/relay-bench"]
    if has_libnats():
        targets.append("bench/nats-bench")
    subprocess.run(["ninja", "-C", d] + targets, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def main():
    global ARGS_IDLE
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", action="append", choices=SYSTEMS,
                    help="run only this system (repeatable)")
    ap.add_argument("--phase", action="append", choices=PHASES,
                    help="run only this phase (repeatable)")
    ap.add_argument("--quick", action="store_true", help="short phases: a smoke run")
    ap.add_argument("--runs", type=int,
                    help="alternations of the c1/c64 and idle64 phases (default 3, quick 1)")
    ap.add_argument("--seconds", type=float, help="measured seconds per run (10; quick 1)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (2; quick 0.3)")
    ap.add_argument("--idle", type=int, action="append",
                    help="idle connection counts (default 1000 and 10000; quick 200)")
    ap.add_argument("--callgrind-requests", type=int, help="requests under callgrind (20000)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--no-build", action="store_true", help="use the build directory as is")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "latest.json"))
    args = ap.parse_args()
    q = args.quick
    args.runs = args.runs or (1 if q else 3)
    args.seconds = args.seconds or (1.0 if q else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if q else 2.0)
    args.idle = args.idle or ([200] if q else [1000, 10000])
    args.callgrind_requests = args.callgrind_requests or (2000 if q else 20000)
    args.tmp = tempfile.mkdtemp(prefix="ms-bench.")
    ARGS_IDLE = args.idle
    phases = args.phase or PHASES
    names = args.system or SYSTEMS

    if not args.no_build:
        build(args)
    nofile = raise_nofile()
    if max(args.idle) + 100 > nofile:
        log("fd limit %d: idle counts above it will fail" % nofile)

    classes = {"microstream": Microstream, "nats": Nats, "node": Node, "relay": Relay,
               "socketio": SocketIO, "node-ms": NodeMS, "ms-cluster": MsCluster,
               "ms-cluster-same": MsClusterSame, "nats-cluster": NatsCluster,
               "ms-tls": MicrostreamTls, "nats-tls": NatsTls}
    results = {}
    skipped = {}
    t0 = time.time()
    objs = []
    for name in names:
        s = classes[name](args)
        why = s.missing()
        if why:
            log("*** %s NOT RUN: %s" % (name, why))
            skipped[name] = why
            continue
        objs.append(s)
    if objs and ("c1" in phases or "c64" in phases):
        log("c1/c64: %d alternations of %s" % (args.runs, ", ".join(s.name for s in objs)))
        results.update(run_alternated(objs, args, phases))
    for s in objs:
        log("%s:" % s.name)
        results.setdefault(s.name, {}).update(run_system(s, args, phases))

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
        "config": {"runs": args.runs, "seconds": args.seconds, "warmup": args.warmup,
                   "idle": args.idle, "callgrind_requests": args.callgrind_requests,
                   "payload_bytes": 64, "phases": phases, "quick": q},
        "wall_s": round(time.time() - t0, 1),
        "alternations": args.runs,
        "skipped": skipped,
        "results": results,
        "goals": goals(results),
    }
    text = table(results)
    m = report["machine"]
    print("Machine: %s, %s CPUs, %s MiB, Linux %s" % (
        m["cpu"], m["cpus"], m["mem_mib"], m["kernel"]))
    if "c1" in phases or "c64" in phases:
        print("c1/c64: %d alternations (%s, one run each, in turn) x %ss "
              "(+%ss warm-up); every hub up for the whole phase" % (
                  args.runs, ", ".join(s.name for s in objs) or "-", args.seconds,
                  args.warmup))
    if "idle64" in phases:
        print("idle64: %d alternations of a hub with %d idle services and a plain hub "
              "of the same system, C=64, %ss (+%ss warm-up) each" % (
                  args.runs, max(args.idle), args.seconds, args.warmup))
    for name, why in skipped.items():
        print("*** %s NOT RUN: %s" % (name, why))
    print()
    print(text)
    print()
    for g in report["goals"]:
        print("goal: %-48s %s (%s)" % (g["goal"], "met" if g["met"] else "NOT met", g["detail"]))
    print("wall time: %.0f s" % report["wall_s"])
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    shutil.rmtree(args.tmp, ignore_errors=True)
    # A smoke run fails when a system answered nothing or with errors.
    bad = [n for n, r in results.items()
           for ph in ("c1", "c64", "idle64")
           if ph in r and (r[ph]["rps"] <= 0 or r[ph]["errors"]
                           or ph == "idle64" and (r[ph]["plain"]["rps"] <= 0
                                                  or r[ph]["plain"]["errors"]))]
    # A system asked for by name that could not run is a failure too.
    bad += [n for n in skipped if args.system and n in args.system]
    if bad:
        log("failed: " + ", ".join(sorted(set(bad))))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
