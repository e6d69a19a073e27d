"""Fixtures for tests against the real services.

Every test gets its own PostgreSQL databases (the store is cloned from a template migrated once per
run), its own MariaDB database, its own Redis namespace and Dramatiq queue; all are removed after.
Names carry a per-run id, so concurrent runs on one machine never collide.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("TABLESYNC_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("TABLESYNC_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("TABLESYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]


def require_tool(name: str, debian_package: str) -> str:
    """The path of an external program a test needs. Missing, the test is skipped with the Debian
    package that provides it, so the README command passes on a machine without it; under
    `CI=true` (set by .ci/run, which installs both) a missing tool fails the test instead, so CI
    can never go green by skipping what it was meant to run."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} not found: install Debian's {debian_package} package (apt-get install {debian_package}; bash .ci/run does)"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{reason}; CI=true turns this skip into a failure", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A port nothing listens on now: each process of a test serves its metrics on its own."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_url(db: str) -> str:
    return sa.engine.make_url(PG_ADMIN).set(database=db).render_as_string(hide_password=False)


def _admin() -> sa.Engine:
    return sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def create_pg_db(name: str, template: str | None = None) -> str:
    with _admin().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    return _pg_url(name)


def drop_pg_db(name: str) -> None:
    with _admin().connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def store_template() -> Iterator[str]:
    from tablesync.db.engine import create_engine
    from tablesync.store.migrate import upgrade

    name = f"ts_{RUN_ID}_tpl"
    url = create_pg_db(name)
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    yield name
    drop_pg_db(name)


