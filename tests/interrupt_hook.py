"""Run the CLI in a subprocess that stops at a chosen moment, for the interruption tests.

``python tests/interrupt_hook.py render …`` runs ``fairytale render …`` with
:func:`fairytale.files._move_into_place` (the rename that finishes every file the product
writes) wrapped: when the file it is about to put in place matches ``FAIRYTALE_TEST_BLOCK_AT``
(a glob on the target's name, ``*.pdf``, or on its whole path if it holds a ``/``) for the
``FAIRYTALE_TEST_BLOCK_NTH``-th time (1 by default), it first writes the file named by
``FAIRYTALE_TEST_BLOCKED`` (the test waits for it) and then waits for a signal, with the
finished temporary file not yet renamed. The test then sends SIGINT or SIGKILL: the process is
stopped exactly there, never by timing. ``FAIRYTALE_TEST_BLOCK_AFTER=1`` blocks just after the
rename instead (the file is in place, what follows it is not done yet);
``FAIRYTALE_TEST_BLOCK_KILL=1`` makes the process kill itself there (SIGKILL), as a crash or
the out-of-memory killer would. Run as a script, the
hook is in the worker processes of ``fairytale library --workers N`` too (a spawned worker
imports the main script again), each counting its own files. In the actors of ``fairytale
library --ray`` Ray puts it: a job whose runtime environment names :func:`install` as its
``worker_process_setup_hook`` (:func:`ray_job_with_hook`).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from pathlib import Path

import fairytale.files as files

_pattern = os.environ.get("FAIRYTALE_TEST_BLOCK_AT", "")
_nth = int(os.environ.get("FAIRYTALE_TEST_BLOCK_NTH", "1"))
_after = os.environ.get("FAIRYTALE_TEST_BLOCK_AFTER") == "1"
_blocked = os.environ.get("FAIRYTALE_TEST_BLOCKED", "")
_kill = os.environ.get("FAIRYTALE_TEST_BLOCK_KILL") == "1"
_seen = 0
_move_into_place = files._move_into_place


def _block(target: Path) -> None:
    if _kill:  # a crash: no clean-up of any kind
        os.kill(os.getpid(), signal.SIGKILL)
    Path(_blocked).write_text(f"{target}\n", encoding="utf-8")
    while True:
        signal.pause()  # a signal's handler (SIGINT: KeyboardInterrupt) ends the wait


def _moving(tmp: Path, path: Path) -> None:
    global _seen
    name = str(path) if "/" in _pattern else Path(path).name
    matched = bool(_pattern) and fnmatch.fnmatch(name, _pattern)
    if matched:
        _seen += 1
    stop = matched and _seen == _nth
    if stop and not _after:
        _block(path)
    _move_into_place(tmp, path)
    if stop and _after:
        _block(path)


files._move_into_place = _moving


def install() -> None:
    """Ray's worker setup hook: importing this module has put the hook in place already."""


def ray_job_with_hook(**env: str) -> dict[str, str]:
    """The environment of a Ray driver (the CLI in a subprocess) whose job runs every Ray worker
    with this hook and ``env`` (the ``FAIRYTALE_TEST_BLOCK_*`` settings): Ray reads a job's
    runtime environment from ``RAY_JOB_CONFIG_JSON_ENV_VAR``, as its job submission sets it."""
    import json

    runtime_env = {"worker_process_setup_hook": "tests.interrupt_hook.install", "env_vars": env}
    return {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": runtime_env})}


if __name__ == "__main__":
    from fairytale.cli import main

    sys.argv[0] = "fairytale"
    main()
