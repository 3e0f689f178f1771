"""A minimal HTTP server for the few tests that need answers the emulator is not meant to give (recording raw
headers, a 401 to exactly the first request, ``null`` values).

Loopback only, on a free port, stopped when the ``with`` block ends, also on failure.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler with JSON answers and no access log; subclasses define ``do_GET`` and the like."""

    def read_body(self) -> bytes:
        """The request body (empty when there is none)."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def answer_json(self, status: int, body: dict[str, Any]) -> None:
        """Answer ``status`` with ``body`` as JSON."""
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer_token(self, access_token: str) -> None:
        """Read a token request and grant ``access_token`` for 300 s."""
        self.read_body()
        self.answer_json(200, {"access_token": access_token, "token_type": "Bearer", "expires_in": 300})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port in a thread.

    :return: the server's base URL, ``http://127.0.0.1:<port>``.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
