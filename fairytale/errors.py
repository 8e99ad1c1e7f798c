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
