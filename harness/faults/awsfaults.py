"""A fault-injecting HTTP proxy in front of a moto server: record every AWS call, fail or slow down chosen ones.

moto has no fault injection of its own. Pointing `AWS_ENDPOINT_URL` at a `FaultProxy` instead of moto lets a test
see which AWS actions a vmlab command makes, in order, and make any one of them fail with a real AWS error
response (moto never sees a failed call, so it has no effect) or hang long enough to send SIGINT mid-wait.

Example::

    with FaultProxy(moto.endpoint) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        run_vmlab("up")                          # a clean run: learn the calls
        for index in range(len(proxy.calls)):    # then fail each call in turn
            moto.reset(); proxy.reset()
            proxy.fail_call(index)
            run_vmlab("up")                      # and assert nothing leaked
        proxy.fail("CreateSecurityGroup", nth=2, code="RequestLimitExceeded", status=503)
        proxy.delay("DescribeImages", 30)        # then: proxy.wait_for("DescribeImages"); send SIGINT
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

# Per-connection headers: they describe one hop, so the proxy sets its own instead of forwarding them.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect", "content-length"}
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")


@dataclass
class Call:
    """One request seen by the proxy. `action` is "DescribeRegions" (query protocol), "GetParameter" (JSON
    protocol, from `X-Amz-Target`) or "PUT /bucket/key" (REST: method and path); `service` comes from the SigV4
    credential scope ("ec2", "ssm", "sts", "s3"; "" when unsigned). `status` is 0 while the call is in flight."""

    index: int
    service: str
    action: str
    method: str
    path: str
    status: int = 0
    injected: bool = False


@dataclass(frozen=True)
class _Fault:
    code: str
    status: int
    message: str | None


class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1 that forwards every request unchanged to `upstream` (a moto
    endpoint) except the ones a rule fails. `calls` is the list of action names in arrival order, `records` the
    matching `Call`s. Rules stay until `reset()`; a context manager starts and stops it."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.endpoint = ""
        self.reset()

    # -- rules -------------------------------------------------------------------------------------------

    def fail(self, action: str, nth: int | None = 1, code: str = "InternalError", status: int = 500,
             message: str | None = None) -> None:
        """Answer the `nth` call of `action` from now on (1 = the next one) with an AWS error instead of
        forwarding it; `nth=None` fails every call of it from now on.
        Example: `proxy.fail("RunInstances", code="InsufficientInstanceCapacity", status=400)`."""
        with self._lock:
            seen = self._counts.get(action, 0)
            if nth is None:
                self._fail_from[action] = (seen + 1, _Fault(code, status, message))
            else:
                self._action_faults[(action, seen + nth)] = _Fault(code, status, message)

    def fail_call(self, index: int, code: str = "InternalError", status: int = 500,
                  message: str | None = None) -> None:
        """Fail the call that lands at `calls[index]` (0-based, counting every call), whatever its action."""
        with self._lock:
            self._index_faults[index] = _Fault(code, status, message)

    def delay(self, action: str, seconds: float, nth: int | None = None) -> None:
        """Hold every call of `action` for `seconds` before answering it (cut short by `stop()`); with `nth`, only
        the nth call of it from now on (1 = the next one)."""
        with self._lock:
            if nth is None:
                self._delays[action] = seconds
            else:
                self._nth_delays[(action, self._counts.get(action, 0) + nth)] = seconds

    def wait_for(self, action: str, count: int = 1, timeout: float = 30.0) -> bool:
        """Block until `count` calls of `action` have arrived (before any delay); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._counts.get(action, 0) >= count, timeout)

    def reset(self) -> None:
        """Forget recorded calls, counters, faults and delays."""
        with self._lock:
            self.records: list[Call] = []
            self._counts: dict[str, int] = {}
            self._action_faults: dict[tuple[str, int], _Fault] = {}  # (action, its nth call since reset)
            self._fail_from: dict[str, tuple[int, _Fault]] = {}  # action -> (from its nth call on, fault)
            self._index_faults: dict[int, _Fault] = {}
            self._delays: dict[str, float] = {}
            self._nth_delays: dict[tuple[str, int], float] = {}  # (action, its nth call since reset)

    @property
    def calls(self) -> list[str]:
        with self._lock:
            return [call.action for call in self.records]

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        self._stopping.set()
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler threads -------------------------------------------------------------------------

    def _arrive(self, call: Call) -> tuple[_Fault | None, float]:
        with self._lock:
            call.index = len(self.records)
            self.records.append(call)
            n = self._counts[call.action] = self._counts.get(call.action, 0) + 1
            start, always = self._fail_from.get(call.action, (0, None))
            fault = (self._index_faults.get(call.index) or self._action_faults.get((call.action, n))
                     or (always if start and n >= start else None))
            call.injected = fault is not None
            self._lock.notify_all()
            return fault, self._nth_delays.get((call.action, n), self._delays.get(call.action, 0.0))


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects
    timeout = 60  # idle keep-alive connections from clients go away eventually

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, each answer waits ~40 ms on a delayed ACK
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, then the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _identify(self, body: bytes) -> Call:
        split = urlsplit(self.path)
        auth = self.headers.get("Authorization", "") + " " + split.query.replace("%2F", "/")
        scope = _CREDENTIAL_SCOPE.search(auth)
        service = scope.group(1) if scope else ""
        if target := self.headers.get("X-Amz-Target"):
            action = target.rsplit(".", 1)[-1]
        else:
            form = parse_qs(split.query)
            if "x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
                form.update(parse_qs(body.decode("utf-8", "replace")))
            action = form["Action"][0] if "Action" in form else f"{self.command} {split.path}"
        return Call(0, service, action, self.command, split.path)

    def _handle(self) -> None:
        try:
            self._proxy()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (SIGINT, timeout): nobody to answer
            self.close_connection = True

    def _proxy(self) -> None:
        body = self._read_body()
        call = self._identify(body)
        fault, delay = self.owner._arrive(call)
        if delay:
            self.owner._stopping.wait(delay)
        if fault is not None:
            call.status = fault.status
            self._send(fault.status, *self._error(call, fault))
            return
        upstream = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=300)
        try:
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        upstream.putheader(name, value)
                upstream.putheader("Content-Length", str(len(body)))
                upstream.endheaders(body)
                response = upstream.getresponse()
            except OSError as exc:  # moto is down or hung up: answer like a gateway would
                call.status = 502
                self._send(502, [("Content-Type", "text/plain")], f"FaultProxy: upstream: {exc}".encode())
                return
            call.status = response.status
            self._stream(response)
        finally:
            upstream.close()

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has headers only, or the next response on the connection breaks
            self.wfile.write(payload)

    def _stream(self, response: http.client.HTTPResponse) -> None:
        """Status, headers and body as moto sent them; a body of unknown length is re-chunked."""
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        length = response.getheader("Content-Length")
        chunked = length is None and self.command != "HEAD" and response.status not in (204, 304)
        self.send_header(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", length or "0")))
        self.end_headers()
        while data := response.read(65536):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _error(self, call: Call, fault: _Fault) -> tuple[list[tuple[str, str]], bytes]:
        """The error body botocore expects for the call's protocol, so it raises ClientError with `fault.code`."""
        request_id = str(uuid.uuid4())
        message = fault.message or f"injected by FaultProxy into {call.action} (call {call.index})"
        if "X-Amz-Target" in self.headers:
            payload = json.dumps({"__type": fault.code, "message": message}).encode()
            return [("Content-Type", self.headers.get("Content-Type", "application/x-amz-json-1.1")),
                    ("x-amzn-ErrorType", fault.code), ("x-amzn-RequestId", request_id)], payload
        code, text = escape(fault.code), escape(message)
        if call.service == "ec2":
            xml = (f"<Response><Errors><Error><Code>{code}</Code><Message>{text}</Message></Error></Errors>"
                   f"<RequestID>{request_id}</RequestID></Response>")
        elif call.action.startswith(f"{call.method} "):  # REST XML (S3)
            xml = f"<Error><Code>{code}</Code><Message>{text}</Message><RequestId>{request_id}</RequestId></Error>"
        else:  # other query-protocol services: STS, IAM
            xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{text}</Message></Error>"
                   f"<RequestId>{request_id}</RequestId></ErrorResponse>")
        payload = b'<?xml version="1.0" encoding="UTF-8"?>\n' + xml.encode()
        return [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], payload

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle
