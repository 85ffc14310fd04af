"""The CLI's HTTP client (standard library only) against a small local HTTP server:
keep-alive, reconnects, refusals, streamed text. No Ray: the same client against the
real API is tests/cli/test_cli.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.cli.client import ApiRefused, ApiUnavailable, Client


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn answers
    connections: set[int] = set()
    close_after_each = False

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.close_after_each:  # hang up without saying so, as an idle keep-alive time-out does
            self.close_connection = True
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Handler.connections.add(id(self.connection))
        if self.path.startswith("/echo"):
            self._send(
                200, json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}).encode()
            )
        elif self.path == "/busy":
            self._send(503, json.dumps({"detail": "the store cannot write; try again"}).encode())
        elif self.path == "/bad":
            self._send(
                422, json.dumps({"detail": [{"field": "gpu_count", "message": "must be 1-16"}]}).encode()
            )
        elif self.path == "/html":
            self._send(200, b"<html>not gpuq</html>", "text/html")
        elif self.path.startswith("/log"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            text = "épée ✓\n".encode()
            for piece in (text[:1], text[1:2], text[2:9], text[9:]):  # split inside multi-byte characters
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(200, json.dumps({"got": body, "type": self.headers.get("Content-Type")}).encode())


@pytest.fixture
def server():
    Handler.connections = set()
    Handler.close_after_each = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_requests_of_one_command_share_one_connection_and_carry_the_token(server):
    client = Client(server, token="t0k")
    assert client.get("/echo", state="running", limit=5) == {
        "path": "/echo?state=running&limit=5",
        "auth": "Bearer t0k",
    }
    assert client.post("/submit", {"gpu_count": 2})["got"] == {"gpu_count": 2}
    assert len(Handler.connections) == 1


def test_a_connection_the_server_closed_is_opened_again(server):
    Handler.close_after_each = True
    client = Client(server, token="t")
    assert [client.get("/echo")["path"] for _ in range(3)] == ["/echo"] * 3


def test_refusals_name_the_field_and_503_says_try_again(server):
    client = Client(server, token="t")
    with pytest.raises(ApiRefused, match="gpu_count: must be 1-16") as refused:
        client.get("/bad")
    assert refused.value.status == 422
    with pytest.raises(ApiUnavailable, match="try again"):
        client.get("/busy")
    with pytest.raises(ApiUnavailable, match="no JSON; is GPUQ_URL gpuq's API"):
        client.get("/html")


def test_a_stream_is_the_bytes_as_sent_whatever_the_chunks(server):
    assert b"".join(Client(server, token="t").stream("/log", tail=None)) == "épée ✓\n".encode()


def test_nothing_listening_and_a_bad_url_are_plain_errors():
    with pytest.raises(ApiUnavailable, match="cannot reach gpuq at http://127.0.0.1:9"):
        Client("http://127.0.0.1:9", token="t").get("/orchestrator/status")
    with pytest.raises(ApiUnavailable, match="should look like http://HOST:PORT"):
        Client("127.0.0.1:8000", token="t")
