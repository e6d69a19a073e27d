"""Whatever an operator types, the CLI answers with a result or a clear refusal (exit 0, 1 or 2),
never a traceback: a property over argv, on the embedded default (SQLite store and apps, no broker,
so every job waits in the store)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COMMANDS = [["jobs"], ["job"], ["errors"], ["log"], ["couplings"], ["sync"], ["retry"], ["resolve"], ["uncouple"],
            ["restore"], ["delete"], ["couple"], ["match"], ["cleanup"], ["mappings"], ["config", "check"],
            ["config", "apply"], ["db", "upgrade"], ["web-user"], []]
WORDS = ["CUSTOMER", "CONTACT", "NOPE", "1", "2", "0", "-5", "99999999999999999999", "9223372036854775808", "1.5", "nan",
         "inf", "x", "", "é", "--json", "--mapping", "--limit", "--timeout", "--full", "--record", "--dry-run", "--side",
         "local", "integration", "sideways", "--use", "--all", "--group", "--now", "--older-than", "30d", "5x", "--status",
         "failed", "bogus", "--local", "--integration", "--skipped", "--offline", "--config", "/nonexistent/t.yaml",
         "--password-stdin", "--only", "--yes", "--operator", "--help", "-v", "--"]
# left out: commands that serve or exec (worker, scheduler, run, web), the demos, and --wait, which waits as asked


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from tablesync.config.settings import get_settings
    from tablesync.console.cli import main
    from tablesync.console.demo import CONFIG, create_apps

    base = tmp_path_factory.mktemp("argv")
    create_apps(f"sqlite:///{base / 'erp.db'}", f"sqlite:///{base / 'crm.db'}", 30)
    (base / "tablesync.yaml").write_text(CONFIG.format(erp=f"sqlite:///{base / 'erp.db'}", crm=f"sqlite:///{base / 'crm.db'}"))
    saved = dict(os.environ)
    for k in [k for k in os.environ if k.startswith("TABLESYNC_")]:
        del os.environ[k]
    os.environ.update(TABLESYNC_STORE_URL=f"sqlite:///{base / 'store.db'}", TABLESYNC_CONFIG=str(base / "tablesync.yaml"))
    get_settings.cache_clear()
    cwd = os.getcwd()
    os.chdir(base)
    try:
        assert main(["db", "upgrade"]) == 0 and main(["config", "apply"]) == 0 and main(["sync", "CUSTOMER"]) == 0
        yield base
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(COMMANDS), words=st.lists(st.sampled_from(WORDS), max_size=6))
def test_argv_never_tracebacks(embedded: Path, command: list[str], words: list[str]) -> None:
    from tablesync.console.cli import main

    argv = [*command, *words]
    out, err = io.StringIO(), io.StringIO()
    stdin = sys.stdin
    sys.stdin = io.StringIO("")  # no terminal: what a pipe or cron gives
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, or a usage error
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stdin = stdin
    assert code in (0, 1, 2), (argv, code, err.getvalue()[-2000:])
    assert "Traceback" not in err.getvalue() + out.getvalue(), (argv, err.getvalue()[-3000:])


@pytest.mark.parametrize("argv, stdin, says", [
    (["job", "9223372036854775808"], "", "'9223372036854775808' is out of range: give a number from 1 to 9,223,372,036,854,775,807"),
    (["demo", "--rows", "3"], "", "'3' is out of range: give a number from 20 to 1,000,000"),
    (["web-user", "alice"], "pw\n", "no terminal to ask for the password: pipe it in with --password-stdin"),
    (["web-user", "alice", "--password-stdin"], "", "standard input holds no password"),
    (["jobs", "--limit", "-5"], "", "argument --limit: '-5' is out of range"),
    (["sync", "CUSTOMER", "--timeout", "nan"], "", "argument --timeout: 'nan' is out of range"),
])
def test_the_reported_tracebacks_are_clear_refusals(embedded: Path, argv: list[str], stdin: str, says: str) -> None:
    from tablesync.console.cli import main

    err = io.StringIO()
    saved, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.stdin = saved
    assert code == 2 and says in err.getvalue(), err.getvalue()


def test_a_dry_run_summary_stays_on_one_line_above_a_narrow_table(capsys: pytest.CaptureFixture[str]) -> None:
    from tablesync.console.render import print_dry_run
    from tablesync.sync.dry_run import DryReport

    report = DryReport("CUSTOMER")
    r = report.of("to_integration")
    r.add("update", {"source_key": "1", "target_key": "1", "changes": {"a": ["x", "y"]}})
    r.counts.update(insert=1200, unchanged=98_000, couple=17, conflict=3)
    print_dry_run(report, "CUSTOMER")
    lines = capsys.readouterr().out.splitlines()
    assert "to_integration: conflict 3, couple 17, insert 1200, unchanged 98000, update 1" in lines
