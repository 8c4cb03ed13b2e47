#!/usr/bin/env python3
"""An OTLP/HTTP trace sink for the benchmarks: answers every
`POST /v1/traces` 200 with an empty ExportTraceServiceResponse (an empty
protobuf message) and counts requests and bytes, printed on SIGTERM or
Ctrl-C. It does not decode the spans (the e2e tests' receiver does,
tests/e2e/traces.rs); it stands for a collector that keeps up.
    python3 server/bench/otlp_sink.py PORT
"""
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        ok = self.path == "/v1/traces"
        if ok:
            counts["requests"] += 1
            counts["bytes"] += n
        self.send_response(200 if ok else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def report(*_):
    print(f"otlp sink: {counts['requests']} export requests, {counts['bytes']} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, report)
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
try:
    server.serve_forever()
except KeyboardInterrupt:
    report()
