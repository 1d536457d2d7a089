#!/usr/bin/env python3
"""Fill a man page template's @OPTIONS@ from the program's own --help, so
the page lists every option the program has (and no other).

usage: mkman.py PROGRAM TEMPLATE OUTPUT VERSION
"""
import re
import subprocess
import sys

prog, template, output, version = sys.argv[1:5]
text = subprocess.run([prog, "--help"], capture_output=True, text=True,
                      timeout=60).stdout


def roff(s):
    return s.replace("\\", "\\e").replace("-", "\\-")


items = []
for line in text.splitlines():
    # "  --name ARG  description": the argument follows one space, the
    # description any run of spaces.
    m = re.match(r"^  ((?:-\w, )?--?[\w-]+(?:, --[\w-]+)*(?: (?! )\S+)?)"
                 r"(?:\s+(.*))?$", line)
    if m:
        items.append([m.group(1), m.group(2) or ""])
    elif items and re.match(r"^\s{4,}\S", line):
        items[-1][1] += " " + line.strip()
    elif not line.startswith("  "):
        if items:
            items.append(None)  # the end of one option list
opts = []
for it in items:
    if it is None:
        continue
    flag, desc = it
    opts.append(".TP\n.B %s\n%s" % (roff(flag), roff(desc.strip()) or "."))
page = open(template).read()
page = page.replace("@OPTIONS@", "\n".join(opts)).replace("@VERSION@", version)
open(output, "w").write(page)
