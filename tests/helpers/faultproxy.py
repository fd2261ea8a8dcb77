"""A small loopback HTTP proxy that misbehaves on purpose, for fault-injection tests.

It sits between coffer (or restic) and a real S3 or REST server and, for a chosen share of the
requests, answers 500/503 itself, resets the connection before forwarding, forwards the request
and then resets instead of delivering the answer (the server did the work, the client never hears
of it: the case that makes retried writes prove they are idempotent), or delivers only half of the
answer's body before the reset (a short read the client must notice). A rule can also cut an upload
in the middle: the server receives half the body, then the connection dies.

One request per connection (``Connection: close`` both ways) keeps the relay trivial; the ``Host``
header is passed through untouched, so S3 signatures made for the proxy's address still verify.

    with FaultProxy("127.0.0.1", 9000, rate=0.1, seed=1) as p:
        url = f"http://127.0.0.1:{p.port}"
"""

from __future__ import annotations

import random
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

FAULTS = ("status500", "status503", "reset_before", "reset_after", "truncate_response")
Rule = Callable[[str, str], "str | None"]  # (method, path) -> fault name, or None for the random draw


@dataclass
class Logged:
    method: str
    path: str
    fault: str | None
    status: int | None = None


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    rate: float = 0.0
    seed: int = 0
    faults: tuple[str, ...] = FAULTS
    rule: Rule | None = None
    log: list[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._mu = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def injected(self) -> list[Logged]:
        with self._mu:
            return [e for e in self.log if e.fault]

    # ---------------------------------------------------------------- one request
    def _choose(self, method: str, path: str) -> str | None:
        with self._mu:
            if self.rule is not None:
                forced = self.rule(method, path)
                if forced:
                    return forced
            if self.rate and self._rng.random() < self.rate:
                return self._rng.choice(self.faults)
            return None

    def _serve(self, client: socket.socket) -> None:
        try:
            head, body_start = _read_head(client)
        except (OSError, ValueError):
            client.close()
            return
        lines = head.split(b"\r\n")
        method, path = lines[0].split(b" ")[:2]
        m, p = method.decode(), path.decode()
        headers = [ln for ln in lines[1:] if ln]
        length = 0
        chunked = False
        for ln in headers:
            k, _, v = ln.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
            if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        fault = self._choose(m, p)
        entry = Logged(m, p, fault)
        with self._mu:
            self.log.append(entry)
        if fault == "reset_before":
            _reset(client)
            return
        if any(ln.lower().startswith(b"expect:") and b"100-continue" in ln.lower() for ln in headers):
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # answered here; the server never sees it
            headers = [ln for ln in headers if not ln.lower().startswith(b"expect:")]
        body = body_start
        if chunked:
            body = _read_chunked(client, body)
        else:
            while len(body) < length:
                more = client.recv(min(1 << 20, length - len(body)))
                if not more:
                    client.close()
                    return
                body += more
        if fault in ("status500", "status503"):
            code = 500 if fault == "status500" else 503
            text = b"InternalError" if code == 500 else b"SlowDown"
            msg = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>" + text
                   + b"</Code><Message>injected by the fault proxy</Message></Error>")
            reason = b"Internal Server Error" if code == 500 else b"Service Unavailable"
            client.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                           b"Connection: close\r\n\r\n" % (code, reason, len(msg)) + msg)
            entry.status = code
            client.close()
            return
        kept = [ln for ln in headers if not ln.lower().startswith((b"connection:", b"keep-alive:"))]
        out_head = b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"
        up = socket.create_connection((self.upstream_host, self.upstream_port), timeout=60)
        try:
            if fault == "cut_upload":
                up.sendall(out_head + body[: max(1, len(body) // 2)])
                _reset(up)
                _reset(client)
                return
            up.sendall(out_head + body)
            resp = bytearray()
            while True:
                chunk = up.recv(1 << 20)
                if not chunk:
                    break
                resp += chunk
        finally:
            up.close()
        if fault == "reset_after":
            _reset(client)
            return
        if fault == "truncate_response":  # the answer starts, then the connection dies mid-body
            head, sep, body = bytes(resp).partition(b"\r\n\r\n")
            try:
                client.sendall(_force_close(head + sep) + body[: len(body) // 2])
            except OSError:
                pass
            _reset(client)
            return
        try:
            entry.status = int(resp.split(b" ", 2)[1])
        except (IndexError, ValueError):
            pass
        try:
            client.sendall(_force_close(bytes(resp)))
        except OSError:
            pass
        client.close()


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ValueError("connection closed before a request head")
        buf += chunk
        if len(buf) > 1 << 20:
            raise ValueError("request head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _read_chunked(s: socket.socket, buf: bytes) -> bytes:
    """Read a chunked body completely; return it still chunk-encoded (it is forwarded as is)."""
    while not buf.endswith(b"0\r\n\r\n"):
        more = s.recv(1 << 20)
        if not more:
            break
        buf += more
    return buf


def _force_close(resp: bytes) -> bytes:
    head, sep, body = resp.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith((b"connection:", b"keep-alive:"))]
    return b"\r\n".join([*lines, b"Connection: close"]) + sep + body


def _reset(s: socket.socket) -> None:
    """Close with RST instead of FIN: what a dropped connection looks like to the peer."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()
