#!/usr/bin/env python3
"""A log subscriber that stops reading, over real sockets: it must get a
gap marker (or be closed with 4029) while the hub keeps routing requests
between other services. Uses only PROTOCOL.md and raw sockets. Prints TAP.

usage: slow_subscriber_test.py BUILD_ROOT
"""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import msgpack
import websockets

BUILD = sys.argv[1]
HUB = os.path.join(BUILD, "tools", "microstream-hub")
results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print("%s %d - %s%s" % ("ok" if cond else "not ok", len(results), name,
                            "" if cond else " # " + str(detail)[:300]))
    sys.stdout.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


async def service(url, name):
    ws = await websockets.connect(url, subprotocols=["microstream.v1"],
                                  ping_interval=None, max_size=None)
    await ws.send(msgpack.packb([1, 1, name, None, {}]))
    welcome = msgpack.unpackb(await ws.recv())
    assert welcome[0] == 2, welcome
    return ws


def raw_subscriber(port):
    """A WebSocket client by hand that subscribes, then stops reading."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head, head

    def send(obj):
        payload = msgpack.packb(obj)
        mask = b"\x01\x02\x03\x04"
        n = len(payload)
        hdr = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else
                               bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    send([1, 1, "slowpoke", None, {"watch": True}])
    send([9, 7, "logs", {}])
    return s


def read_frames(s, timeout=10.0):
    """Read WebSocket frames until the live tail is drained; return msgs."""
    s.settimeout(1.0)
    buf = b""
    msgs = []
    end = time.time() + timeout
    while time.time() < end:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        while True:
            if len(buf) < 2:
                break
            op = buf[0] & 0x0F
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = int.from_bytes(buf[2:4], "big")
                off = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = int.from_bytes(buf[2:10], "big")
                off = 10
            if len(buf) < off + n:
                break
            payload = buf[off:off + n]
            buf = buf[off + n:]
            if op == 2:
                msgs.append(msgpack.unpackb(payload, strict_map_key=False))
            elif op == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                msgs.append(("close", code))
                return msgs
    return msgs


async def main():
    port = free_port()
    hub = subprocess.Popen([HUB, "--listen", "127.0.0.1:%d" % port,
                            "--no-store", "--log-level", "warn",
                            "--heartbeat-ms", "60000"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
    try:
        assert "listening" in hub.stdout.readline()
        url = "ws://127.0.0.1:%d/ws" % port
        slow = raw_subscriber(port)
        logger = await service(url, "logger")
        a = await service(url, "svc-a")
        b = await service(url, "svc-b")
        await asyncio.sleep(0.2)

        total = 30000
        pad = "y" * 900
        answered = 0
        for i in range(total):
            await logger.send(msgpack.packb([7, 0, 20, "rec %05d %s" % (i, pad), {}]))
            if i % 3000 == 0:
                # Routing goes on while the subscriber is stuck.
                await a.send(msgpack.packb([3, i + 1, "svc-b", "ping", None, 5000, {}]))
                req = msgpack.unpackb(await asyncio.wait_for(b.recv(), 5))
                while req[0] != 3:
                    req = msgpack.unpackb(await asyncio.wait_for(b.recv(), 5))
                await b.send(msgpack.packb([4, req[1], "pong"]))
                resp = msgpack.unpackb(await asyncio.wait_for(a.recv(), 5))
                if resp[0] == 4 and resp[1] == i + 1 and resp[2] == "pong":
                    answered += 1
        check("requests are routed while a subscriber does not read",
              answered == total // 3000, answered)

        # The subscriber wakes up and reads what the hub kept for it.
        msgs = await asyncio.get_running_loop().run_in_executor(None, read_frames, slow)
        records = [m for m in msgs if isinstance(m, list) and m[0] == 8 and m[4] != 0]
        gaps = [m for m in msgs if isinstance(m, list) and m[0] == 8 and m[4] == 0
                and m[6] == "gap"]
        closes = [m for m in msgs if isinstance(m, tuple)]
        check("the slow subscriber learns what it lost (gap) or is closed 4029",
              gaps or (closes and closes[0][1] == 4029),
              (len(records), len(gaps), closes))
        if gaps:
            missed = sum(g[7]["missed"] for g in gaps)
            seqs = [r[2] for r in records]
            check("gap counts plus delivered records account for every record",
                  missed + len(records) >= total - 5 and missed > 0,
                  (missed, len(records)))
            check("records arrive in order after the gap",
                  seqs == sorted(seqs) and (not seqs or seqs[-1] == total), seqs[-3:])
        # The hub itself is fine.
        await a.send(msgpack.packb([3, 999999, "svc-b", "ping", None, 5000, {}]))
        req = msgpack.unpackb(await asyncio.wait_for(b.recv(), 5))
        while req[0] != 3:
            req = msgpack.unpackb(await asyncio.wait_for(b.recv(), 5))
        await b.send(msgpack.packb([4, req[1], "still"]))
        resp = msgpack.unpackb(await asyncio.wait_for(a.recv(), 5))
        check("the hub keeps working afterwards", resp[:3] == [4, 999999, "still"], resp)
        for ws in (logger, a, b):
            await ws.close()
        slow.close()
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(5)
        except subprocess.TimeoutExpired:
            hub.kill()
        check("hub exits 0 on SIGTERM", hub.returncode == 0, hub.returncode)


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    except Exception as e:
        check("test ran to the end", False, repr(e))
    print("1..%d" % len(results))
    sys.exit(0 if results and all(results) else 1)
