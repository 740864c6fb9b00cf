"""A tiny static HTTP server for the Markdown test page and the UI render bench.

``/static/...`` is webchat's real static directory (so ``/static/markdown.js`` is the module
the app loads) and ``/pages/...`` is this directory. It runs in a daemon thread on 127.0.0.1
(a secure context, so ``navigator.clipboard`` works) and serves only those two trees.
"""

from __future__ import annotations

import contextlib
import mimetypes
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

PAGES = Path(__file__).resolve().parent
STATIC = PAGES.parent.parent.parent / "src" / "webchat" / "static"
ROOTS = {"static": STATIC, "pages": PAGES}
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        top, _, rest = path.lstrip("/").partition("/")
        root = ROOTS.get(top)
        file = (root / rest).resolve() if root else None
        if file is None or root is None or not file.is_relative_to(root) or not file.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        body = file.read_bytes()
        kind = TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0]
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve() -> Iterator[str]:
    """Serve ``/static`` and ``/pages``; yield the base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
