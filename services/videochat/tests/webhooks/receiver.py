"""A webhook endpoint for the integration tests (services/videochat/tests/webhooks.rs).

Every POST is verified with the Standard Webhooks reference library from PyPI
(`standardwebhooks`, not ours) and recorded, verified or not, with the time it arrived.
`GET /received` answers everything recorded, as a JSON list. `POST /control` with
`{"status": 500}` makes every later delivery answer that status (a failing endpoint);
`{"status": 200}` makes it healthy again. A delivery that fails verification is answered 401.

Usage: python receiver.py <whsec_secret> <port>   (port 0: any; the chosen port is printed)
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

SECRET, PORT = sys.argv[1], int(sys.argv[2])
VERIFIER = Webhook(SECRET)
LOCK = threading.Lock()
RECEIVED = []
STATE = {"status": 200}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/received":
            return self.answer(404)
        with LOCK:
            body = json.dumps(RECEIVED).encode()
        self.answer(200, body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/control":
            with LOCK:
                STATE.update(json.loads(body))
            return self.answer(200, b"{}")
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = VERIFIER.verify(body, headers)
            verified, error = True, None
        except Exception as e:  # what the library refuses is recorded, then answered 401
            payload, verified, error = None, False, repr(e)
        with LOCK:
            status = STATE["status"] if verified else 401
            RECEIVED.append(
                {
                    "path": self.path,
                    "id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "verified": verified,
                    "error": error,
                    "payload": payload,
                    "answered": status,
                    "at_ms": int(time.time() * 1000),
                }
            )
        self.answer(status, b"{}")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
