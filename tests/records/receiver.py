"""A real HTTP webhook receiver for tests: verifies signatures, can be down or failing."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.records.webhooks import EVENT_HEADER, SIGNATURE_HEADER, verify_signature


class Receiver:
    """Collects verified events; `fail_with` makes it answer that status instead."""

    def __init__(self, secret: bytes, port: int = 0) -> None:
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.attempts = 0
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner._lock:
                    owner.attempts += 1
                    status = owner.fail_with
                if status is None:
                    if not verify_signature(owner.secret, self.headers.get(SIGNATURE_HEADER, ""),
                                            body, time.time()) or \
                            self.headers.get("Content-Type") != "application/json":
                        status = 401
                        with owner._lock:
                            owner.bad_signatures += 1
                    else:
                        event = json.loads(body)
                        assert event["event"] == self.headers.get(EVENT_HEADER)
                        with owner._lock:
                            owner.events.append(event)
                        status = 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
