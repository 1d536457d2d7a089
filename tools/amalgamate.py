#!/usr/bin/env python3
"""Write microstream as one header (an "amalgamation").

    amalgamate.py --root SRCDIR -o microstream.h [-I DIR]... [--depfile F] \
        include/microstream/microstream.h include/microstream/ms_posix.h \
        lib/ms_err.c ... BUILD/ms_viewer_page.c transports/posix/ms_loop.c ...

Inputs ending in .h are the public headers, the others are sources; each
keeps its order. The output holds the public headers (declarations) and, under
`#ifdef MICROSTREAM_IMPLEMENTATION`, every source file given, in order.
The project's own includes (`#include "x.h"` and `#include
<microstream/x.h>`) are inlined the first time they are met and dropped
after that; every other include (libc, <wslay/wslay.h>, <msgpack.h>,
<nettle/...>, <jansson.h>, <cjson/cJSON.h>) is left as it is, so the header needs those
libraries at compile and link time like the library does.

The sources were written as separate translation units, so in one unit
two files may define the same file-local name (a static helper, a type,
a macro), and the program's own file that holds the implementation may
use one of those names too. So each file's macros are #undef'd after
it, and every file-local name it defines is renamed (name__file) with a
#define/#undef pair around the file. The names that clash between the
library's own files are listed in the output's opening comment and with
--list-clashes.
"""
import argparse
import os
import re
import sys

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
DEFINE_RE = re.compile(r'^\s*#\s*define\s+(\w+)')
# File-scope definitions, in the project's style (clang-format: the
# declaration starts at column 0).
STATIC_RE = re.compile(
    r'^static\s+(?:inline\s+)?[\w\s\*]*?\b(\w+)\s*(?:\(|\[|=|;)')
TAG_RE = re.compile(r'^(?:typedef\s+)?(?:struct|union|enum)\s+(\w+)\s*\{')
TYPEDEF_CLOSE_RE = re.compile(r'^\}\s*(\w+)\s*;')
TYPEDEF_LINE_RE = re.compile(r'^typedef\s[^{;]*?\b(\w+)\s*;')
TYPEDEF_FNPTR_RE = re.compile(r'^typedef\s[^{;(]*\(\s*\*\s*(\w+)\s*\)')


class Amalgamator:
    def __init__(self, root, include_dirs):
        self.root = os.path.abspath(root)
        self.include_dirs = [os.path.abspath(d) for d in include_dirs]
        self.seen = set()
        self.out = []

    def rel(self, path):
        """A path for comments and #line: relative to the source root, or
        just the file name for generated files (no machine paths)."""
        p = os.path.abspath(path)
        build = os.getcwd()  # meson runs generators from the build root
        if build != self.root and p.startswith(build + os.sep):
            return os.path.basename(p)
        if p.startswith(self.root + os.sep):
            return os.path.relpath(p, self.root)
        return os.path.basename(p)

    def resolve(self, kind, name, from_dir):
        """The file of one of the project's own includes, or None."""
        if kind == '"':
            cand = [os.path.join(from_dir, name)]
            cand += [os.path.join(d, name) for d in self.include_dirs]
        elif name.startswith('microstream/'):
            cand = [os.path.join(d, name) for d in self.include_dirs]
        else:
            return None
        for c in cand:
            if os.path.isfile(c):
                return os.path.realpath(c)
        if kind == '"':
            raise SystemExit('amalgamate: cannot find "%s" (from %s)'
                             % (name, self.rel(from_dir)))
        return None

    def headers_reached(self, paths):
        """Every project header the given files include, transitively."""
        found, todo = set(), list(paths)
        while todo:
            path = os.path.realpath(todo.pop())
            with open(path, encoding='utf-8') as f:
                for line in f:
                    m = INCLUDE_RE.match(line)
                    if not m:
                        continue
                    t = self.resolve(m.group(1), m.group(2),
                                     os.path.dirname(path))
                    if t is not None and t not in found:
                        found.add(t)
                        todo.append(t)
        return found | {os.path.realpath(p) for p in paths
                        if p.endswith('.h')}

    def emit_file(self, path):
        path = os.path.realpath(path)
        if path in self.seen:
            return
        self.seen.add(path)
        name = self.rel(path)
        self.out.append('/* ---- %s ---- */\n' % name)
        self.out.append('#line 1 "%s"\n' % name)
        with open(path, encoding='utf-8') as f:
            lines = f.readlines()
        for i, line in enumerate(lines):
            m = INCLUDE_RE.match(line)
            if m:
                target = self.resolve(m.group(1), m.group(2),
                                      os.path.dirname(path))
                if target is not None:
                    if target not in self.seen:
                        self.emit_file(target)
                        self.out.append('#line %d "%s"\n' % (i + 2, name))
                    else:
                        self.out.append('\n')  # keep line numbers right
                    continue
            self.out.append(line)
        if lines and not lines[-1].endswith('\n'):
            self.out.append('\n')


