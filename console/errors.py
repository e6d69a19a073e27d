"""Exit statuses and the usage error, shared by every command module.

Kept apart from `console.cli` because that module also runs as `__main__` (`python -m
console.cli`): a class defined there would exist twice, and command modules raising one would
escape the handler catching the other.
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit status 2."""
