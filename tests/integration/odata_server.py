"""A real OData v4 service for the connector tests: SAP CAP serving `tests/odata_crm` (accounts,
contacts) on an in-memory SQLite database, one server process per test, on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CRM = Path(__file__).resolve().parent.parent / "odata_crm"
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


@pytest.fixture
def odata_crm(tmp_path: Path) -> Iterator[ODataCrm]:
    if not SERVE.exists():
        message = f"the test OData server is not installed: run `npm ci` in {CRM} (bash .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    log = tmp_path / "cds.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(SERVE)], cwd=CRM, env={**os.environ, "PORT": str(port)}, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    crm = ODataCrm(f"http://127.0.0.1:{port}{SERVICE_PATH}", process, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(crm.url + "$metadata", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            crm.stop()
            raise RuntimeError(f"the test OData server did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    try:
        yield crm
    finally:
        crm.stop()
