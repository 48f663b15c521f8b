"""Errors a user can cause, and the one place that turns them into a clean exit."""

import sys
from collections.abc import Callable

from loravc.core.quiet import quiet_libraries


class UserError(Exception):
    """A problem the user can fix (params, data, a version reference): no traceback."""


def run_main(main: Callable[[], None]) -> None:
    """Run a command-line entry point (every stage and `loravc`) with library noise off (loravc.core.quiet); a
    UserError prints one clear message and exits 2."""
    quiet_libraries()
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
