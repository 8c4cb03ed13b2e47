#!/usr/bin/env python3
"""A toolplane jsonl worker: one request per line on stdin, one answer per line on stdout."""
import json, secrets, sys

WORKER = secrets.randbits(48)  # which process answered (each is PID 1 of its own namespace)

def wordcount(text=""):
    return {"words": len(text.split()), "chars": len(text), "worker": WORKER}

for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue  # this worker answers each call before it reads the next
    try:
        answer = {"id": req["id"], "output": wordcount(**req["input"])}
    except Exception as e:  # a bad input is this call's error, not the worker's end
        answer = {"id": req["id"], "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(answer), flush=True)
