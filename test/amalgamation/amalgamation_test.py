#!/usr/bin/env python3
"""The single-header form: compile a service from the generated
microstream.h alone (a copy in an empty directory, so no other project
header can be found) plus the dependency libraries, in two translation
units, then run it against microstream-hub on 127.0.0.1. Prints TAP.

usage: amalgamation_test.py HEADER HUB SANITIZE CC [CC ARGS...]
  SANITIZE: meson's b_sanitize value ("none", "address,undefined", ...)
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER, HUB, SANITIZE = sys.argv[1:4]
CC = sys.argv[4:]
n = 0
failed = 0


def check(name, cond, detail=""):
    global n, failed
    n += 1
    if not cond:
        failed += 1
    print("%s %d - %s%s" % ("ok" if cond else "not ok", n, name,
                            "" if cond else " # " + str(detail)[-1500:]))
    sys.stdout.flush()


def main():
    work = tempfile.mkdtemp(prefix="ms-amalgamation-")
    hub = None
    try:
        shutil.copy(HEADER, os.path.join(work, "microstream.h"))
        for f in ("single_header.c", "declarations_only.c",
                  "declarations_only.h"):
            shutil.copy(os.path.join(HERE, f), work)
        flags = ["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                 "-Wno-unused-parameter", "-g", "-O1", "-I", work]
        if SANITIZE and SANITIZE != "none":
            flags += ["-fsanitize=" + SANITIZE, "-fno-omit-frame-pointer"]
        exe = os.path.join(work, "single_header")
        cmd = CC + flags + [os.path.join(work, "single_header.c"),
                            os.path.join(work, "declarations_only.c"),
                            "-o", exe, "-lwslay", "-lnettle", "-lmsgpackc",
                            "-ljansson", "-lcjson", "-lcares"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        check("a program compiles from the single header alone",
              r.returncode == 0, r.stderr)
        if r.returncode != 0:
            return

        hub = subprocess.Popen([HUB, "--listen", "127.0.0.1:0",
                                "--no-store", "--log-level", "warn"],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        line = hub.stdout.readline()
        check("the hub starts", "listening on 127.0.0.1:" in line, line)
        port = int(line.rsplit(":", 1)[1]) if "listening on" in line else 1
        r = subprocess.run([exe, "ws://127.0.0.1:%d/ws" % port],
                           capture_output=True, text=True, timeout=60)
        check("it registers and gets its own answer through the hub",
              r.returncode == 0 and r.stdout.startswith("signed: "),
              "status %d: %s %s" % (r.returncode, r.stdout, r.stderr))
        r = subprocess.run([exe, "ws://127.0.0.1:1/ws"], capture_output=True,
                           text=True, timeout=60)
        check("without a hub it reports no answer (exit 2)",
              r.returncode == 2, "status %d: %s" % (r.returncode, r.stderr))
    finally:
        if hub is not None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(10)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait()
        shutil.rmtree(work, ignore_errors=True)


print("1..4")
main()
sys.exit(1 if failed or n != 4 else 0)
