"""Runs the autolabel CLI with the planted-box labeler, dying like kill -9 at a chosen point.

Usage: ``python -m tests.crashpoint run -i videos -o dataset ...`` (any autolabel command).

``AUTOLABEL_CRASH_AT=N`` ends the process with ``os._exit(137)`` (no cleanup, no
flush, as kill -9) just before its Nth file rename or fsync, the moments that decide
what a later run finds on disk. ``AUTOLABEL_CRASH_COUNT=FILE`` writes how many such
points the run passed (to pick N). Tests and the soak benchmark use it; the product
code knows nothing of it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _install(crash_at: int, count_file: str | None) -> None:
    seen = [0]

    def point() -> None:
        seen[0] += 1
        if count_file:
            Path(count_file).write_text(str(seen[0]))
        if seen[0] == crash_at:
            os._exit(137)

    def wrap(fn):
        def wrapped(*args, **kwargs):
            point()
            return fn(*args, **kwargs)

        return wrapped

    os.replace = wrap(os.replace)
    os.fsync = wrap(os.fsync)


def main(argv: list[str]) -> None:
    crash_at = int(os.environ.get("AUTOLABEL_CRASH_AT", "0"))
    count_file = os.environ.get("AUTOLABEL_CRASH_COUNT")
    if crash_at or count_file:
        _install(crash_at, count_file)
    import autolabel.labelers
    from autolabel.cli import app
    from tests.conftest import FakeLabeler

    autolabel.labelers.create_labeler = lambda *args, **kwargs: FakeLabeler()
    app(argv, prog_name="autolabel")


if __name__ == "__main__":
    main(sys.argv[1:])