@dataclass
class Env:
    """One test's isolated world: store, two app databases, a broker namespace and queue."""

    store_url: str
    erp_url: str
    crm_url: str
    broker_url: str
    namespace: str
    queue: str
    tmp: Path
    processes: list[subprocess.Popen] = field(default_factory=list)  # type: ignore[type-arg]

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        env.update({
            "TABLESYNC_STORE_URL": self.store_url, "TABLESYNC_BROKER_URL": self.broker_url,
            "TABLESYNC_BROKER_NAMESPACE": self.namespace, "TABLESYNC_QUEUE": self.queue,
            "TABLESYNC_CONFIG": str(self.tmp / "tablesync.yaml"), "ERP_DATABASE_URL": self.erp_url,
            "CRM_DATABASE_URL": self.crm_url, "TABLESYNC_HEARTBEAT_SECONDS": "1",
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "tablesync.console.cli", *args], env=self.environ(**extra), cwd=self.tmp,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"tablesync {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start_worker(self, threads: int = 2, **extra: str) -> subprocess.Popen:  # type: ignore[type-arg]
        log = open(self.tmp / f"worker-{len(self.processes)}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tablesync.console.cli", "worker", "--processes", "1", "--threads", str(threads)],
            env=self.environ(**{"TABLESYNC_WORKER_METRICS_PORT": str(free_port()), **extra}), cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def start_listener(self, **extra: str) -> subprocess.Popen:  # type: ignore[type-arg]
        log = open(self.tmp / f"listen-{len(self.processes)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "tablesync.console.cli", "-v", "listen"],
                                env=self.environ(**{"TABLESYNC_LISTEN_METRICS_PORT": str(free_port()), **extra}),
                                cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(proc)
        return proc

    def start_scheduler(self, **extra: str) -> subprocess.Popen:  # type: ignore[type-arg]
        log = open(self.tmp / f"scheduler-{len(self.processes)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "tablesync.console.cli", "-v", "scheduler"],
                                env=self.environ(**{"TABLESYNC_SCHEDULER_METRICS_PORT": str(free_port()), **extra}),
                                cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.tmp.glob("*.log")))


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def env(store_template: str, tmp_path: Path) -> Iterator[Env]:
    import redis

    n = next(_counter)
    base = f"ts_{RUN_ID}_{n}"
    store = create_pg_db(base, template=store_template)
    erp = create_pg_db(base + "_erp")
    crm = create_pg_db(base + "_crm")
    namespace = f"tablesync-test-{RUN_ID}-{n}"
    e = Env(store_url=store, erp_url=erp, crm_url=crm, broker_url=REDIS_URL, namespace=namespace,
            queue=f"q{RUN_ID}{n}", tmp=tmp_path)
    try:
        yield e
    finally:
        e.stop_all()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{namespace}*"))
        if keys:
            client.delete(*keys)
        for db in (base, base + "_erp", base + "_crm"):
            drop_pg_db(db)


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    name = f"ts_{RUN_ID}_{next(_counter)}"
    admin = sa.create_engine(MARIADB_ADMIN, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    try:
        yield sa.engine.make_url(MARIADB_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


@dataclass
class OwnPostgres:
    """A PostgreSQL server of the test's own, on a free port: one the test may stop and restart."""

    port: int
    data: Path
    options: str = ""  # more server settings: "-c name=value …"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres(require_tool("pg_ctl", "postgresql"), "-D", str(self.data), *args),
                       check=True, capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        self.ctl("-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off {self.options}", "-l",
                 str(self.data / "server.log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self.ctl("-m", mode, "-w", "stop")

    def create_db(self, name: str) -> str:
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)


def _as_postgres(*argv: str) -> list[str]:
    """PostgreSQL's tools refuse to run as root: as root, run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


def own_postgres_server(options: str = "") -> Iterator[OwnPostgres]:
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="ts-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    subprocess.run(_as_postgres(require_tool("initdb", "postgresql"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                "-E", "UTF8", "--no-sync"), check=True, capture_output=True, text=True, timeout=120)
    server = OwnPostgres(free_port(), data, options)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped by the test
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    yield from own_postgres_server()


@pytest.fixture
def logical_postgres() -> Iterator[OwnPostgres]:
    """A server of the test's own with logical decoding on, and wal2json allowed as a plugin (a
    server setting some builds have, which lists the plugins a REPLICATION user may load)."""
    plugin = Path(subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True).stdout.strip()) / "wal2json.so"
    if not plugin.exists():
        message = f"wal2json is not installed ({plugin}): Debian's postgresql-NN-wal2json (bash .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    yield from own_postgres_server(logical_options())


def logical_options() -> str:
    """Server settings for logical decoding with wal2json."""
    options = "-c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10"
    probe = subprocess.run(["postgres", "--describe-config"], capture_output=True, text=True)
    if "output_plugin_libraries" in probe.stdout:
        options += " -c output_plugin_libraries=pgoutput,test_decoding,wal2json"
    return options


@dataclass
class OwnMariaDB:
    """A MariaDB server of the test's own, on a free port, writing a ROW binlog."""

    port: int
    base: Path
    process: subprocess.Popen | None = None  # type: ignore[type-arg]

    def url(self, db: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            _as_mysql("/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.base / 'data'}", f"--port={self.port}",
                      "--bind-address=127.0.0.1", f"--socket={self.base / 'sock'}", f"--pid-file={self.base / 'pid'}",
                      f"--log-bin={self.base / 'data' / 'binlog'}", "--binlog-format=ROW", "--server-id=1",
                      "--innodb-buffer-pool-size=32M"),
            stdout=open(self.base / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, 60, 0.2, f"mariadbd on port {self.port}")

    def _answers(self) -> bool:
        try:
            sa.create_engine(self.url(), poolclass=sa.pool.NullPool).connect().close()
            return True
        except sa.exc.OperationalError:
            assert self.process is not None and self.process.poll() is None, (self.base / "server.log").read_text()[-2000:]
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)

    def create_db(self, name: str) -> str:
        engine = sa.create_engine(self.url(), poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
        return self.url(name)


def _as_mysql(*argv: str) -> list[str]:
    return ["runuser", "-u", "mysql", "--", *argv] if os.geteuid() == 0 else list(argv)


@pytest.fixture
def binlog_mariadb() -> Iterator[OwnMariaDB]:
    yield from own_mariadb()


def own_mariadb() -> Iterator[OwnMariaDB]:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ts-mariadb-"))
    if os.geteuid() == 0:
        shutil.chown(base, "mysql")
    install = require_tool("mariadb-install-db", "mariadb-server")
    subprocess.run([install, f"--datadir={base / 'data'}", "--auth-root-authentication-method=normal", "--skip-test-db",
                    *(["--user=mysql"] if os.geteuid() == 0 else [])], check=True, capture_output=True, text=True, timeout=120)
    server = OwnMariaDB(free_port(), base)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
