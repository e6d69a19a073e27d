"""Exit statuses, shared by every command module (the errors they map from are in `tablesync.errors`)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
