"""The WSGI application: an index page, /healthz and file uploads."""

import email.parser
import email.policy
import html
import json
import os
import re
import socket
from urllib.parse import quote

from . import version

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def safe_filename(name: str) -> str:
    """Reduce an uploaded file name to a safe base name, or "" if nothing is left."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _SAFE_NAME.sub("_", name).lstrip(".")
    return name[:128]


class App:
    """A WSGI callable. Settings come from the environment (see deploy/pysite.env)."""

    def __init__(self, data_dir=None, max_upload=None, node=None, app_version=None):
        self.data_dir = data_dir or os.environ.get("PYSITE_DATA_DIR", "/var/lib/pysite")
        self.max_upload = int(max_upload or os.environ.get("PYSITE_MAX_UPLOAD", 10 << 20))
        self.node = node or socket.gethostname()
        self.version = app_version or version()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/healthz" and method in ("GET", "HEAD"):
                return self._json(start_response, 200, {"status": "ok", "version": self.version, "node": self.node})
            if path == "/" and method in ("GET", "HEAD"):
                return self._index(start_response)
            if path == "/upload" and method == "POST":
                return self._upload(environ, start_response)
            if path.startswith("/files/") and method in ("GET", "HEAD"):
                return self._file(path[len("/files/"):], start_response)
            if path in ("/", "/healthz", "/upload") or path.startswith("/files/"):
                return self._text(start_response, 405, "method not allowed\n")
            return self._text(start_response, 404, "not found\n")
        except BadRequest as e:
            return self._text(start_response, 400, f"{e}\n")

    def files(self):
        try:
            return sorted(n for n in os.listdir(self.data_dir) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def _index(self, start_response):
        items = "".join(
            f'<li><a href="/files/{quote(n)}">{html.escape(n)}</a></li>' for n in self.files()
        )
        body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>pysite on {html.escape(self.node)}</title></head>
<body>
<h1>pysite</h1>
<p>Served by node <strong id="node">{html.escape(self.node)}</strong>,
version <strong id="version">{html.escape(self.version)}</strong>.</p>
<form method="post" action="/upload" enctype="multipart/form-data">
<input type="file" name="file" required> <button type="submit">Upload</button>
</form>
<h2>Files</h2>
<ul>{items or "<li>none yet</li>"}</ul>
</body></html>
"""
        return self._send(start_response, 200, "text/html; charset=utf-8", body.encode())

    def _upload(self, environ, start_response):
        ctype = environ.get("CONTENT_TYPE", "")
        if not ctype.startswith("multipart/form-data"):
            raise BadRequest("expected multipart/form-data")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if length <= 0:
            raise BadRequest("empty upload")
        if length > self.max_upload:
            return self._text(start_response, 413, f"upload larger than {self.max_upload} bytes\n")
        body = environ["wsgi.input"].read(length)
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
        )
        saved = []
        if msg.is_multipart():
            for part in msg.iter_parts():
                filename = part.get_filename()
                if not filename:
                    continue
                name = safe_filename(filename)
                if not name:
                    raise BadRequest("bad file name")
                os.makedirs(self.data_dir, exist_ok=True)
                tmp = os.path.join(self.data_dir, f".{name}.tmp")
                with open(tmp, "wb") as f:
                    f.write(part.get_payload(decode=True) or b"")
                os.replace(tmp, os.path.join(self.data_dir, name))
                saved.append(name)
        if not saved:
            raise BadRequest("no file in the form (field 'file')")
        start_response("303 See Other", [("Location", "/"), ("Content-Length", "0")])
        return [b""]

    def _file(self, name, start_response):
        safe = safe_filename(name)
        if not safe or safe != name:
            return self._text(start_response, 404, "not found\n")
        try:
            with open(os.path.join(self.data_dir, safe), "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            return self._text(start_response, 404, "not found\n")
        return self._send(start_response, 200, "application/octet-stream", data)

    def _json(self, start_response, status, obj):
        return self._send(start_response, status, "application/json", json.dumps(obj).encode() + b"\n")

    def _text(self, start_response, status, text):
        return self._send(start_response, status, "text/plain; charset=utf-8", text.encode())

    @staticmethod
    def _send(start_response, status, ctype, body):
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}
        start_response(
            f"{status} {reason.get(status, '')}".strip(),
            [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
        )
        return [body]


class BadRequest(Exception):
    """A client error answered with 400."""
