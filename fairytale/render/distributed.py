"""One book painted by several processes at once: ``accelerate launch -m fairytale render``.

Every process runs the same :func:`~fairytale.render.render_book`; a :class:`Team` tells it
who it is. Process 0 leads: it alone takes the book's lock (so the whole team counts as one
job, and any other job on the book is still refused), paints the reference portraits, writes
the plan and lays out the PDF. The pages that need painting are split between the processes
with accelerate's own ``split_between_processes``; each process paints its share with its own
copy of the model and stores the pictures in the book's cache (atomic per picture), and process
0 lays out the book once every process is done. The painter is batch-invariant and every page
has its own seeded generator, so which process paints a page never changes its picture.

Outside ``accelerate launch`` (or ``torchrun``) the team is one process and every method is
trivial, without importing accelerate.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from fairytale.errors import FairytaleError, FollowerError

if TYPE_CHECKING:  # pragma: no cover
    from fairytale.render.settings import RenderSettings

T = TypeVar("T")

#: How long a process waits for the others at a meeting point: long enough for a slow process
#: to finish its share, or process 0 to paint the reference portraits.
MEETING_TIMEOUT = _dt.timedelta(hours=2)


class Team:
    """The processes painting one book (``state`` is accelerate's ``PartialState``, or None
    when the process works alone)."""

    def __init__(self, state: Any = None) -> None:
        self.state = state

    @property
    def size(self) -> int:
        return self.state.num_processes if self.state else 1

    @property
    def index(self) -> int:
        return self.state.process_index if self.state else 0

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def place(self, settings: RenderSettings) -> RenderSettings:
        """Each process on its own GPU: ``cuda`` (or no ``--device`` on a CUDA machine) becomes
        this process's ``cuda:N``, as accelerate assigns them."""
        if self.state is None or self.state.device.type != "cuda":
            return settings
        if settings.device in (None, "cuda"):
            return replace(settings, device=str(self.state.device))
        return settings

    def wait(self) -> None:
        """Meet the other processes here."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def share(self, items: list[T]) -> list[T]:
        """This process's part of ``items`` (contiguous, sizes differing by at most one)."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def gather(self, value: T) -> list[T]:
        """``value`` from every process, in process order (a meeting point)."""
        if self.state is None:
            return [value]
        from accelerate.utils import gather_object

        return list(gather_object([value]))

    def lead(self, work: Callable[[], T]) -> T:
        """Process 0 does ``work``; every process returns its result, or raises its user
        error (the others as :class:`FollowerError`). Everyone meets here afterwards."""
        if self.state is None:
            return work()
        from accelerate.utils import broadcast_object_list

        outcome: list[Any] = [None]
        failure: FairytaleError | None = None
        if self.is_main:
            try:
                outcome = [("ok", work())]
            except FairytaleError as exc:
                outcome, failure = [("error", str(exc))], exc
        broadcast_object_list(outcome, from_process=0)
        self.wait()
        if failure is not None:
            raise failure
        kind, value = outcome[0]
        if kind == "error":
            raise FollowerError(value)
        return value


def current_team() -> Team:
    """The team this process belongs to: several processes under ``accelerate launch`` or
    ``torchrun`` (``WORLD_SIZE`` > 1), else a team of one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Team()
    import torch
    from accelerate import PartialState

    # Without CUDA, accelerate joins several processes (over gloo) only when told cpu=True.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=MEETING_TIMEOUT)
    return Team(state if state.num_processes > 1 else None)
