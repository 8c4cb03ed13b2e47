"""Abuse: N MCP `initialize`s (sessions never deleted) against
`toolplane serve`, with an optional config; RSS per session, the cap, and
RSS and the session gauges again after WAIT seconds.

    python3 server/bench/sessions.py target/release/toolplane 1500 $'[server]\nsession_idle = "2s"\n' 4

Loopback only, bounded in count and time.
"""
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time

binary, n = sys.argv[1], int(sys.argv[2])
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write(sys.argv[3] if len(sys.argv) > 3 else "")
cfg.close()
p = subprocess.Popen([binary, "serve", "--http", "127.0.0.1:0", "--config", cfg.name], stderr=subprocess.PIPE, text=True)
for line in p.stderr:
    m = re.search(r"listening on http://(\S+)", line)
    if m:
        addr = m.group(1)
        break
host, port = addr.rsplit(":", 1)


def rss():
    return int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0])


def sessions():
    c = http.client.HTTPConnection(host, int(port))
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    return [l for l in text.splitlines() if l.startswith("toolplane_mcp_sessions")]


init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "abuse", "version": "1"}}})
time.sleep(0.5)
r0 = rss()
c = http.client.HTTPConnection(host, int(port))
codes, t = {}, time.time()
for _ in range(n):
    c.request("POST", "/mcp", init, {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    r = c.getresponse()
    r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
el = time.time() - t
time.sleep(0.5)
r1 = rss()
ok = max(1, codes.get(200, 1))
print(f"{n} initializes in {el:.1f} s: {codes}; RSS {r0} -> {r1} KiB ({(r1 - r0) / ok:.1f} KiB per session); {sessions()}")
if len(sys.argv) > 4:
    time.sleep(float(sys.argv[4]))
    print(f"after {sys.argv[4]} s: RSS {rss()} KiB; {sessions()}")
p.terminate()
p.wait()
