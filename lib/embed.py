#!/usr/bin/env python3
"""Turn a file into a C source defining a byte array and its length, so
the hub can serve its page without reading files at run time."""
import sys

def main():
    if len(sys.argv) != 4:
        sys.stderr.write("usage: embed.py INPUT OUTPUT SYMBOL\n")
        return 2
    src, dst, sym = sys.argv[1:]
    data = open(src, "rb").read()
    with open(dst, "w") as out:
        out.write("/* Generated from %s by embed.py; do not edit. */\n" % src.split("/")[-1])
        out.write("#include <stddef.h>\n")
        out.write("const unsigned char %s[] = {\n" % sym)
        for i in range(0, len(data), 16):
            out.write("  " + ", ".join("0x%02x" % b for b in data[i:i + 16]) + ",\n")
        out.write("  0x00\n};\n")
        out.write("const size_t %s_len = %d;\n" % (sym, len(data)))
    return 0

if __name__ == "__main__":
    sys.exit(main())
