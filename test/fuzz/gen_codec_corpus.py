#!/usr/bin/env python3
"""Writes the seed corpora of the codec and json fuzz targets.

corpus/codec/: MessagePack bytes of every message type of PROTOCOL.md and a
few malformed ones; corpus/json/: the same messages as JSON text plus some
invalid JSON. Run from anywhere; needs the msgpack module.
"""
import json
import os
import struct

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_ID = 2**53 - 1

MESSAGES = {
    "hello": [1, 1, "billing.v2", "secret", {"heartbeat_ms": 5000, "instance": "i-1", "watch": False}],
    "hello_nil_token": [1, 1, "watcher", None],
    "welcome": [2, "hub-7f3a", {"heartbeat_ms": 10000, "max_message": 1048576, "max_pending": 256,
                                "default_timeout_ms": 30000, "max_timeout_ms": 300000, "max_late_ms": 5000}],
    "request": [3, 1, "billing", "invoice.create", {"amount": 12.5, "items": [1, 2, 3]}, 2500, {"late_ms": 1000}],
    "request_max_id": [3, MAX_ID, "a", "e", None, 0],
    "response": [4, 7, {"ok": True, "blob": b"\x00\x01\x02"}],
    "error": [5, 7, "REQUEST_TIMEOUT", "timed out", {"target": "billing", "event": "x", "timeout_ms": 30000}],
    "error_session": [5, 0, "BAD_REQUEST", "HELLO first"],
    "cancel": [6, 7],
    "log": [7, 1700000000000000, 30, "disk almost full", {"disk": "/dev/sda1", "pct": 97}],
    "log_nil_ts": [7, None, 10, "debug"],
    "record": [8, 2, 1001, 1700000000000001, 20, "billing", "paid", {"order": 5}],
    "record_live": [8, 2, 1001, 1700000000000002, 0, "", "live", {}],
    "record_gap": [8, 2, 990, 1700000000000003, 0, "", "gap", {"missed": 12}],
    "subscribe": [9, 2, "logs", {"services": ["billing", "auth"], "min_level": 20, "contains": "paid",
                                 "history": 100, "since_seq": 5}],
    "subscribe_presence": [9, 3, "presence"],
    "unsubscribe": [10, 2],
    "presence": [11, 3, 4, 1700000000000004, "down", "billing", {"reason": "heartbeat"}],
    "ping": [12, 99],
    "pong": [13, 99],
    "trailing": [12, 1, "future", {"x": 1}],
}

MALFORMED = {
    "bad_not_array": msgpack.packb(1),
    "bad_empty": msgpack.packb([]),
    "bad_type99": msgpack.packb([99]),
    "bad_type_str": msgpack.packb(["3", 1]),
    "bad_req_event": msgpack.packb([3, 5, "svc", 7, None, 0, {}]),
    "bad_req_id0": msgpack.packb([3, 0, "svc", "e", None, 0]),
    "bad_log_level0": msgpack.packb([7, 0, 0, "m"]),
    "bad_trailing_bytes": msgpack.packb([12, 1]) + b"\x00",
    "bad_truncated": msgpack.packb(MESSAGES["request"])[:-3],
    "bad_huge_array": b"\x93\x04\x01\xdd\xff\xff\xff\xff",
    "bad_huge_str": b"\x93\x04\x01\xdb\xff\xff\xff\xff" + b"a",
    "bad_deep": b"\x93\x04\x01" + b"\x91" * 40 + b"\x90",
    "bad_reserved": b"\x92\x0c\xc1",
    "odd_types": msgpack.packb([4, 1, [1.5, -(2**63), 2**64 - 1, b"bin", msgpack.ExtType(5, b"ext"),
                                       {1: "int key", (1, 2): "array key"}]], use_bin_type=True),
    "float32": b"\x93\x04\x01" + b"\xca" + struct.pack(">f", 0.1),
}

JSON_EXTRA = {
    "bad_syntax": b"[3, 1, ",
    "bad_utf8": b'[7, 0, 10, "\xff"]',
    "deep": b"[4, 1, " + b"[" * 70 + b"]" * 70 + b"]",
    "escapes": b'[7, 0, 10, "a\\u0000b \\u00e9 \\ud83d\\ude00"]',
    "duplicate_keys": b'[1, 1, "s", null, {"watch": true, "watch": false}]',
    "big_int_string": b'[4, 1, "18446744073709551615"]',
}


def write(sub, name, data):
    d = os.path.join(HERE, "corpus", sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, msg in MESSAGES.items():
        write("codec", name, msgpack.packb(msg, use_bin_type=True))
        jmsg = json.loads(json.dumps(msg, default=lambda b: "AAEC"))
        write("json", name, json.dumps(jmsg, separators=(",", ":")).encode())
    for name, data in MALFORMED.items():
        write("codec", name, data)
    for name, data in JSON_EXTRA.items():
        write("json", name, data)


if __name__ == "__main__":
    main()
