"""Shared by the Python integration tests: TAP lines, free ports, the
programs of a build, bounded waits, and cleanup of started processes."""
import os
import signal
import socket
import subprocess
import sys
import time

results = []
procs = []


def programs(build):
    """Paths of the programs in a build directory."""
    t = lambda name: os.path.join(build, "tools", name)
    return (t("microstream-hub"), t("ms-req"), t("ms-log"), t("ms-tail"),
            os.path.join(build, "examples", "jwt_service"))


def check(name, cond, detail=""):
    results.append(bool(cond))
    print("%s %d - %s%s" % ("ok" if cond else "not ok", len(results), name,
                            "" if cond else " # " + str(detail)[:600]))
    sys.stdout.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_hub(hub, port, db, *extra):
    """A hub on 127.0.0.1:port with its store in db, once it listens."""
    p = subprocess.Popen([hub, "--listen", "127.0.0.1:%d" % port,
                          "--log-level", "warn", "--store", db] + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    procs.append(p)
    line = p.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError("hub did not start: %r" % line)
    return p


def stop(p):
    """SIGTERM, then SIGKILL if it has not exited within a bound generous
    enough for a busy machine (its exit status tells the caller which)."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(args, input=None, timeout=60, env=None):
    """Run a program without MS_HUB/MS_TOKEN from the caller's environment."""
    e = dict(os.environ)
    e.pop("MS_HUB", None)
    e.pop("MS_TOKEN", None)
    if env:
        e.update(env)
    return subprocess.run(args, input=input, capture_output=True, text=True,
                          timeout=timeout, env=e)


def wait_for(pred, timeout=30.0):
    """Poll pred until it holds (True) or timeout seconds pass (False): a
    bound for things that must happen, generous for a busy machine."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def finish(main):
    """Run main, count a crash as a failure, kill what is left, exit."""
    try:
        main()
    except Exception as e:  # a crash is a failure, not a hang
        check("no exception", False, repr(e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print("1..%d" % len(results))
    sys.exit(0 if all(results) else 1)
