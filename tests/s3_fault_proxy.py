"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a real S3 endpoint (a ``moto_server``); stdlib only.

For a fraction of requests (``rate``, drawn from a seeded generator) it answers instead of S3 with one of:

* ``"500"``: ``500 InternalError`` with S3's XML error body;
* ``"503"``: ``503 SlowDown`` (S3's throttling answer);
* ``"drop"``: closes the connection without an answer, after reading the request;
* ``"stall"``: holds the connection ``stall_s`` seconds without a byte, then closes it.

``rule(method, path) -> kind | None`` adds faults that always happen to matching requests (e.g. every DELETE under
a prefix), for tests of errors that outlast the client's retries. Requests that get no fault are forwarded to the
upstream unchanged and its answer is passed back. ``counts`` says how many requests came and how many faults of
each kind were injected. Used as a context manager, or ``start()`` / ``stop()``.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

KINDS = ("500", "503", "drop", "stall")
_ERRORS = {"500": (500, "InternalError", "We encountered an internal error. Please try again."),
           "503": (503, "SlowDown", "Please reduce your request rate.")}
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.0, kinds: tuple[str, ...] = KINDS, seed: int = 0,
                 stall_s: float = 5.0, rule: Callable[[str, str], str | None] | None = None):
        if not 0 <= rate <= 1 or not set(kinds) <= set(KINDS):
            raise ValueError(f"rate must be in [0, 1] and kinds among {KINDS} (got {rate}, {kinds})")
        self.upstream = upstream.split("://", 1)[1].rstrip("/")
        self.rate, self.kinds, self.stall_s, self.rule = rate, tuple(kinds), stall_s, rule
        self.counts: Counter = Counter()
        self._random, self._lock = random.Random(seed), threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def faults(self) -> int:
        return sum(n for k, n in self.counts.items() if k in KINDS)

    def choose(self, method: str, path: str) -> str | None:
        """The fault for this request, or None to forward it."""
        with self._lock:
            self.counts["requests"] += 1
            kind = self.rule(method, path) if self.rule else None
            if kind is None and self.rate and self._random.random() < self.rate:
                kind = self._random.choice(self.kinds)
            if kind is not None:
                self.counts[kind] += 1
            return kind


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:  # then trailer lines, up to an empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size + 2)[:size]
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _any(self) -> None:
        body = self._body()
        kind = self.owner.choose(self.command, self.path)
        if kind in ("drop", "stall"):
            if kind == "stall":
                time.sleep(self.owner.stall_s)
            self.close_connection = True
            return
        if kind is not None:
            status, code, message = _ERRORS[kind]
            self._answer(status, {"Content-Type": "application/xml"},
                         (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}'
                          f"</Message><RequestId>fault-proxy</RequestId></Error>").encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.owner.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            got = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            got = {("Content-Length" if k.lower() == "content-length" else k): v for k, v in got.items()}
            self._answer(resp.status, got, data)
        finally:
            conn.close()

    def _answer(self, status: int, headers: dict, data: bytes) -> None:
        self.send_response_only(status)
        for k, v in headers.items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        # a HEAD answer's Content-Length is the object's size (what the client reads), not this empty body's
        head = self.command == "HEAD" and "Content-Length" in headers
        self.send_header("Content-Length", headers["Content-Length"] if head else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any
