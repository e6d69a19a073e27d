"""What a fresh machine needs to pass the suite: pinned test dependencies that .ci/run and the
README install alike, and external programs that are skipped (naming their Debian package) where
they are missing, except under CI=true, where a skip would hide a test CI is meant to run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_test_command() -> str:
    lines = [line for line in README.splitlines() if line.rstrip().endswith("# the test suite") or "# the test suite (" in line]
    assert len(lines) == 1, f"README.md must give exactly one test command (a line marked '# the test suite'): {lines}"
    return lines[0].split("#", 1)[0].strip()


def test_readme_test_command_installs_with_the_constraints_file() -> None:
    command = readme_test_command()
    assert "-c constraints.txt" in command and command.endswith("python -m pytest"), command


def test_ci_runs_the_readme_command_in_a_virtualenv_of_its_own() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci and "CI=true" in ci and "rabbitmq-server" in ci
    # .ci/run reads the command out of README.md, so the two cannot drift apart
    proc = subprocess.run(["bash", "-c", 'source <(sed -n "/^readme_test_command()/,/^}/p" .ci/run); readme_test_command'],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == readme_test_command(), proc.stderr


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_pinned_in_the_constraints_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("test", "bench"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pinned[name.lower().replace("_", "-")] = version
    assert not wanted - set(pinned), f"not pinned in constraints.txt: {sorted(wanted - set(pinned))}"
    assert pinned["pytest"].startswith("9.0."), "pytest 9.2 breaks schemathesis 4: keep the pin until both move together"


@pytest.mark.parametrize("ci, outcome", [(None, "skipped"), ("true", "failed")])
def test_missing_promtool_skips_naming_the_package_unless_ci(ci: str | None, outcome: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # nothing to find there
    if ci:
        env["CI"] = ci
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider",
                           "tests/unit/test_dashboards.py", "-k", "promtool or alert_rules_unit_tests"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert f"2 {outcome}" in proc.stdout, proc.stdout[-3000:]
    assert "install Debian's prometheus package" in proc.stdout, proc.stdout[-3000:]
