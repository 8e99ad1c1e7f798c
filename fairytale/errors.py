"""Errors a user can fix. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class FairytaleError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Raise it (or a subclass) for anything a user can act on: a bad file, a missing model,
    a wrong option. Programming errors stay ordinary exceptions with tracebacks.
    """

    exit_code = 1


class FollowerError(FairytaleError):
    """Under ``accelerate launch``, process 0 failed with a user error and has said so; the other
    processes stop with this, and the CLI prints nothing more for them."""


class ModelUnavailableError(FairytaleError):
    """A model is neither a local path nor in the Hugging Face cache, and the hub is out of reach."""


class PlanError(FairytaleError):
    """A book plan file is missing, malformed, of another version, or inconsistent."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a long job after it had put its finished work in place.

    ``kept`` says what is kept, in a few words ("2 of 6 pages painted and kept"), and ``go_on``
    how to go on; the CLI prints them as one line with exit code 130. It stays a
    :class:`KeyboardInterrupt`, so code that stops on one (a notebook, a ``finally``) stops on
    it too.
    """

    def __init__(self, kept: str, go_on: str = "run the same command again to go on") -> None:
        super().__init__(kept, go_on)
        self.kept = kept
        self.go_on = go_on
