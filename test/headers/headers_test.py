#!/usr/bin/env python3
"""Every public header compiles on its own as strict C99 and as C11
(-pedantic-errors -Wall -Wextra -Werror): users may build with either.
TAP output. Usage: headers_test.py INCLUDE_DIR CC [CC ARGS...]"""
import os
import subprocess
import sys
import tempfile

# Headers of the loop adapters need their event library's headers; a
# machine without one skips that header.
NEEDS = {"ms_libuv.h": "uv.h", "ms_libev.h": "ev.h",
         "ms_libevent.h": "event2/event.h"}


def main():
    inc, cc = sys.argv[1], sys.argv[2:]
    headers = sorted(h for h in os.listdir(os.path.join(inc, "microstream"))
                     if h.endswith(".h"))
    cases = [(h, std) for h in headers for std in ("c99", "c11")]
    print("1..%d" % len(cases))
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for i, (h, std) in enumerate(cases, 1):
            src = os.path.join(work, "h.c")
            with open(src, "w") as f:
                f.write("#include <microstream/%s>\nint main(void) { return 0; }\n" % h)
            need = NEEDS.get(h)
            if need:
                probe = os.path.join(work, "p.c")
                with open(probe, "w") as f:
                    f.write("#include <%s>\n" % need)
                if subprocess.run(cc + ["-D_DEFAULT_SOURCE", "-fsyntax-only", probe],
                                  capture_output=True).returncode != 0:
                    print("ok %d - %s as %s # SKIP no %s" % (i, h, std, need))
                    continue
            r = subprocess.run(cc + ["-std=" + std, "-pedantic-errors", "-Wall",
                                     "-Wextra", "-Werror", "-D_DEFAULT_SOURCE",
                                     "-I", inc, "-fsyntax-only", src],
                               capture_output=True, text=True)
            if r.returncode == 0:
                print("ok %d - %s as %s" % (i, h, std))
            else:
                failed += 1
                print("not ok %d - %s as %s" % (i, h, std))
                for line in r.stderr.splitlines()[:10]:
                    print("#   " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
