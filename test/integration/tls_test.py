#!/usr/bin/env python3
"""microstream-hub over TLS against independent peers: Python `websockets`
over `ssl`, curl, openssl s_client, and the project's own C client
(ms-req) over wss://. Every refusal case (unknown CA, wrong host name,
expired certificate, plaintext to a TLS port, TLS to a plain port, a
handshake that never completes, a missing client certificate) must give
a clear error and leave the hub serving everyone else; SIGHUP swaps the
certificate without dropping a connection. The test CA and certificates
are made here with certtool. Prints TAP.

usage: tls_test.py BUILD_ROOT
"""
import asyncio
import json
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
HUB = os.path.join(BUILD, "tools", "microstream-hub")
REQ = os.path.join(BUILD, "tools", "ms-req")
TAIL = os.path.join(BUILD, "tools", "ms-tail")

try:
    import msgpack
    import websockets
except ImportError as e:
    print("1..0 # SKIP python modules missing: %s" % e)
    sys.exit(0)  # TAP: the plan "1..0 # SKIP" makes meson report a skip
for tool in ("certtool", "curl", "openssl"):
    if not shutil.which(tool):
        print("1..0 # SKIP %s not found" % tool)
        sys.exit(0)  # TAP: the plan "1..0 # SKIP" makes meson report a skip

results = []
procs = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print("%s %d - %s%s" % ("ok" if cond else "not ok", len(results), name,
                            "" if cond else " # " + str(detail)[:400].replace("\n", " | ")))
    sys.stdout.flush()
    return cond


def run(args, timeout=20, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


class Hub:
    def __init__(self, *args):
        self.err = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.p = subprocess.Popen([HUB, "--no-store", "--heartbeat-ms", "2000"] + list(args),
                                  stdout=subprocess.PIPE, stderr=self.err, text=True)
        procs.append(self.p)
        self.tls_port = self.plain_port = None
        for _ in range(len([a for a in args if a == "--listen"]) or 1):
            line = self.p.stdout.readline()
            if "listening on" not in line:
                raise RuntimeError("hub did not start: %r %s" % (line, self.log()))
            port = int(line.rsplit(":", 1)[1])
            if "tls://" in line:
                self.tls_port = port
            else:
                self.plain_port = port

    def log(self):
        with open(self.err.name) as f:
            return f.read()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        os.unlink(self.err.name)
        return self.p.returncode


def ctx(cafile, certfile=None, keyfile=None):
    c = ssl.create_default_context(cafile=cafile)
    if certfile:
        c.load_cert_chain(certfile, keyfile)
    return c


async def wss_service(port, name, token, sslctx, server_hostname="localhost"):
    """A service over wss:// on websockets; answers "ping"."""
    ws = await websockets.connect("wss://127.0.0.1:%d/ws" % port, ssl=sslctx,
                                  server_hostname=server_hostname,
                                  subprotocols=["microstream.v1"], open_timeout=10)
    await ws.send(msgpack.packb([1, 1, name, token, {}]))
    welcome = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10))
    return ws, welcome


async def serve_pings(ws):
    async for raw in ws:
        m = msgpack.unpackb(raw)
        if m[0] == 3:
            await ws.send(msgpack.packb([4, m[1], {"pong": m[4]}]))


def healthz(hub, ca):
    r = run(["curl", "-sS", "--max-time", "10", "--cacert", ca,
             "https://127.0.0.1:%d/healthz" % hub.tls_port])
    return r.returncode == 0 and '"status":"ok"' in r.stdout


def token(secret, name, scope):
    r = run([HUB, "--secret-file", secret, "--print-token", name, "--scope", scope,
             "--ttl", "1h"])
    return r.stdout.strip()


