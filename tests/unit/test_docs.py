"""README and docs/ stay true: every list limit and wait timeout the CLI applies by default is
written down, every setting is documented, and every link leads somewhere."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tablesync.config.settings import Settings
from tablesync.console.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out[f"{prefix}{name}"] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(build_parser(), "")
    return out


def _row(command: str) -> str:
    """The README Commands row whose first cell names `tablesync COMMAND` (alone or in `a\\|b`)."""
    for line in README.splitlines():
        if not line.startswith("| `tablesync "):
            continue
        first = line.split(" | ")[0].replace("\\|", "|")
        names = {n for group in re.findall(r"tablesync ([a-z|-]+(?: [a-z]+)?)", first) for n in group.split("|")}
        if command in names or command.split()[0] in names:
            return line
    raise AssertionError(f"README's Commands table has no row for `tablesync {command}`")


@pytest.mark.parametrize("command, option", [(c, o) for c, p in subcommands().items() for o in ("--limit", "--timeout")
                                             if any(option in a.option_strings for a in p._actions for option in [o])])
def test_every_limit_and_timeout_default_is_in_the_readme(command: str, option: str) -> None:
    parser = subcommands()[command]
    [action] = [a for a in parser._actions if option in a.option_strings]
    default = action.default
    shown = f"{int(default):,}" if float(default).is_integer() else str(default)
    row = _row(command)
    assert option in row, f"`tablesync {command}`: {option} is not in its README row"
    assert re.search(rf"default \**{re.escape(shown)}\**", row), f"`tablesync {command}`: README does not give {option}'s default {shown}"
    assert f"default {shown}" in (action.help or "").replace(",", ",") or f"default {int(default)}" in (action.help or ""), \
        f"`tablesync {command} --help` does not give {option}'s default"


def test_every_setting_is_in_the_configuration_reference() -> None:
    for name in Settings.model_fields:
        assert f"TABLESYNC_{name.upper()}" in DOCS["configuration.md"], name


def test_every_relative_link_leads_to_a_file() -> None:
    for name, text in {"README.md": README, **{f"docs/{k}": v for k, v in DOCS.items()}}.items():
        base = ROOT if name == "README.md" else ROOT / "docs"
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (base / target).exists(), f"{name} links to {target}, which does not exist"
