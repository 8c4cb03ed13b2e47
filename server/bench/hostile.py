"""The fault suite: `toolplane serve` with a hostile tools directory and
data directory, each abuse run while echo calls go on beside it.

    python3 server/bench/hostile.py target/release/toolplane

For each abuse: calls tried, answered (any HTTP answer), lost (no answer
within 30 s, or the connection dropped), its answers by status and the
slowest, and the server's RSS before, at peak and after. Then the echo
calls beside them, sandbox escapes (answers holding a file from outside
the data directory), and how long SIGTERM took. Exit 1 if a call was
lost, a sandbox escaped, an idle server reloaded, or shutdown hung.

Loopback only; the tools and data directories are temporary.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

binary = os.path.abspath(sys.argv[1])
root = tempfile.mkdtemp(prefix="toolplane-hostile-")
tools, data, cache = (os.path.join(root, d) for d in ("tools", "data", "cache"))
for d in (tools, data):
    os.mkdir(d)
# The built-ins as files, and what an attacker with the tools directory adds.
subprocess.run([binary, "tools", "install", tools], check=False, capture_output=True)
if not os.path.exists(os.path.join(tools, "echo.toml")):
    sys.exit("cannot install the built-ins into the tools directory (toolplane tools install)")
sleep_wasm = os.path.join(tools, "sleep.wasm")
for i in range(33):  # 38 manifests, as in the report that found the reload storm
    shutil.copy(os.path.join(tools, "echo.wasm"), os.path.join(tools, f"copy{i}.wasm"))
    open(os.path.join(tools, f"copy{i}.toml"), "w").write(
        f'name = "copy{i}"\ndescription = "echo"\n[input_schema]\ntype = "object"\n')
open(os.path.join(tools, "slow.toml"), "w").write(
    'name = "slow"\ndescription = "sleep, with a directory"\nmodule = "sleep.wasm"\n'
    '[limits]\ntimeout = "1s"\n'
    '[[permissions.dirs]]\nhost = "{data}"\nguest = "/data"\naccess = "read-write"\n'
    '[input_schema]\ntype = "object"\n')
os.mkfifo(os.path.join(tools, "fifo.wasm"))
with open(os.path.join(tools, "big.wasm"), "wb") as f:
    f.truncate(1 << 30)  # 1 GiB, sparse
for name, module in [("m.zero", "/dev/zero"), ("m.fifo", "fifo.wasm"),
                     ("m.passwd", "/etc/passwd"), ("m.big", "big.wasm")]:
    open(os.path.join(tools, f"{name}.toml"), "w").write(
        f'name = "{name}"\ndescription = "d"\nmodule = "{module}"\n')
os.mkfifo(os.path.join(data, "fifo"))
os.symlink("/etc/passwd", os.path.join(data, "passwd-link"))
cfg = os.path.join(root, "toolplane.toml")
open(cfg, "w").write('[pool]\ndata_dir_limit = "64 MiB"\n')

env = dict(os.environ, TOOLPLANE_CACHE_DIR=cache)
started = time.time()
p = subprocess.Popen([binary, "serve", "--http", "127.0.0.1:0", "--tools", tools,
                      "--data", data, "--config", cfg], stderr=subprocess.PIPE, text=True, env=env)
log = []
for line in p.stderr:
    log.append(line)
    m = re.search(r"listening on http://(\S+)", line)
    if m:
        addr = m.group(1)
        break
to_listen = time.time() - started
threading.Thread(target=lambda: log.extend(p.stderr), daemon=True).start()
host, port = addr.rsplit(":", 1)


def rss():
    return int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024


def cpu_s():
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


peak = [0]


def sampler():
    while p.poll() is None:
        try:
            peak[0] = max(peak[0], rss())
        except (OSError, IndexError):  # exited, or a zombie without VmRSS
            return
        time.sleep(0.02)


threading.Thread(target=sampler, daemon=True).start()


def request(method, path, body=None, timeout=30):
    """(status, body) or None when no answer came."""
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        h = {"Content-Type": "application/json"} if body is not None else {}
        c.request(method, path, body, h)
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        c.close()


def call(tool, body, timeout=30):
    if isinstance(body, dict):
        body = json.dumps(body)
    return request("POST", f"/v1/tools/{tool}/call", body, timeout)


rows = []
escapes = [0]


def abuse(name, calls, threads=4):
    """Runs the callables `calls` on `threads` threads; records a row."""
    before = rss()
    peak[0] = before
    results, lock = [], threading.Lock()
    it = iter(calls)

    def run():
        while True:
            with lock:
                f = next(it, None)
            if f is None:
                return
            t = time.time()
            r = f()
            with lock:
                results.append((r, time.time() - t))

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    time.sleep(0.3)
    statuses = {}
    for r, _ in results:
        k = "lost" if r is None else r[0]
        statuses[k] = statuses.get(k, 0) + 1
        if r is not None and b"root:x:0:0" in r[1]:
            escapes[0] += 1
    rows.append(dict(abuse=name, tried=len(results), answered=sum(r is not None for r, _ in results),
                     lost=statuses.get("lost", 0), statuses=statuses,
                     slowest_ms=round(max((d for _, d in results), default=0) * 1000),
                     rss_mb=(before, peak[0], rss())))


# Echo calls beside everything.
echo = {"tried": 0, "answered": 0, "ok": 0}
stop = threading.Event()


def echoer():
    while not stop.is_set():
        r = call("echo", {"n": 1})
        echo["tried"] += 1
        if r is not None:
            echo["answered"] += 1
            echo["ok"] += r[0] == 200


echoers = [threading.Thread(target=echoer) for _ in range(2)]
for t in echoers:
    t.start()

# An idle server: no reload, little CPU (echo calls aside, measured apart).
stop.set()
for t in echoers:
    t.join()
time.sleep(1)
v = lambda: float(re.search(r"^toolplane_registry_version (\S+)", request("GET", "/metrics")[1].decode(), re.M).group(1))
# Settled first: a file tool named like a built-in replaces it once loaded.
last = v()
while True:
    time.sleep(1)
    now = v()
    if now == last:
        break
    last = now
v0, c0 = v(), cpu_s()
time.sleep(10)
idle = dict(version_changes=v() - v0, cpu_pct=round((cpu_s() - c0) / 10 * 100, 2))
stop.clear()
echoers = [threading.Thread(target=echoer) for _ in range(2)]
for t in echoers:
    t.start()

abuse("fs.read of a FIFO in the data directory",
      [lambda: call("fs.read", {"path": "fifo"}) for _ in range(200)])
abuse("a tool sleeping 10 s past its 1 s deadline, with a directory",
      [lambda: call("slow", {"ms": 10000}) for _ in range(8)], threads=8)
abuse("calls to tools whose module is /dev/zero, a FIFO, /etc/passwd, 1 GiB",
      [lambda t=t: call(t, {}) for t in ("m.zero", "m.fifo", "m.passwd", "m.big") for _ in range(25)])
abuse("sandbox escapes: .., absolute, a symlink out",
      [lambda q=q: call("fs.read", {"path": q}) for q in ("../../etc/passwd", "/etc/passwd", "passwd-link",
                                                           "a/../../etc/passwd") for _ in range(50)])
abuse("200 appends of 1 MB (data_dir_limit = 64 MiB)",
      [lambda: call("fs.write", {"path": "big.log", "content": "x" * 1_000_000, "append": True}) for _ in range(200)],
      threads=2)
bad = [b'{"a":"\xff\xfe"}', b'{"a":' + b"[" * 500_000 + b"]" * 500_000 + b"}"]
abuse("invalid UTF-8 and 500k-deep JSON to echo", [lambda b=b: call("echo", b) for b in bad for _ in range(10)])

# Readers and writers of one file.
empty = [0]
reads = [0]
writing = threading.Event()
writing.set()


def writer(content):
    while writing.is_set():
        call("fs.write", {"path": "atomic.txt", "content": content})


def reader():
    while writing.is_set():
        r = call("fs.read", {"path": "atomic.txt"})
        if r and r[0] == 200:
            reads[0] += 1
            n = json.loads(r[1])["bytes"]
            if n not in (100, 65536):
                empty[0] += 1


call("fs.write", {"path": "atomic.txt", "content": "b" * 100})
ws = [threading.Thread(target=writer, args=(c,)) for c in ("a" * 65536, "b" * 100)]
rs = [threading.Thread(target=reader) for _ in range(2)]
for t in ws + rs:
    t.start()
time.sleep(3)
writing.clear()
for t in ws + rs:
    t.join()

stop.set()
for t in echoers:
    t.join()
tools_list = request("GET", "/v1/tools")[1]
t = time.time()
p.terminate()
try:
    p.wait(30)
    shutdown_s = round(time.time() - t, 2)
except subprocess.TimeoutExpired:
    p.kill()
    shutdown_s = None
# kill -9 while 100 files are being rewritten: each must hold its old
# content or its new one, never an empty or partial file. (The appends'
# file goes first: the data directory is at its limit.)
du = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs
         if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)))
os.remove(os.path.join(data, "big.log"))
p = subprocess.Popen([binary, "serve", "--http", "127.0.0.1:0", "--tools", tools,
                      "--data", data, "--config", cfg], stderr=subprocess.PIPE, text=True, env=env)
for line in p.stderr:
    m = re.search(r"listening on http://(\S+)", line)
    if m:
        host, port = m.group(1).rsplit(":", 1)
        break
threading.Thread(target=lambda: p.stderr.read(), daemon=True).start()
for i in range(100):
    call("fs.write", {"path": f"k/{i}", "content": "o" * 100, "create_dirs": True})
killing = threading.Event()


def rewriter(k):
    while not killing.is_set():
        for i in range(k, 100, 4):
            call("fs.write", {"path": f"k/{i}", "content": "n" * 65536}, timeout=5)


ks = [threading.Thread(target=rewriter, args=(k,), daemon=True) for k in range(4)]
for t in ks:
    t.start()
time.sleep(1.5)
p.kill()
p.wait()
killing.set()
sizes = [os.path.getsize(os.path.join(data, "k", str(i))) for i in range(100)]
torn = sum(n not in (100, 65536) for n in sizes)
rewritten = sum(n == 65536 for n in sizes)

print(f"serve listened {to_listen:.2f} s after start (tools directory: 1 GiB module, /dev/zero, a FIFO, /etc/passwd)")
print(f"idle 10 s with {len([f for f in os.listdir(tools) if f.endswith('.toml')])} manifests: "
      f"{idle['version_changes']:.0f} registry changes, {idle['cpu_pct']}% of a core")
print("| abuse | tried | answered | lost | answers | slowest | RSS before / peak / after |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    st = ", ".join(f"{k}: {n}" for k, n in sorted(r["statuses"].items(), key=str))
    print(f"| {r['abuse']} | {r['tried']} | {r['answered']} | {r['lost']} | {st} | {r['slowest_ms']} ms | "
          f"{r['rss_mb'][0]} / {r['rss_mb'][1]} / {r['rss_mb'][2]} MiB |")
print(f"echo beside them: {echo['tried']} tried, {echo['answered']} answered, {echo['ok']} ok, "
      f"{echo['tried'] - echo['answered']} lost")
print(f"readers of a file rewritten 64 KiB / 100 B: {reads[0]} reads, {empty[0]} saw neither whole content")
print(f"sandbox escapes: {escapes[0]}; /etc/passwd's content in GET /v1/tools: {b'root:x' in tools_list}")
print(f"data directory after: {du / 1048576:.1f} MiB (limit 64 MiB)")
print(f"SIGTERM to exit: {shutdown_s} s")
print(f"kill -9 while 100 files were rewritten: {torn} of 100 neither old nor new ({rewritten} new, {100 - rewritten - torn} old)")
shutil.rmtree(root, ignore_errors=True)
lost = sum(r["lost"] for r in rows) + echo["tried"] - echo["answered"]
ok = (lost == 0 and escapes[0] == 0 and idle["version_changes"] == 0 and shutdown_s is not None
      and empty[0] == 0 and torn == 0 and rewritten > 0 and b"root:x" not in tools_list)
sys.exit(0 if ok else 1)
