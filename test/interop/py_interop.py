#!/usr/bin/env python3
"""Interop with Python's `websockets` (10.x): its client against our echo
server, and our client against its echo server. Prints TAP.

Usage: py_interop.py PATH_TO_WS_ECHO
"""
import asyncio
import http.client
import os
import sys

import websockets

ECHO = sys.argv[1]
STEP_TIMEOUT = 10.0

results = []


def report(name, ok, detail=""):
    results.append((name, ok, detail))


async def start_server():
    proc = await asyncio.create_subprocess_exec(
        ECHO, "server", "--port", "0", "--host", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), STEP_TIMEOUT)
    words = line.decode().split()
    if len(words) != 3 or words[:2] != ["listening", "on"]:
        proc.kill()
        raise RuntimeError("unexpected server banner %r" % line)
    return proc, int(words[2])


async def check(name, coro):
    try:
        await asyncio.wait_for(coro, STEP_TIMEOUT)
        report(name, True)
    except Exception as e:  # noqa: BLE001 - any failure fails the check
        report(name, False, "%s: %s" % (type(e).__name__, e))


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- Python client -> our server -----------------------------------------

async def client_tests(port):
    uri = "ws://127.0.0.1:%d/ws" % port

    async def roundtrips():
        async with websockets.connect(uri, max_size=1 << 22) as ws:
            await ws.send(b"\x00\x01\xfe\xff")
            got = await ws.recv()
            expect(got == b"\x00\x01\xfe\xff", "binary echo %r" % (got,))
            await ws.send("héllo wörld")
            got = await ws.recv()
            expect(got == "héllo wörld", "text echo %r" % (got,))
            big = bytes((i * 31) & 0xFF for i in range(200 * 1024))
            await ws.send(big)
            got = await ws.recv()
            expect(got == big, "200 KiB echo (%d bytes back)" % len(got))
            bigtext = "x" * (200 * 1024)
            await ws.send(bigtext)
            got = await ws.recv()
            expect(got == bigtext, "200 KiB text echo")
    await check("py client: binary, text and 200 KiB round trips", roundtrips())

    async def ping():
        async with websockets.connect(uri) as ws:
            waiter = await ws.ping(b"abc")
            await asyncio.wait_for(waiter, STEP_TIMEOUT)
    await check("py client: ping gets pong", ping())

    async def close_code():
        ws = await websockets.connect(uri)
        await ws.close(4002, "bye now")
        expect(ws.close_code == 4002, "close code %r" % ws.close_code)
        expect(ws.close_reason == "bye now",
               "close reason %r" % ws.close_reason)
    await check("py client: close 4002 and reason echoed", close_code())

    async def subproto():
        async with websockets.connect(
                uri, subprotocols=["microstream.json.v1"]) as ws:
            expect(ws.subprotocol == "microstream.json.v1",
                   "subprotocol %r" % ws.subprotocol)
            await ws.send("{}")
            expect(await ws.recv() == "{}", "echo after negotiation")
        async with websockets.connect(
                uri, subprotocols=["foo", "microstream.v1"]) as ws:
            expect(ws.subprotocol == "microstream.v1",
                   "picked %r" % ws.subprotocol)
    await check("py client: subprotocol negotiated and echoed", subproto())

    async def refused():
        try:
            async with websockets.connect(uri, subprotocols=["foo"]):
                pass
        except websockets.exceptions.InvalidStatusCode as e:
            expect(e.status_code == 400, "status %d" % e.status_code)
            return
        raise AssertionError("upgrade offering only 'foo' was accepted")
    await check("py client: unknown subprotocol only -> HTTP 400", refused())

    def healthz():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        expect(resp.status == 200 and body == b"ok",
               "healthz %d %r" % (resp.status, body))

    async def healthz_async():
        await asyncio.get_running_loop().run_in_executor(None, healthz)
    await check("py http: GET /healthz answers 200 ok", healthz_async())


# ---- our client -> Python server -----------------------------------------

async def echo_handler(ws, path=None):
    try:
        async for msg in ws:
            await ws.send(msg)
    except websockets.exceptions.ConnectionClosed:
        pass  # a close other than 1000 ends the iteration with this


async def run_our_client(port, *args):
    proc = await asyncio.create_subprocess_exec(
        ECHO, "client", "ws://127.0.0.1:%d/ws" % port, "--timeout", "8000",
        *args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode().splitlines()


async def server_tests():
    server = await websockets.serve(echo_handler, "127.0.0.1", 0,
                                    max_size=1 << 22)
    port = server.sockets[0].getsockname()[1]

    async def messages():
        big = bytes((i * 7) & 0xFF for i in range(200 * 1024)).hex()
        rc, lines = await run_our_client(
            port, "--send-binary", "00ff10", "--send-text", "hi there",
            "--send-pattern", str(200 * 1024), "--close", "1000")
        expect(rc == 0, "exit code %d, output %r" % (rc, lines[:4]))
        expect(lines[0] == "open:none", "open line %r" % lines[0])
        expect(lines[1] == "binary:00ff10", "line %r" % lines[1])
        expect(lines[2] == "text:hi there", "line %r" % lines[2])
        expect(lines[3] == "binary:" + big, "200 KiB binary echo")
        expect(lines[4] == "close:1000:", "close line %r" % lines[4])
    await check("our client -> py server: binary, text, 200 KiB binary",
                messages())

    async def ping_close():
        rc, lines = await run_our_client(
            port, "--ping", "0102", "--close-reason", "done here",
            "--close", "4002")
        expect(rc == 0, "exit code %d %r" % (rc, lines))
        expect(lines == ["open:none", "pong", "close:4002:done here"],
               "output %r" % lines)
    await check("our client -> py server: ping/pong, close code and reason",
                ping_close())

    server.close()
    await server.wait_closed()


async def main():
    proc, port = await start_server()
    try:
        await client_tests(port)
    finally:
        proc.terminate()
        try:
            rc = await asyncio.wait_for(proc.wait(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            rc = await proc.wait()
    report("our server exits cleanly on SIGTERM", rc == 0, "exit %r" % rc)
    await server_tests()


if __name__ == "__main__":
    asyncio.run(main())
    print("1..%d" % len(results))
    failed = 0
    for i, (name, ok, detail) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        if not ok:
            failed += 1
            print("#   " + detail)
    sys.stdout.flush()
    os._exit(1 if failed else 0)
