#!/usr/bin/env python3
"""meson install into a staging directory (--destdir): the public headers,
the libraries, the pkg-config files and the programs are in place, and
the internal headers are not; a program built with nothing but
`pkg-config --cflags --libs microstream microstream-posix` runs against
the installed microstream-hub on 127.0.0.1. Prints TAP.

usage: install_test.py BUILD_ROOT CLIENT_SOURCE SANITIZE CC [CC ARGS...]
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile

BUILD, CLIENT_SRC, SANITIZE = sys.argv[1:4]
CC = sys.argv[4:]
PLAN = 9
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


def option(name):
    """A value from the build's configuration (meson introspect)."""
    import json
    r = subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                       capture_output=True, text=True, timeout=60)
    for o in json.loads(r.stdout):
        if o["name"] == name:
            return o["value"]
    return None


def main():
    stage = tempfile.mkdtemp(prefix="ms-install-")
    hub = None
    try:
        r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild",
                            "--destdir", stage, "--quiet"],
                           capture_output=True, text=True, timeout=300)
        check("meson install --destdir succeeds", r.returncode == 0,
              r.stdout + r.stderr)
        root = stage + option("prefix")
        libdir = os.path.join(root, option("libdir"))
        bindir = os.path.join(root, option("bindir"))
        incdir = os.path.join(root, option("includedir"), "microstream")

        headers = ["microstream.h", "ms_common.h", "ms_conn.h", "ms_codec.h",
                   "ms_transport.h", "ms_client.h", "ms_hub.h", "ms_log.h",
                   "ms_posix.h"]
        missing = [h for h in headers
                   if not os.path.isfile(os.path.join(incdir, h))]
        installed = sorted(os.listdir(incdir)) if os.path.isdir(incdir) else []
        check("the public headers are installed, the internal ones are not",
              not missing and "ms_internal.h" not in installed,
              "missing %s; installed %s" % (missing, installed))

        libs = [os.path.basename(p) for p in
                glob.glob(os.path.join(libdir, "libmicrostream*.so*"))]
        check("libmicrostream and libmicrostream-posix are installed",
              "libmicrostream.so" in libs and "libmicrostream-posix.so" in libs
              and any(l.startswith("libmicrostream.so.") for l in libs), libs)

        pcdir = os.path.join(libdir, "pkgconfig")
        check("the pkg-config files are installed",
              all(os.path.isfile(os.path.join(pcdir, f)) for f in
                  ("microstream.pc", "microstream-posix.pc")),
              os.listdir(pcdir) if os.path.isdir(pcdir) else "no " + pcdir)

        tools = ["microstream-hub", "ms-req", "ms-log", "ms-tail"]
        check("the programs are installed",
              all(os.access(os.path.join(bindir, t), os.X_OK) for t in tools),
              os.listdir(bindir) if os.path.isdir(bindir) else "no bindir")

        mandir = os.path.join(root, option("mandir"), "man1")
        sysconf = option("sysconfdir")
        sysconf = os.path.join(root, sysconf) if not os.path.isabs(sysconf) \
            else stage + sysconf
        units = os.path.join(root, "lib", "systemd", "system")
        extras = [os.path.join(mandir, t + ".1") for t in tools] + [
            os.path.join(units, "microstream-hub.service"),
            os.path.join(units, "ms-log@.service"),
            os.path.join(sysconf, "microstream", "hub.conf"),
            os.path.join(root, option("datadir"), "doc", "microstream",
                         "LICENSE")]
        missing = [p for p in extras if not os.path.isfile(p)]
        unit = open(extras[len(tools)]).read() if not missing else ""
        check("man pages, systemd units, the hub's configuration and the "
              "license are installed",
              not missing and os.path.join(option("prefix"), option("bindir"),
                                           "microstream-hub") in unit
              and "ExecReload=/bin/kill -HUP" in unit
              and ".SH OPTIONS" in open(extras[0]).read()
              and "\\-\\-retention\\-days" in open(extras[0]).read(),
              missing or unit)

        env = dict(os.environ)
        env["PKG_CONFIG_PATH"] = pcdir
        env["PKG_CONFIG_SYSROOT_DIR"] = stage
        # Only the installed libraries (meson test points at the build's).
        env["LD_LIBRARY_PATH"] = libdir
        r = subprocess.run(["pkg-config", "--static", "--libs",
                            "microstream"], env=env, capture_output=True,
                           text=True, timeout=60)
        check("static linking names wslay, nettle, jansson and cJSON, no "
              "paths",
              r.returncode == 0 and "-lwslay" in r.stdout.split()
              and "-lnettle" in r.stdout.split()
              and "-ljansson" in r.stdout.split()
              and "-lcjson" in r.stdout.split() and ".so" not in r.stdout,
              r.stdout + r.stderr)

        r = subprocess.run(["pkg-config", "--cflags", "--libs", "microstream",
                            "microstream-posix"], env=env,
                           capture_output=True, text=True, timeout=60)
        pc_flags = r.stdout.split()
        exe = os.path.join(stage, "echo_client")
        flags = ["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g"]
        if SANITIZE and SANITIZE != "none":
            flags += ["-fsanitize=" + SANITIZE, "-fno-omit-frame-pointer"]
        c = subprocess.run(CC + flags + [CLIENT_SRC, "-o", exe] + pc_flags,
                           capture_output=True, text=True, timeout=300)
        check("a program builds from the pkg-config flags alone",
              r.returncode == 0 and c.returncode == 0
              and "-I" + incdir[:-len("/microstream")] in pc_flags,
              " ".join(pc_flags) + r.stderr + c.stderr)
        if c.returncode != 0:
            return

        hub = subprocess.Popen([os.path.join(bindir, "microstream-hub"),
                                "--listen", "127.0.0.1:0", "--no-store",
                                "--log-level", "warn"], env=env,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        line = hub.stdout.readline()
        port = int(line.rsplit(":", 1)[1]) if "listening on" in line else 1
        r = subprocess.run([exe, "ws://127.0.0.1:%d/ws" % port,
                            "installed-echo"], env=env, capture_output=True,
                           text=True, timeout=60)
        check("it calls itself through the installed hub",
              r.returncode == 0 and
              r.stdout.strip() == "echo: ping from installed-echo",
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
        shutil.rmtree(stage, ignore_errors=True)


print("1..%d" % PLAN)
main()
sys.exit(1 if failed or n != PLAN else 0)