def file_locals(path):
    """Names a source file defines at file scope that could collide with
    another file's in one translation unit, and the macros it defines."""
    names, macros = set(), []
    with open(path, encoding='utf-8') as f:
        for line in f:
            m = DEFINE_RE.match(line)
            if m:
                if m.group(1) not in macros:
                    macros.append(m.group(1))
                continue
            for rx in (STATIC_RE, TAG_RE, TYPEDEF_CLOSE_RE, TYPEDEF_FNPTR_RE,
                       TYPEDEF_LINE_RE):
                m = rx.match(line)
                if m:
                    names.add(m.group(1))
                    break
    return names, macros


def stem(path):
    return re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--root', required=True, help='project source root')
    ap.add_argument('-o', '--output', required=True)
    ap.add_argument('inputs', nargs='+',
                    help='public headers (.h) and sources, in order')
    ap.add_argument('--depfile', help='write the files read, for ninja')
    ap.add_argument('-I', dest='include_dirs', action='append', default=[],
                    help='where the project\'s own includes are looked up')
    ap.add_argument('--list-clashes', action='store_true')
    args = ap.parse_args()
    args.header = [f for f in args.inputs if f.endswith('.h')]
    args.source = [f for f in args.inputs if not f.endswith('.h')]

    root = os.path.abspath(args.root)
    include_dirs = args.include_dirs or [os.path.join(root, 'include')]
    am = Amalgamator(root, include_dirs)

    # Names a header mentions are shared (the body of an opaque public
    # struct, a member name): never renamed.
    shared = set()
    for h in am.headers_reached(args.header + args.source):
        with open(h, encoding='utf-8') as f:
            code = f.read()
        # Words in comments name nothing: only code counts.
        code = re.sub(r'/\*.*?\*/', ' ', code, flags=re.S)
        code = re.sub(r'//[^\n]*', ' ', code)
        shared.update(re.findall(r'\w+', code))

    # Which file-local names clash between sources.
    owners = {}
    info = {}
    for src in args.source:
        names, macros = file_locals(src)
        names -= shared
        info[src] = (names, macros)
        for n in names:
            owners.setdefault(n, []).append(src)
    clashes = {n: srcs for n, srcs in owners.items() if len(srcs) > 1}
    if args.list_clashes:
        for n in sorted(clashes):
            print('%s: %s' % (n, ' '.join(am.rel(f) for f in clashes[n])))

    head = [
        '/*\n',
        ' * microstream, single-header form. Generated by tools/amalgamate.py;\n',
        ' * do not edit.\n',
        ' *\n',
        ' * Include it anywhere for the declarations. In exactly one C file,\n',
        ' * define MICROSTREAM_IMPLEMENTATION before including it (first, before\n',
        ' * any system header) to compile the library there. Link with\n',
        ' * -lwslay -lnettle -lmsgpackc -ljansson -lcjson -lcares (the\n',
        ' * implementation uses them; -lcares for name resolution in the POSIX\n',
        ' * transport).\n',
    ]
    head.append(' *\n * File-local names are renamed name__file; these clashed between\n'
                ' * the library\'s files:\n')
    for n in sorted(clashes):
        head.append(' *   %s: %s\n' % (n, ', '.join(am.rel(f)
                                                  for f in clashes[n])))
    head.append(' */\n')
    am.out.extend(head)
    am.out.append('#if defined(MICROSTREAM_IMPLEMENTATION) && '
                  '!defined(_GNU_SOURCE)\n#define _GNU_SOURCE\n#endif\n')
    am.out.append('#ifndef MICROSTREAM_AMALGAMATION_H\n'
                  '#define MICROSTREAM_AMALGAMATION_H\n')
    for h in args.header:
        am.emit_file(h)
    am.out.append('#endif /* MICROSTREAM_AMALGAMATION_H */\n\n')

    am.out.append('#if defined(MICROSTREAM_IMPLEMENTATION) && '
                  '!defined(MICROSTREAM_IMPLEMENTATION_DONE)\n'
                  '#define MICROSTREAM_IMPLEMENTATION_DONE\n')
    for src in args.source:
        names, macros = info[src]
        mine = [(n, '%s__%s' % (n, stem(src))) for n in sorted(names)]
        for n, new in mine:
            am.out.append('#define %s %s\n' % (n, new))
        am.emit_file(src)
        # What a source file defines for itself ends with it.
        for n, _ in mine:
            am.out.append('#undef %s\n' % n)
        for mac in macros:
            am.out.append('#undef %s\n' % mac)
    am.out.append('#endif /* MICROSTREAM_IMPLEMENTATION */\n')

    tmp = args.output + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(am.out)
    os.replace(tmp, args.output)
    if args.depfile:
        with open(args.depfile, 'w', encoding='utf-8') as f:
            deps = ' '.join(p.replace(' ', '\\ ') for p in sorted(am.seen))
            f.write('%s: %s\n' % (args.output.replace(' ', '\\ '), deps))
    return 0


if __name__ == '__main__':
    sys.exit(main())
