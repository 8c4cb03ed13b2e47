"""A burst of 500 calls from one client with max_inflight = 8 and
queue = 1000: every call answered, none refused; the queue's depth (peak
sampled from /metrics) and wait (its sum and count) as the server reports
them.

    python3 server/bench/clients_queue.py target/release/toolplane

Loopback only; a temporary config and data dir. Each call is `sleep` for
20 ms, so the burst takes at least 500 x 20 ms / 8 = 1.25 s.
"""

import hashlib
import http.client
import json
import re
import subprocess
import sys
import tempfile
import threading
import time

CALLS, SLOTS, MS = 500, 8, 20


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def metrics(port: int) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics", headers={"Authorization": "Bearer ops"})
    return c.getresponse().read().decode()


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/toolplane"
    with tempfile.TemporaryDirectory() as tmp:
        config = f"{tmp}/toolplane.toml"
        with open(config, "w") as f:
            f.write(
                f'[[clients]]\nname = "burst"\ntoken_sha256 = "{digest("burst")}"\ntools = ["sleep"]\n'
                f'max_inflight = {SLOTS}\nqueue = 1000\nqueue_timeout = "60s"\n'
                f'[[clients]]\nname = "ops"\ntoken_sha256 = "{digest("ops")}"\ntools = []\nmetrics = true\n'
            )
        proc = subprocess.Popen(
            [binary, "serve", "--http", "127.0.0.1:0", "--data", f"{tmp}/data", "--config", config],
            stderr=subprocess.PIPE, text=True,
        )
        try:
            port = None
            for line in proc.stderr:
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    port = int(m.group(1))
                    break
            assert port, "the server did not start"
            statuses: list[int] = []
            lock = threading.Lock()
            go = threading.Barrier(CALLS + 1)

            def call() -> None:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                c.connect()
                go.wait()
                c.request("POST", "/v1/tools/sleep/call", body=json.dumps({"ms": MS}),
                          headers={"Authorization": "Bearer burst", "Content-Type": "application/json"})
                status = c.getresponse().status
                with lock:
                    statuses.append(status)

            threads = [threading.Thread(target=call) for _ in range(CALLS)]
            for t in threads:
                t.start()
            go.wait()
            started = time.monotonic()
            peak = 0.0
            while any(t.is_alive() for t in threads):
                peak = max(peak, sample(metrics(port), 'toolplane_client_calls_queued{client="burst"}'))
                time.sleep(0.02)
            took = time.monotonic() - started
            m = metrics(port)
            wait_sum = sample(m, 'toolplane_client_queue_wait_seconds_sum{client="burst"}')
            waits = sample(m, 'toolplane_client_queue_wait_seconds_count{client="burst"}')
            ok = statuses.count(200)
            print(f"{CALLS} calls, max_inflight {SLOTS}, {MS} ms each: {ok} answered 200, "
                  f"{len(statuses) - ok} other, in {took:.2f} s (at least {CALLS * MS / SLOTS / 1000:.2f} s)")
            print(f"queue: peak depth sampled {peak:.0f}; {waits:.0f} calls waited, "
                  f"mean wait {wait_sum / max(waits, 1) * 1000:.0f} ms")
            print("\n".join(l for l in m.splitlines() if 'client="burst"' in l and "calls_total" in l))
            assert ok == CALLS, statuses
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
