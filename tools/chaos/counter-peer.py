#!/usr/bin/env python3
"""A partner stand-in for the chaos scripts that applies each job's effect once.

Every POST is answered 200 and keyed by its `x-syncline-job-id` header: the first
delivery of a job id applies the effect (the id is recorded), later deliveries of the
same id are counted as duplicates and change nothing, as an idempotent partner would.

    GET /stats -> {"deliveries": n, "applied": n, "duplicates": n}
    GET /ids   -> the applied job ids, one a line

Usage: counter-peer.py [DELAY_MS]  (each POST is answered after DELAY_MS, like a
partner's own latency). Prints "listening on PORT" once it accepts connections.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
applied = set()
deliveries = 0
delay = 0.0


class Peer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the workers' HTTP client expects

    def answer(self, body, content_type="application/json"):
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        global deliveries
        self.rfile.read(int(self.headers.get("content-length") or 0))
        job_id = self.headers.get("x-syncline-job-id", "")
        time.sleep(delay)
        with lock:
            deliveries += 1
            applied.add(job_id)
        self.answer("ok", "text/plain")

    def do_GET(self):
        with lock:
            if self.path == "/ids":
                body = "".join(f"{i}\n" for i in sorted(applied))
                return self.answer(body, "text/plain")
            stats = {
                "deliveries": deliveries,
                "applied": len(applied),
                "duplicates": deliveries - len(applied),
            }
        self.answer(json.dumps(stats))

    def log_message(self, *args):
        pass


def main():
    global delay
    delay = (int(sys.argv[1]) if len(sys.argv) > 1 else 0) / 1000
    server = ThreadingHTTPServer(("127.0.0.1", 0), Peer)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
