import io
import json
import os
import sys
import tempfile
import unittest
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from pysite.app import App, safe_filename  # noqa: E402


def call(app, method="GET", path="/", body=b"", ctype=""):
    env = {}
    setup_testing_defaults(env)
    env.update(REQUEST_METHOD=method, PATH_INFO=path, CONTENT_TYPE=ctype,
               CONTENT_LENGTH=str(len(body)), **{"wsgi.input": io.BytesIO(body)})
    got = {}

    def start_response(status, headers):
        got["status"] = int(status.split()[0])
        got["headers"] = dict(headers)

    data = b"".join(app(env, start_response))
    return got["status"], got["headers"], data


def multipart(name, content):
    b = "XBOUNDARYX"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


class AppTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.app = App(data_dir=self.tmp.name, node="node1", app_version="1.2.3", max_upload=1000)

    def tearDown(self):
        self.tmp.cleanup()

    def test_healthz(self):
        status, headers, data = call(self.app, path="/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(json.loads(data), {"status": "ok", "version": "1.2.3", "node": "node1"})

    def test_index_shows_node_and_version(self):
        status, _, data = call(self.app)
        self.assertEqual(status, 200)
        self.assertIn(b'<strong id="node">node1</strong>', data)
        self.assertIn(b'<strong id="version">1.2.3</strong>', data)

    def test_upload_then_download(self):
        body, ctype = multipart("../../etc/report 1.txt", b"hello\x00world")
        status, headers, _ = call(self.app, "POST", "/upload", body, ctype)
        self.assertEqual(status, 303)
        self.assertEqual(os.listdir(self.tmp.name), ["report_1.txt"])
        status, _, data = call(self.app, path="/files/report_1.txt")
        self.assertEqual((status, data), (200, b"hello\x00world"))
        _, _, page = call(self.app)
        self.assertIn(b"report_1.txt", page)

    def test_upload_too_large(self):
        body, ctype = multipart("big.bin", b"x" * 2000)
        status, _, _ = call(self.app, "POST", "/upload", body, ctype)
        self.assertEqual(status, 413)
        self.assertEqual(os.listdir(self.tmp.name), [])

    def test_upload_rejects_non_multipart(self):
        status, _, _ = call(self.app, "POST", "/upload", b"a=b", "application/x-www-form-urlencoded")
        self.assertEqual(status, 400)

    def test_download_rejects_traversal(self):
        status, _, _ = call(self.app, path="/files/..%2Fx")
        self.assertEqual(status, 404)
        status, _, _ = call(self.app, path="/files/.hidden")
        self.assertEqual(status, 404)

    def test_unknown_path(self):
        self.assertEqual(call(self.app, path="/nope")[0], 404)
        self.assertEqual(call(self.app, "DELETE", "/healthz")[0], 405)

    def test_safe_filename(self):
        for raw, want in [("a.txt", "a.txt"), ("C:\\x\\y.png", "y.png"), ("..", ""), ("é.txt", "_.txt")]:
            self.assertEqual(safe_filename(raw), want)


if __name__ == "__main__":
    unittest.main()
