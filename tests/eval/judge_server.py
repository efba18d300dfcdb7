"""A small OpenAI-compatible chat server on 127.0.0.1 whose answers a test decides: the
judge client's HTTP path, with fixed judge outputs, and every request body kept."""

import json
import threading
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def judge_server(answer: Callable[[dict], str]):
    """Yields (base URL up to /v1, the request bodies received)."""
    bodies: list[dict] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                bodies.append(body)
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            text = answer(body)
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}], "usage": {"completion_tokens": len(text)}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", bodies
    finally:
        server.shutdown()
        server.server_close()
