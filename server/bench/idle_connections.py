"""Abuse: N idle connections against `toolplane serve` (defaults), then
health, metrics and a call at the cap, and again after the header timeout.

    python3 server/bench/idle_connections.py target/release/toolplane 12000

The client needs N + a few open files (`ulimit -n`). Prints one line per
step; loopback only, bounded in count and time.
"""
import http.client
import re
import socket
import subprocess
import sys
import threading
import time

binary, n = sys.argv[1], int(sys.argv[2])
p = subprocess.Popen([binary, "serve", "--http", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
for line in p.stderr:
    m = re.search(r"listening on http://(\S+)", line)
    if m:
        addr = m.group(1)
        break
log = []
threading.Thread(target=lambda: [log.append(l) for l in p.stderr], daemon=True).start()
host, port = addr.rsplit(":", 1)
port = int(port)


def rss():
    return int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0])


def ask(method, path, body=None):
    try:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        return r.status, r.read().decode()
    except OSError as e:
        return repr(e), ""


def conn_metrics(text):
    return [l for l in text.splitlines() if l.startswith("toolplane_http_conn")]


r0 = rss()
socks, failed, t = [], 0, time.time()
for _ in range(n):
    try:
        socks.append(socket.create_connection((host, port), timeout=5))
    except OSError:
        failed += 1
print(f"{len(socks)} idle connections in {time.time() - t:.1f} s ({failed} failed); RSS {r0} -> {rss()} KiB")
time.sleep(1.5)  # longer than a reserve connection may stay silent
print("at the cap: healthz", ask("GET", "/healthz")[0])
st, text = ask("GET", "/metrics")
print("at the cap: metrics", st, conn_metrics(text))
st, text = ask("POST", "/v1/tools/echo/call", "{}")
print("at the cap: a call", st, text[:80])
time.sleep(11)  # the default header timeout is 10 s
st, text = ask("GET", "/metrics")
print(f"after the header timeout: metrics {st} {conn_metrics(text)}; RSS {rss()} KiB")
print("after: a call", ask("POST", "/v1/tools/echo/call", "{}")[0])
for s in socks:
    s.close()
p.terminate()
p.wait()
print("".join(l for l in log if "cap" in l), end="")