async def main(d):
    certs = os.path.join(d, "certs")
    r = run([sys.executable, os.path.join(HERE, "..", "tls", "make_certs.py"), certs])
    if not check("test CA and certificates made with certtool", r.returncode == 0, r.stderr):
        return
    c = lambda n: os.path.join(certs, n)
    ca = c("ca.pem")
    cur = os.path.join(d, "current.pem")  # the hub's certificate file, swapped on SIGHUP
    shutil.copy(c("server.pem"), cur)
    secret = os.path.join(d, "secret")
    with open(secret, "w") as f:
        f.write("tls-test-secret\n")
    svc_tok = token(secret, "svcA", "service")
    req_tok = token(secret, "ms-req", "service")
    watch_tok = token(secret, "ops", "watch")

    hub = Hub("--listen", "tls://127.0.0.1:0", "--listen", "127.0.0.1:0",
              "--tls-cert", cur, "--tls-key", c("server.key"), "--secret-file", secret,
              "--tls-handshake-ms", "1000")
    try:
        await scenarios(hub, c, ca, cur, secret, svc_tok, req_tok, watch_tok)
    finally:
        rc = hub.stop()
        check("hub exits 0 on SIGTERM", rc == 0, rc)
    await client_certificates(c, ca)
    refuse_insecure_listeners(c)
    conn_rate_limit(c, ca)
    await legacy_secret_reload(d)


