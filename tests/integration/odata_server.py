"""A real OData v4 service for the connector tests: SAP CAP serving `tests/odata_crm` (accounts,
contacts) on an in-memory SQLite database, one server process per test, on a free port."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CRM = Path(__file__).resolve().parent.parent / "odata_crm"
DEMO_CRM = Path(__file__).resolve().parents[2] / "compose" / "odata-crm"
SERVE = CRM / "node_modules" / ".bin" / "cds-serve"
SERVICE_PATH = "/odata/v4/crm/"


@dataclass
class ODataCrm:
    url: str  # the service root
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stop the server (its data goes with it: the database is in memory)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_crm(log: Path, model: Path = CRM) -> ODataCrm:
    """A CAP server of the test CRM (or of another CAP `model` folder that has the test CRM's
    node_modules) on a free port, answering, on an in-memory database; its output goes to `log`."""
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([str(SERVE)], cwd=model, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PORT": str(port), "CDS_REQUIRES_DB_CREDENTIALS_URL": ":memory:"})
    crm = ODataCrm(f"http://127.0.0.1:{port}{SERVICE_PATH}", process, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(crm.url + "$metadata", timeout=2).status_code == 200:
                return crm
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            crm.stop()
            raise RuntimeError(f"the test OData server did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def _installed() -> None:
    if not SERVE.exists():
        message = f"the test OData server is not installed: run `npm ci` in {CRM} (bash .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def odata_crm(tmp_path: Path) -> Iterator[ODataCrm]:
    _installed()
    crm = start_crm(tmp_path / "cds.log")
    try:
        yield crm
    finally:
        crm.stop()


@pytest.fixture
def demo_odata_crm(tmp_path: Path) -> Iterator[ODataCrm]:
    """The docker-compose demo's CRM (compose/odata-crm, with its seed data) on the test CRM's CAP
    install: the same package versions its own lock file pins."""
    _installed()
    model = tmp_path / "odata-crm"
    shutil.copytree(DEMO_CRM, model, ignore=shutil.ignore_patterns("node_modules", "*.sqlite"))
    (model / "node_modules").symlink_to(CRM / "node_modules")
    crm = start_crm(tmp_path / "cds.log", model)
    try:
        yield crm
    finally:
        crm.stop()


class Relay:
    """A proxy in front of the service, for what a real network and a real SaaS API do:
    - `refusals`: the first so many requests are answered 429 with `Retry-After` (throttling);
    - `before(method, path, body)`: runs before a request is forwarded (a concurrent change by
      someone else, made just between tablesync's read and its write);
    - `drop(method, path)`: true forwards the request, then closes the connection unanswered
      (the service did the work; the answer was lost: the outage a retried create must survive);
    - `down`: every request is refused at once (the service is stopped);
    - `no_batch`: `$batch` is answered 404, as by a service that has none.
    `seen` records (time, method, status) of each request."""

    def __init__(self, upstream: str, refusals: int = 0, retry_after: str = "1",
                 before: Callable[[str, str, bytes], None] | None = None,
                 drop: Callable[[str, str], bool] | None = None) -> None:
        self.upstream, self.refusals, self.retry_after = upstream, refusals, retry_after
        self.before, self.drop, self.down, self.no_batch = before, drop, False, False
        self.seen: list[tuple[float, int]] = []  # (time the request arrived, status answered; 0: none)
        self.methods: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def relay(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.replace(proxy.prefix, "/", 1)
                proxy.methods.append(self.command)
                if proxy.down:
                    proxy.seen.append((arrived, 0))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if proxy.no_batch and path.split("?")[0].endswith("/$batch"):
                    proxy.seen.append((arrived, 404))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if len(proxy.seen) < proxy.refusals:
                    proxy.seen.append((arrived, 429))
                    self.send_response(429)
                    self.send_header("Retry-After", proxy.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if proxy.before is not None:
                    proxy.before(self.command, path, body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, proxy.upstream.rstrip("/") + path, headers=headers, content=body)
                if proxy.drop is not None and proxy.drop(self.command, path):
                    proxy.seen.append((arrived, 0))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                proxy.seen.append((arrived, answer.status_code))
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.prefix = "/proxy/"
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
