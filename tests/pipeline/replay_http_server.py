"""A real HTTP server on 127.0.0.1 for download tests: serves a folder, honours ``Range``, and can
cut a response off part-way to play a dropped connection."""

from __future__ import annotations

import http.server
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServerControl:
    """Test knobs shared with the handler threads."""

    cut_after_bytes: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the cut
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class _Handler(http.server.BaseHTTPRequestHandler):
    folder: Path
    control: ServerControl

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base-class signature
        pass

    def do_GET(self) -> None:
        name = self.path.split("?", 1)[0].lstrip("/")
        self.control.requests.append((name, self.headers.get("Range")))
        path = self.folder / name
        if not name or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = self.control.cut_after_bytes.pop(name, None)
        if cut is not None:
            # Send part of the body, then drop the connection as a flaky network would.
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class ReplayHTTPServer:
    """``with ReplayHTTPServer(folder) as server: server.url("a.7z")``"""

    def __init__(self, folder: Path) -> None:
        self.control = ServerControl()
        handler = type("Handler", (_Handler,), {"folder": folder, "control": self.control})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> ReplayHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
