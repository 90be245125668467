"""User errors and the CLI wrapper that turns them into one line on stderr and exit code 2.

A user mistake (bad recipe key, missing file, wrong bundle) raises `UserError` with a message
that names the file / field / argument and what to do. `cli_main(fn)` runs a stage's main
function and prints such errors without a traceback; real bugs still show their traceback.
"""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A mistake the user can fix; the message says which file/field/argument and what to do."""


def cli_main(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)` and exit: 0 on success, 2 with one line on stderr for a `UserError`."""
    try:
        code = main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
