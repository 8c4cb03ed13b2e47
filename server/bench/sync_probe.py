#!/usr/bin/env python3
"""How long this disk takes to make one small append durable: the floor
of `[audit] durability = "before-answer"`, whose answers wait for their
record's `fdatasync`. Writes 200-byte records to a file in DIR (default:
the current directory), one `fdatasync` after each, and prints the
percentiles of the sync alone, for appends to a growing file and for
writes into a file zero-filled beforehand (which spares the file system
a size update per sync).

    python3 server/bench/sync_probe.py [DIR] [COUNT]
"""

import os
import sys
import time

RECORD = b"x" * 200


def probe(path: str, zero_filled: bool, count: int) -> list[float]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if zero_filled:
            os.write(fd, b"\0" * (len(RECORD) * count))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        took = []
        for _ in range(count):
            os.write(fd, RECORD)
            t = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - t)
        return sorted(took)
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    where = sys.argv[1] if len(sys.argv) > 1 else "."
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    path = os.path.join(where, f".sync-probe-{os.getpid()}")
    print(f"fdatasync of one {len(RECORD)}-byte record, {count} times, in {os.path.abspath(where)}")
    for zero_filled in (False, True, False, True):
        t = probe(path, zero_filled, count)
        pct = lambda q: t[min(len(t) - 1, int(len(t) * q))] * 1e3  # noqa: E731
        kind = "into a zero-filled file" if zero_filled else "appended"
        print(
            f"  {kind:24s} p50 {pct(0.5):7.3f} ms  p90 {pct(0.9):7.3f} ms  "
            f"p99 {pct(0.99):7.3f} ms  max {t[-1] * 1e3:7.3f} ms"
        )


if __name__ == "__main__":
    main()