async def scenarios(hub, c, ca, cur, secret, svc_tok, req_tok, watch_tok):
    P = hub.tls_port
    # --- independent peers -------------------------------------------------
    ws, welcome = await wss_service(P, "svcA", svc_tok, ctx(ca))
    check("websockets over ssl: HELLO with a token gets WELCOME", welcome[0] == 2, welcome)
    pinger = asyncio.ensure_future(serve_pings(ws))
    r = await asyncio.to_thread(run, [REQ, "--hub", "wss://127.0.0.1:%d/ws" % P, "--ca", ca,
                                      "--token", req_tok, "svcA", "ping", '{"n":7}'])
    check("ms-req over wss:// (GnuTLS, hostname checked) calls the websockets service",
          r.returncode == 0 and json.loads(r.stdout) == {"pong": {"n": 7}},
          (r.returncode, r.stdout, r.stderr))
    check("curl --cacert https:// /healthz", healthz(hub, ca))
    r = run(["curl", "-sS", "--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}",
             "https://127.0.0.1:%d/api/services" % P])
    check("curl: /api/services without a token -> 401", r.stdout == "401", r.stdout)
    r = run(["curl", "-sS", "--cacert", ca, "-H", "Authorization: Bearer " + watch_tok,
             "https://127.0.0.1:%d/api/services" % P])
    check("curl: /api/services with a watch token lists svcA",
          r.returncode == 0 and any(s.get("name") == "svcA" for s in json.loads(r.stdout or "[]")),
          r.stdout)
    r = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % P, "-CAfile", ca,
             "-servername", "localhost", "-verify_hostname", "localhost",
             "-verify_return_error", "-alpn", "http/1.1"], input="", timeout=20)
    out = r.stdout + r.stderr
    check("openssl s_client: chain and host name verify (return code 0)",
          "Verify return code: 0 (ok)" in out, out[-400:])
    check("openssl s_client: ALPN http/1.1 negotiated", "ALPN protocol: http/1.1" in out,
          out[-400:])
    r = await asyncio.to_thread(run, [TAIL, "--hub", "wss://127.0.0.1:%d/ws" % P, "--ca", ca,
                                      "--token", watch_tok, "--name", "ops", "--presence",
                                      "-n", "5", "--json"])
    check("ms-tail over wss:// with a watch token sees svcA up",
          r.returncode == 0 and "svcA" in r.stdout, (r.returncode, r.stdout, r.stderr))

    # --- refusals: each clear, and the hub keeps serving --------------------
    seen = len(hub.log())
    r = await asyncio.to_thread(run, [REQ, "--hub", "wss://127.0.0.1:%d/ws" % P,
                                      "--token", req_tok, "svcA", "ping"])
    check("unknown CA (system trust only): ms-req refuses the hub, exit 3",
          r.returncode == 3 and "issuer is unknown" in r.stderr, (r.returncode, r.stderr))
    # ms-req tells the hub why with an alert, so the hub's log names it
    # instead of a connection that just ended.
    new = ""
    for _ in range(100):
        new = hub.log()[seen:]
        if "TLS stream from 127.0.0.1 failed" in new:
            break
        await asyncio.sleep(0.1)
    check("ms-req's refusal reaches the hub as an alert, which it logs",
          "the peer sent alert" in new and "closed the connection" not in new, new[-400:])
    try:
        await wss_service(P, "svcX", svc_tok, ctx(ca), server_hostname="wrong.example")
        check("wrong host name: websockets/ssl refuses", False, "connected")
    except ssl.SSLCertVerificationError as e:
        check("wrong host name: websockets/ssl refuses", "match" in str(e).lower() or
              "hostname" in str(e).lower(), e)
    r = run(["curl", "-sS", "--cacert", ca, "--resolve", "wrong.example:%d:127.0.0.1" % P,
             "https://wrong.example:%d/healthz" % P])
    check("wrong host name: curl refuses (exit 60)", r.returncode == 60, (r.returncode, r.stderr))
    r = run(["curl", "-sS", "http://127.0.0.1:%d/healthz" % P])
    check("plaintext HTTP to the TLS port: 400 that says so",
          "this port speaks TLS" in r.stdout, (r.returncode, r.stdout))
    t0 = time.monotonic()
    r = await asyncio.to_thread(run, [REQ, "--hub", "wss://127.0.0.1:%d/ws" % hub.plain_port,
                                      "--ca", ca, "svcA", "ping"])
    check("TLS client to the plain port: refused at once, exit 3, says TLS",
          r.returncode == 3 and "TLS" in r.stderr and time.monotonic() - t0 < 8,
          (r.returncode, r.stderr))
    t0 = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", P))
    partial = socket.create_connection(("127.0.0.1", P))
    partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello that stops
    # A TLS 1.2 client that does not trust the hub's CA: its alert is
    # plaintext, so the hub can name it.
    old_ctx = ssl.create_default_context()
    old_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        old_ctx.wrap_socket(socket.create_connection(("127.0.0.1", P), timeout=10),
                            server_hostname="localhost").close()
        check("a TLS 1.2 client without the CA refuses the hub", False)
    except ssl.SSLCertVerificationError:
        pass
    # A TLS 1.3 client that trusts the CA but not the name: its alert is
    # plaintext too, sent after the hub's encrypted flight.
    try:
        ctx(ca).wrap_socket(socket.create_connection(("127.0.0.1", P), timeout=10),
                            server_hostname="wrong.example").close()
        check("a TLS 1.3 client with the wrong host name refuses the hub", False)
    except ssl.SSLCertVerificationError:
        pass
    for s_, what in ((silent, "sends nothing"), (partial, "stops half way")):
        s_.settimeout(15)
        try:
            got = s_.recv(100)
        except OSError:
            got = b""
        took = time.monotonic() - t0
        check("handshake that %s: closed at the 1 s deadline (%.1f s after connect)" %
              (what, took), got == b"" and 0.9 <= took < 12, (got, took))
        s_.close()
    check("after every refusal the hub still serves https", healthz(hub, ca))
    # Each of those TLS failures is in the hub's log with the peer address.
    log = hub.log()
    for what, text in (("plaintext to the TLS port", "plaintext sent to a TLS port"),
                       ("a handshake that never completes", "not complete after 1000 ms"),
                       ("a handshake cut half way", "the peer closed the connection"),
                       ("a TLS 1.2 client that refuses the CA (its alert)",
                        "the peer sent alert 'CA is unknown'"),
                       ("a TLS 1.3 client that refuses the host name (its plaintext alert)",
                        "the peer sent alert 'Certificate is bad'")):
        check("hub logs the TLS failure with the address: " + what,
              "TLS stream from 127.0.0.1 failed: " in log and any(
                  "TLS stream from 127.0.0.1 failed: " in l and text in l
                  for l in log.splitlines()), log[-800:])
    r = run(["curl", "-sS", "--cacert", ca, "https://127.0.0.1:%d/metrics" % P])
    m = re.search(r"^microstream_tls_failures_total (\d+)$", r.stdout, re.M)
    check("/metrics counts the TLS failures", m and int(m.group(1)) >= 6, r.stdout[-300:])

    # --- certificate swapped on SIGHUP; the open connection stays -----------
    def swap(name):
        shutil.copy(c(name), cur)
        hub.p.send_signal(signal.SIGHUP)
        time.sleep(0.5)

    async def ms_req_tls(host="127.0.0.1"):
        return await asyncio.to_thread(run, [REQ, "--hub", "wss://%s:%d/ws" % (host, P),
                                             "--ca", ca, "--token", req_tok, "svcA", "ping",
                                             '{"n":1}'])

    swap("expired.pem")
    r = await ms_req_tls()
    check("expired certificate: ms-req refuses, exit 3, says expired",
          r.returncode == 3 and "expired" in r.stderr, (r.returncode, r.stderr))
    r = run(["curl", "-sS", "--cacert", ca, "https://127.0.0.1:%d/healthz" % P])
    check("expired certificate: curl refuses", r.returncode == 60, (r.returncode, r.stderr))
    swap("other.pem")
    r = await ms_req_tls()
    check("certificate for another name: ms-req refuses (host name check)",
          r.returncode == 3 and "TLS" in r.stderr, (r.returncode, r.stderr))
    swap("rogue.pem")
    r = await ms_req_tls()
    check("certificate from an unknown CA: ms-req refuses",
          r.returncode == 3 and "issuer is unknown" in r.stderr, (r.returncode, r.stderr))
    swap("server.pem")
    r = await ms_req_tls()
    check("good certificate back after SIGHUP: ms-req works again", r.returncode == 0,
          (r.returncode, r.stderr))
    check("the wss connection opened before the swaps is still up", not pinger.done()
          and not ws.closed)
    pinger.cancel()
    await asyncio.sleep(0)
    await ws.send(msgpack.packb([12, 99]))
    check("... and still answers PING", msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
          == [13, 99])
    await ws.close()
    log = hub.log()
    check("hub logged the TLS handshake on its plain port", "plain port" in log, log[-500:])


