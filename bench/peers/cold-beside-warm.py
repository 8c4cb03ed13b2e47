"""Sporadic process starts beside warm calls, through `toolplane serve`.

Usage: python3 cold-beside-warm.py PORT

One thread POSTs {} to /v1/tools/xcat/call (an exec tool: a process per
call) every 0.5 s and times each call; the main thread POSTs {"x":1} to
/v1/tools/jecho/call (a warm jsonl worker) on one connection, 2 ms apart,
for 10 s. Prints the warm calls' quantiles and the exec calls' times.
PERF.md, "Process tools limited (issue 29)", has the tools' manifests.
"""
import http.client
import sys
import threading
import time

port = int(sys.argv[1])
stop = False
cold_ms = []


def cold():
    c = http.client.HTTPConnection("127.0.0.1", port)
    while not stop:
        s = time.perf_counter()
        c.request("POST", "/v1/tools/xcat/call", body="{}", headers={"content-type": "application/json"})
        c.getresponse().read()
        cold_ms.append((time.perf_counter() - s) * 1e3)
        time.sleep(0.5)


t = threading.Thread(target=cold)
t.start()
c = http.client.HTTPConnection("127.0.0.1", port)
warm_ms = []
end = time.time() + 10
while time.time() < end:
    s = time.perf_counter()
    c.request("POST", "/v1/tools/jecho/call", body='{"x":1}', headers={"content-type": "application/json"})
    c.getresponse().read()
    warm_ms.append((time.perf_counter() - s) * 1e3)
    time.sleep(0.002)
stop = True
t.join()
warm_ms.sort()


def q(p):
    return warm_ms[min(len(warm_ms) - 1, int(p * len(warm_ms)))]


print(f"warm: n={len(warm_ms)} p50={q(0.5):.2f} p99={q(0.99):.2f} max={warm_ms[-1]:.2f} ms")
print("exec ms:", sorted(round(x, 1) for x in cold_ms))
