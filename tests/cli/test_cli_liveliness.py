"""check-liveliness --direct's probe against a real local HTTP server: healthy only when the page
contains the expected text; HTTP errors and refused connections are 'not up', never a crash."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from hosted_engine.cli.engine import probe_liveliness


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body, code = b"DB Up!Welcome to Health Status!", 200
        elif self.path == "/starting":
            body, code = b"DB Down", 200
        else:
            body, code = b"no", 503
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_probe_results(server: str) -> None:
    assert probe_liveliness(f"{server}/health", "DB Up", insecure=False, timeout=5) == (
        True, "DB Up")
    ok, detail = probe_liveliness(f"{server}/starting", "DB Up", insecure=False, timeout=5)
    assert not ok and "does not contain 'DB Up'" in detail
    ok, detail = probe_liveliness(f"{server}/broken", "DB Up", insecure=False, timeout=5)
    assert (ok, detail) == (False, "HTTP 503")
    port = server.rsplit(":", 1)[1]
    ok, detail = probe_liveliness(f"https://127.0.0.1:{port}/health", "DB Up", insecure=False,
                                  timeout=5)
    assert not ok and detail  # a TLS handshake with a plain HTTP server fails cleanly