async def client_certificates(c, ca):
    hub = Hub("--listen", "tls://127.0.0.1:0", "--tls-cert", c("server.pem"),
              "--tls-key", c("server.key"), "--tls-client-ca", ca)
    try:
        try:
            await wss_service(hub.tls_port, "svcM", None, ctx(ca))
            check("--tls-client-ca: a client without a certificate is refused", False)
        except (ssl.SSLError, OSError, websockets.exceptions.WebSocketException,
                asyncio.TimeoutError) as e:
            check("--tls-client-ca: a client without a certificate is refused", True, e)
        ws, welcome = await wss_service(hub.tls_port, "svcM", None,
                                        ctx(ca, c("client.pem"), c("client.key")))
        check("--tls-client-ca: a client with a certificate from the CA is welcomed",
              welcome[0] == 2, welcome)
        await ws.close()
    finally:
        hub.stop()


def refuse_insecure_listeners(c):
    r = run([HUB, "--no-store", "--listen", "0.0.0.0:0"])
    check("plain non-loopback listener without --insecure: refused with a reason",
          r.returncode == 2 and "--insecure" in r.stderr, r.stderr)
    r = run([HUB, "--no-store", "--listen", "tls://0.0.0.0:0", "--tls-cert",
             c("server.pem"), "--tls-key", c("server.key")])
    check("TLS non-loopback listener without a secret: refused",
          r.returncode == 2 and "secret" in r.stderr, r.stderr)


