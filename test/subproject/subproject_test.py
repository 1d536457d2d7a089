#!/usr/bin/env python3
"""microstream as a meson subproject: copies test/subproject/consumer and
the repository (without build directories) into a temporary directory as
consumer/ and consumer/subprojects/microstream/, configures and builds the
consumer (dependency() falling back to the subproject), checks that the
subproject built the libraries but no tools, examples or tests, then runs
the consumer's client against microstream-hub from the main build on
127.0.0.1. Prints TAP.

usage: subproject_test.py SOURCE_ROOT HUB SANITIZE CC [CC ARGS...]
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

SRC, HUB, SANITIZE = sys.argv[1:4]
CC = sys.argv[4:]
PLAN = 5
n = 0
failed = 0


def check(name, cond, detail=""):
    global n, failed
    n += 1
    if not cond:
        failed += 1
    print("%s %d - %s%s" % ("ok" if cond else "not ok", n, name,
                            "" if cond else " # " + str(detail)[-2000:]))
    sys.stdout.flush()


def skip_build_dirs(directory, names):
    """Leave out build directories, VCS data, node modules and databases."""
    out = []
    for name in names:
        p = os.path.join(directory, name)
        if name in (".git", "node_modules") or name.endswith(".db") or (
                os.path.isdir(p) and (name.startswith("build") or
                                      os.path.isfile(os.path.join(
                                          p, "build.ninja")))):
            out.append(name)
    return out


def main():
    work = tempfile.mkdtemp(prefix="ms-subproject-")
    hub = None
    try:
        consumer = os.path.join(work, "consumer")
        shutil.copytree(os.path.join(SRC, "test", "subproject", "consumer"),
                        consumer)
        shutil.copytree(SRC, os.path.join(consumer, "subprojects",
                                          "microstream"),
                        ignore=skip_build_dirs, symlinks=True)
        build = os.path.join(work, "build")
        env = dict(os.environ)
        env["CC"] = " ".join(CC)
        args = ["meson", "setup", build, consumer, "--werror",
                "--force-fallback-for=microstream"]
        if SANITIZE and SANITIZE != "none":
            args += ["-Db_sanitize=" + SANITIZE, "-Db_lundef=false"]
        r = subprocess.run(args, cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
        check("the consumer configures with microstream as a subproject",
              r.returncode == 0 and "microstream" in r.stdout,
              r.stdout + r.stderr)
        if r.returncode != 0:
            return
        r = subprocess.run(["ninja", "-C", build], env=env,
                           capture_output=True, text=True, timeout=600)
        check("it builds", r.returncode == 0, r.stdout + r.stderr)
        if r.returncode != 0:
            return

        sub = os.path.join(build, "subprojects", "microstream")
        extra = [d for d in ("tools", "examples", "test")
                 if os.path.isdir(os.path.join(sub, d))]
        check("the subproject builds the libraries, no tools/examples/tests",
              not extra and os.path.isdir(os.path.join(sub, "lib")), extra)

        r = subprocess.run([os.path.join(build, "core_check")],
                           capture_output=True, text=True, timeout=60)
        check("a program on the core dependency runs",
              r.returncode == 0 and
              r.stdout.split() == ["0.1.0", "TARGET_SERVICE_NOT_FOUND"],
              "status %d: %s %s" % (r.returncode, r.stdout, r.stderr))

        hub = subprocess.Popen([HUB, "--listen", "127.0.0.1:0", "--no-store",
                                "--log-level", "warn"],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        line = hub.stdout.readline()
        port = int(line.rsplit(":", 1)[1]) if "listening on" in line else 1
        r = subprocess.run([os.path.join(build, "echo_client"),
                            "ws://127.0.0.1:%d/ws" % port, "consumer-echo"],
                           capture_output=True, text=True, timeout=60)
        check("the consumer's client calls itself through the hub",
              r.returncode == 0 and
              r.stdout.strip() == "echo: ping from consumer-echo",
              "hub said %r; status %d: %s %s" % (line, r.returncode, r.stdout,
                                                 r.stderr))
    finally:
        if hub is not None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(10)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait()
        shutil.rmtree(work, ignore_errors=True)


print("1..%d" % PLAN)
main()
sys.exit(1 if failed or n != PLAN else 0)
