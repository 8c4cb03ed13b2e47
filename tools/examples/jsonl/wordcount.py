#!/usr/bin/env python3
"""A toolplane jsonl worker: one request per line on stdin, one answer per line on stdout."""
import json, os, sys

def wordcount(text=""):
    return {"words": len(text.split()), "chars": len(text), "pid": os.getpid()}

for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue  # this worker answers each call before it reads the next
    try:
        answer = {"id": req["id"], "output": wordcount(**req["input"])}
    except Exception as e:  # a bad input is this call's error, not the worker's end
        answer = {"id": req["id"], "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(answer), flush=True)
