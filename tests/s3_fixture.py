"""A real S3-protocol server on 127.0.0.1 for tests: moto in server mode, with a request log.

``with MotoS3() as s3:`` starts ``moto.server.ThreadedMotoServer`` on a free loopback port,
points ``AWS_ENDPOINT_URL`` and dummy credentials at it (restored on exit), creates
``s3.bucket`` and records every HTTP request the server answers (``s3.requests``: list of
``(method, path)``), so tests can count what a reader fetched.
"""

from __future__ import annotations

import logging
import os
import re
import uuid

_REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/')


class _RequestLog(logging.Handler):
    def __init__(self, sink: list[tuple[str, str]]):
        super().__init__(level=logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        m = _REQUEST.search(record.getMessage())
        if m:
            self.sink.append((m.group(1), m.group(2)))


class MotoS3:
    """moto S3 server on loopback; a context manager (see the module docstring)."""

    def __init__(self) -> None:
        self.bucket = f"spoofstore-{uuid.uuid4().hex[:8]}"
        self.requests: list[tuple[str, str]] = []
        self.endpoint = ""
        self._server = None
        self._saved: dict[str, str | None] = {}
        self._handler = _RequestLog(self.requests)
        self._logger = logging.getLogger("werkzeug")
        self._level = self._logger.level

    def __enter__(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        for key, value in env.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False  # keep the request lines out of the test output
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=self.bucket)
        return self

    def url(self, key: str) -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{self.bucket}/{key}"

    def gets(self, contains: str = "") -> list[str]:
        """Paths of the GET requests so far whose path contains ``contains``."""
        return [path for method, path in self.requests if method == "GET" and contains in path]

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)
        self._logger.propagate = True
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._server is not None:
            self._server.stop()
