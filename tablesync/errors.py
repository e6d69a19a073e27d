"""Every error tablesync raises on purpose, in three families that say what to do about it.

- `TransientError`: something outside tablesync is away (an app's database, the broker). The job
  fails now with the reason and Dramatiq retries it with backoff; nothing is marked skipped.
- `TerminalError`: retrying will not help (a bad configuration, a refused statement, an unknown
  mapping, a precondition an operator's action failed). The job, or the command, fails with the
  message, which says what to do.
- `RecordError`: one record cannot be synced. It fails alone with a job error; the batch goes on.

The worker decides retry or failure by family, the CLI its exit status (2 for a `UsageError`
or a configuration, 1 for a job that failed), the web console its status code. Kept in one module
at the bottom of the layers, so every layer raises and catches the same classes; and apart from
`console.cli`, which also runs as `__main__`, where a class would otherwise exist twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


class TablesyncError(Exception):
    """The base of every error below."""


class TransientError(TablesyncError):
    """Worth retrying later: something tablesync depends on is unreachable or timed out."""


class TerminalError(TablesyncError):
    """Retrying will not help; the message says what to change."""


class RecordError(TablesyncError):
    """One record cannot be synced; the message names the field and the value."""


# -- transient -------------------------------------------------------------------------------------


class AppUnavailable(TransientError):
    """An app's database cannot be reached or timed out."""


class StoreUnavailable(TransientError):
    """The store's database cannot be reached or timed out: the job's state waits for it, and the
    job is retried with backoff (a redo that repairs its state)."""


class BrokerUnavailable(TransientError):
    """The broker did not take a message (down, unreachable, refusing); the text names it, without its password."""


class RetryLater(TransientError):
    """The worker's answer to Dramatiq: retry this message with backoff (the job row says why)."""


# -- terminal --------------------------------------------------------------------------------------


class AppError(TerminalError):
    """An app's database refused a statement that is not about one record (permissions, a bad
    filter, a failing key default): the job fails with the database's message."""


class Fenced(TerminalError):
    """This job was taken over: the reaper abandoned it (its worker was silent too long) and its
    work is redone by another job. Every store write of the job is refused from then on, so the
    worker that wakes up late stops at its next batch, leaving the store to the redo."""


class JobRefused(TerminalError):
    """The job cannot run as asked (a mapping no longer configured, a missing table, an unknown kind)."""


class ActionRefused(TerminalError):
    """Some or all of an operator action's records failed a precondition; the job errors say which and why."""


class SettingsError(TerminalError):
    """A setting is missing or malformed; the message names the variable and what to do."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, located as precisely as we can."""

    where: str
    message: str
    # A warning is something that may fail at run time but that tablesync cannot rule out (a
    # trigger that probably fills a column): shown by `config check`, it does not refuse the file.
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(TerminalError):
    """The configuration cannot be used; `problems` holds every reason found, so an operator
    fixes a whole file in one pass."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(str(p) for p in self.problems))

    def report(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class UsageError(TerminalError):
    """Bad input from the user: printed without a traceback, exit status 2."""


class UnknownMapping(UsageError):
    """A mapping name that no `config apply` ever stored: exit status 2 in the CLI, 404 on the web."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        super().__init__(f"unknown mapping {name!r}: " + (f"the mappings are {shown} (see `tablesync mappings`)" if known
                                                           else "no mapping is configured yet (`tablesync config apply`)"))
