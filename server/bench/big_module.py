"""A WebAssembly module of dense code, N MiB of it: functions of 60
additions each, exporting `_start`. For measuring compile time and memory
(PERF.md, "Reliability under hostile tools and files"):

    python3 server/bench/big_module.py 8 /tmp/big/big.wasm
    printf %s "name = \"big\"\ndescription = \"d\"\n" > /tmp/big/big.toml
    /usr/bin/time -v target/release/toolplane check --tools /tmp/big
"""
import sys
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        if n: out.append(b | 0x80)
        else: out.append(b); return bytes(out)
def sleb(n):
    out = bytearray()
    while True:
        b = n & 0x7f; n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40): out.append(b); return bytes(out)
        out.append(b | 0x80)
def sec(id, payload): return bytes([id]) + leb(len(payload)) + payload
mib = float(sys.argv[1]); out = sys.argv[2]
body = bytes([0]) + b"\x20\x00" + b"".join(b"\x41" + sleb(i) + b"\x6a" for i in range(60)) + b"\x0b"
entry = leb(len(body)) + body
n = max(1, int(mib * 1048576 // len(entry)))
types = sec(1, leb(2) + b"\x60\x01\x7f\x01\x7f" + b"\x60\x00\x00")
funcs = sec(3, leb(n + 1) + b"\x01" + b"\x00" * n)
exports = sec(7, leb(1) + leb(6) + b"_start" + b"\x00" + leb(0))
start_body = bytes([0, 0x0b]); 
code = sec(10, leb(n + 1) + leb(len(start_body)) + start_body + entry * n)
open(out, "wb").write(b"\0asm\x01\0\0\0" + types + funcs + exports + code)
print(n, "functions")
