"""The sample site's image server on loopback: static images, robots.txt, a redirect
(/redirect/<path> -> /img/<path>) and ``X-Robots-Tag: noai`` on everything under /noai/."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/img/" + self.path[len("/redirect/") :])
            self.end_headers()
            return
        super().do_GET()

    def end_headers(self) -> None:
        if self.path.startswith("/noai/"):
            self.send_header("X-Robots-Tag", "noai, noimageai")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # keep test and CLI output quiet
        pass


def start_image_server(directory: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve ``directory`` in a daemon thread; ``server.server_address`` says where."""
    server = ThreadingHTTPServer((host, port), partial(_Handler, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="asagi-sample-images").start()
    return server
