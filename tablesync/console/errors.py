"""Exit statuses and the usage error, shared by every command module.

Kept apart from `console.cli` because that module also runs as `__main__` (`python -m
console.cli`): a class defined there would exist twice, and command modules raising one would
escape the handler catching the other.
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit status 2."""


class UnknownMapping(UsageError):
    """A mapping name that no `config apply` ever stored: exit status 2 in the CLI, 404 on the web."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        super().__init__(f"unknown mapping {name!r}: " + (f"the mappings are {shown} (see `tablesync mappings`)" if known
                                                           else "no mapping is configured yet (`tablesync config apply`)"))
