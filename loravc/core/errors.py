"""Errors a user can cause, and the one place that turns them into a clean exit."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (params, data, a version reference): no traceback."""


def run_main(main: Callable[[], None]) -> None:
    """Run a command-line entry point; a UserError prints one clear message and exits 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
