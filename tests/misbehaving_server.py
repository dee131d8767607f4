"""A real OpenAI-compatible HTTP server on 127.0.0.1 that breaks its streams on purpose.

The request's ``model`` names the fault (see ``REPLIES``), or with ``model="by-message"`` the last chat
message does (a chat session can then warm up, and break later); every reply is written byte by byte over
a real socket (HTTP/1.1, chunked), so the client sees exactly what a broken server would send.
Each reply is bounded in time (the keep-alive and loop ones stop after ``KEEPALIVE_S``; the drip one
sends its ``max_tokens`` pieces ``DRIP_S`` apart, at most ``KEEPALIVE_S`` long).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEEPALIVE_S = 20.0
DRIP_S = 1.0  # "drip": a well-formed reply of max_tokens pieces, one every DRIP_S seconds
LOOP_S = 0.02  # "loop": the same phrase again every LOOP_S seconds
CUT = object()  # drop the connection here, mid-body (no terminating chunk)


def event(obj) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def piece(text: str, finish: str | None = None) -> bytes:
    return event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text},
                                                                   "finish_reason": finish}]})


DONE = b"data: [DONE]\n\n"
USAGE = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
REPLIES = {
    "good": [piece("Hello"), piece(" world", "stop"), USAGE, DONE],
    # valid, if unusual: a comment, an event spread over two data lines with other fields, [DONE] without its blank line
    "odd-but-valid": [b": ping\n\n", b'event: message\nid: 1\ndata: {"choices": [{"delta":\ndata: {"content": "Hello"}}]}\n\n',
                      piece(" world", "stop"), b"data: [DONE]\n"],
    "finish-without-done": [piece("Hello"), piece(" world", "stop")],  # as `transformers serve` ends its streams
    "malformed": [piece("Hello"), b"data: {not json}\n\n", piece(" world", "stop"), DONE],
    "non-object": [piece("Hello"), b'data: [" world"]\n\n', DONE],
    "no-done": [piece("Hello")],
    "cut-body": [piece("Hello"), CUT],
    "cut-json": [piece("Hello"), b'data: {"choices": [{"delta": {"content": " wor'],
    "cut-json-socket": [piece("Hello"), b'data: {"choices": [{"delta": {"content": " wor', CUT],
    "error-object": [piece("Hello"), event({"error": {"message": "CUDA out of memory", "code": 500}})],
    "bad-choice": [piece("Hello"), event({"choices": [{"delta": {"content": 42}}]}), DONE],
    "after-done": [piece("Hello"), DONE, piece(" again")],
    "cut-char": [piece("Paris "), piece("\ufffd", "length"), DONE],
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fault = body["model"]
        if fault == "by-message":  # the last chat message names the fault; anything else is answered well
            asked = body.get("messages", [{}])[-1].get("content")
            fault = asked if asked in REPLIES or asked in ("plain-json", "plain-text", "keepalive") else "good"
        self.close_connection = True
        if fault == "plain-json":
            reply = json.dumps({"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}]})
            self._headers("application/json", length=len(reply))
            self.wfile.write(reply.encode())
            return
        if fault == "plain-text":
            self._headers("text/plain", length=12)
            self.wfile.write(b"Hello world\n")
            return
        self._headers("text/event-stream")
        if fault == "keepalive":
            self._chunk(piece("Hello"))
            stop = time.monotonic() + KEEPALIVE_S
            try:
                while time.monotonic() < stop:
                    self._chunk(b": keep-alive\n\n")
                    time.sleep(0.05)
            except OSError:  # the client gave up: what we want
                return
            self._chunk(DONE)
            self._chunk(b"")
            return
        if fault == "drip":
            self._drip(min(int(body.get("max_tokens") or 1), int(KEEPALIVE_S / DRIP_S)))
            return
        if fault == "loop":
            self._loop()
            return
        for part in REPLIES[fault]:
            if part is CUT:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._chunk(part)
        self._chunk(b"")  # the terminating chunk: the body ended cleanly

    def _drip(self, tokens: int) -> None:
        """``tokens`` pieces, the first at once and then one every ``DRIP_S``; then usage and [DONE]."""
        try:
            for index in range(tokens):
                if index:
                    time.sleep(DRIP_S)
                self._chunk(piece(" tok", "length" if index == tokens - 1 else None))
            self._chunk(event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": tokens}}))
            self._chunk(DONE)
            self._chunk(b"")
        except OSError:  # the client gave up
            return

    def _loop(self) -> None:
        """A small model's greedy loop: one sentence, then the same phrase every ``LOOP_S`` until the
        client stops reading (or ``KEEPALIVE_S`` passes, then the token budget "runs out")."""
        try:
            self._chunk(piece("Once upon a time, there was a lighthouse. "))
            stop = time.monotonic() + KEEPALIVE_S
            while time.monotonic() < stop:
                time.sleep(LOOP_S)
                self._chunk(piece("Lighthouse keeper: "))
            self._chunk(piece("Lighthouse keeper: ", "length"))
            self._chunk(DONE)
            self._chunk(b"")
        except OSError:  # the client stopped the reply
            return

    def _headers(self, content_type: str, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@contextmanager
def misbehaving_server() -> Iterator[str]:
    """Serve on a free loopback port until the block ends; yields the ``/v1`` base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
