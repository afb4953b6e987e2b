"""A small EC2 instance metadata service (IMDSv2 only) on 127.0.0.1 for the agent's spot-notice tests.

`PUT /latest/api/token` hands out a token; every GET must carry it in `X-aws-ec2-metadata-token` (401 without).
Paths answer 404 until a test posts a notice.

Example::

    with ImdsEmulator() as imds:
        os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.endpoint
        imds.set("/latest/meta-data/spot/instance-action", '{"action": "stop", "time": "..."}')
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImdsEmulator:
    def __init__(self) -> None:
        self.paths: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str, bool]] = []  # method, path, had a valid token
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    emulator.requests.append(("PUT", self.path, False))
                    self._send(400)
                    return
                token = secrets.token_urlsafe(16)
                emulator.tokens.add(token)
                emulator.requests.append(("PUT", self.path, True))
                self._send(200, token)

            def do_GET(self) -> None:  # noqa: N802
                ok = self.headers.get("X-aws-ec2-metadata-token", "") in emulator.tokens
                emulator.requests.append(("GET", self.path, ok))
                if not ok:
                    self._send(401)
                elif self.path in emulator.paths:
                    self._send(200, emulator.paths[self.path])
                else:
                    self._send(404, "Not Found")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def set(self, path: str, body: str) -> None:
        self.paths[path] = body

    def __enter__(self) -> ImdsEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
