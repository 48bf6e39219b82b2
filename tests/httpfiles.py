"""A real HTTP server in a thread for tests of --input and --deliver (jobs/staging.py): files to
GET by path, paths that fail a number of times first, PUT bodies kept with their digest headers,
paths that want HTTP Basic credentials, and the Authorization header of every request kept."""
from __future__ import annotations

import base64
import http.server
import threading
from typing import Dict, List, Optional


class HttpFiles:
    """Files by path; a path may first fail a number of times with a status; PUT bodies kept."""

    def __init__(self, address: str) -> None:
        self.files: Dict[str, bytes] = {}
        self.fail: Dict[str, List[int]] = {}
        self.put: Dict[str, tuple] = {}
        self.hits: Dict[str, int] = {}
        self.redirect: Dict[str, str] = {}   # path -> where a GET of it is sent (302)
        self.need_auth: Dict[str, str] = {}  # path -> "user:password" it wants (401 otherwise)
        self.auth: Dict[str, List[Optional[str]]] = {}  # path -> the Authorization header of each request
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _fail(self) -> bool:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                given = self.headers.get("Authorization")
                server.auth.setdefault(self.path, []).append(given)
                wanted = server.need_auth.get(self.path)
                if wanted is not None and given != "Basic " + base64.b64encode(wanted.encode()).decode():
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="test"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return True
                codes = server.fail.get(self.path)
                if codes:
                    self.send_error(codes.pop(0))
                    return True
                return False

            def do_GET(self) -> None:
                if self._fail():
                    return
                if self.path in server.redirect:
                    self.send_response(302)
                    self.send_header("Location", server.redirect[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body = server.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self._fail():
                    return
                server.put[self.path] = (body, self.headers.get("Digest"), self.headers.get("X-Checksum-Sha256"))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
