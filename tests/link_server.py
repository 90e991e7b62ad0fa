"""A local stand-in for the web, for file links given to the app: an HTTP proxy that answers
``http://files.hf.co/…`` itself. Gradio lets its own hosts (``*.hf.co``) through without an
address check, and httpx sends them to ``HTTP_PROXY``, so the app's real download code runs
against this server with no network.

Files: ``small.bin`` (SMALL bytes, with Content-Length), ``declared.bin`` (BIG bytes, with
Content-Length), ``undeclared.bin`` (BIG bytes, no length, ended by closing), ``to-private``
(a redirect to a loopback address), anything else 404. ``sent[name]`` counts the bytes of each
file's body written before the client hung up.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "files.hf.co"
SMALL = 100_000  # bytes
BIG = 64 * 1024**2  # bytes: far above the tests' 1 MB limit and what loopback sockets buffer
CHUNK = 64 * 1024  # bytes per write


def content(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


class LinkServer:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                name = self.path.removeprefix(f"http://{HOST}/")
                if name == "to-private":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:9/secret.bin")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = {"small.bin": SMALL, "declared.bin": BIG, "undeclared.bin": BIG}.get(name)
                if size is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if name == "undeclared.bin":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(size))
                self.end_headers()
                body = content(size)
                try:
                    for start in range(0, size, CHUNK):
                        self.wfile.write(body[start : start + CHUNK])
                        outer.sent[name] += min(CHUNK, size - start)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What sends an app's requests for HOST here, and nothing else."""
        proxy = self.proxy  # https too: an address check may ask dns.google, which must fail here
        names = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")
        return {name: proxy for name in names} | {"NO_PROXY": "127.0.0.1,localhost"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