def conn_rate_limit(c, ca):
    """--conn-rate: past the burst, new connections from one address are
    closed before any TLS handshake, counted in /metrics and logged (a
    few lines, not one per connection)."""
    hub = Hub("--listen", "tls://127.0.0.1:0", "--tls-cert", c("server.pem"),
              "--tls-key", c("server.key"), "--conn-rate", "1", "--conn-burst", "5",
              "--conn-rate-loopback")
    sslctx = ctx(ca)
    held, outcome = [], []
    try:
        for _ in range(40):
            raw = None
            try:
                # (A refusal may reset the connection before connect returns.)
                raw = socket.create_connection(("127.0.0.1", hub.tls_port), timeout=10)
                tls = sslctx.wrap_socket(raw, server_hostname="localhost")
                held.append(tls)  # kept open: the hub accepted and shook hands
                outcome.append("ok")
            except (ConnectionResetError, ssl.SSLEOFError, BrokenPipeError):
                # Closed with a reset before a byte of the handshake came.
                if raw:
                    raw.close()
                outcome.append("refused")
        check("--conn-rate: the burst of 5 is accepted (TLS handshakes complete)",
              outcome[:5] == ["ok"] * 5, outcome)
        check("--conn-rate: connections past the burst are refused before the handshake",
              outcome.count("refused") >= 20, outcome)
        for t in held:
            t.close()
        # The bucket refills (1 a second): the address gets in again.
        got = None
        for _ in range(60):
            r = run(["curl", "-sS", "--cacert", ca, "https://127.0.0.1:%d/metrics" % hub.tls_port])
            if r.returncode == 0:
                got = r.stdout
                break
            time.sleep(0.5)
        check("--conn-rate: the address is served again once its bucket refills", got)
        m = re.search(r'^microstream_connections_refused_total\{reason="rate"\} (\d+)$',
                      got or "", re.M)
        check("/metrics counts the refusals by rate",
              m and int(m.group(1)) >= outcome.count("refused"),
              (got or "")[-600:])
        m = re.search(r"^microstream_events_suppressed_total (\d+)$", got or "", re.M)
        check("/metrics counts the refusal lines held back", m and int(m.group(1)) >= 10,
              (got or "")[-600:])
        lines = [l for l in hub.log().splitlines()
                 if "refusing a connection from 127.0.0.1: more than 1 new" in l]
        check("refusals are logged with the address, at most 10 lines a window",
              1 <= len(lines) <= 10, hub.log()[-600:])
    finally:
        for t in held:
            t.close()
        hub.stop()


async def legacy_secret_reload(d):
    """--legacy-tokens: the static HMAC token follows the secret file
    across SIGHUP, as the JWT keys do."""
    secret = os.path.join(d, "legacy-secret")
    with open(secret, "w") as f:
        f.write("old-legacy-secret\n")
    hub = Hub("--listen", "127.0.0.1:0", "--secret-file", secret, "--legacy-tokens")

    def legacy(key, name):
        return hmac.new(key, name.encode(), hashlib.sha256).hexdigest()

    async def hello(name, tok):
        ws = await websockets.connect("ws://127.0.0.1:%d/ws" % hub.plain_port,
                                      subprotocols=["microstream.v1"], open_timeout=10)
        try:
            await ws.send(msgpack.packb([1, 1, name, tok, {}]))
            return msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10))
        except websockets.exceptions.ConnectionClosed as e:
            return ["closed", e.code]
        finally:
            await ws.close()
    try:
        w = await hello("legacy1", legacy(b"old-legacy-secret", "legacy1"))
        check("legacy token of the secret file is welcomed", w[0] == 2, w)
        with open(secret, "w") as f:
            f.write("new-legacy-secret\n")
        hub.p.send_signal(signal.SIGHUP)
        for _ in range(100):
            if "key(s) reloaded" in hub.log():
                break
            await asyncio.sleep(0.1)
        w = await hello("legacy2", legacy(b"old-legacy-secret", "legacy2"))
        check("after SIGHUP the old secret's legacy token is refused", w[0] != 2, w)
        w = await hello("legacy3", legacy(b"new-legacy-secret", "legacy3"))
        check("after SIGHUP the new secret's legacy token is welcomed", w[0] == 2, w)
    finally:
        hub.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        try:
            asyncio.run(asyncio.wait_for(main(d), 240))
        except Exception as e:  # a crash is a failure, not a silent pass
            check("test ran to the end", False, repr(e))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    print("1..%d" % len(results))
    sys.exit(0 if all(results) else 1)
