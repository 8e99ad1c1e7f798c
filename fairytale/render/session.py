"""The illustrator a render paints with: loaded on first use, always released.

``render_book`` opens an :class:`IllustratorSession` in a ``with`` block. Nothing is loaded until
something must be painted (a render whose pictures are all cached never loads a model), and the
illustrator the session loaded is closed when the block ends, however it ends: an exception half
way through a batch does not leave the pipeline holding GPU memory (which, in a notebook that
renders again and again, would run the card out of memory on the next try). An illustrator
passed in by the caller (``render_book(illustrator=...)``) is theirs: it is used, never closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

    from fairytale.embeddings import LearnedEmbedding
    from fairytale.render.backends import Backend
    from fairytale.render.devices import DevicePlan
    from fairytale.render.illustrator import Illustrator
    from fairytale.render.progress import RenderProgress


class IllustratorSession:
    """Lends the render an illustrator for ``backend``, loading it at most once."""

    def __init__(
        self,
        backend: Backend,
        reporter: RenderProgress,
        *,
        given: Illustrator | None = None,
        embeddings: list[LearnedEmbedding] | None = None,
    ) -> None:
        self.backend = backend
        self.reporter = reporter
        self.given = given
        self.embeddings = embeddings or []
        self._owned: Illustrator | None = None
        self._device_plan: DevicePlan | None = given.device_plan if given else None
        self._ready = False

    @property
    def device_plan(self) -> DevicePlan | None:
        """The device the pictures were (or will be) painted on; None while nothing was loaded."""
        return self._device_plan

    def planned_device(self) -> DevicePlan:
        """The device plan for this render's settings (chosen now if nothing was loaded yet)."""
        if self._device_plan is None:
            from fairytale.render.devices import plan_for

            self._device_plan = plan_for(self.backend.settings)
        return self._device_plan

    @property
    def loaded(self) -> Illustrator | None:
        """The illustrator if one is loaded (or was given), without loading one."""
        return self.given or self._owned

    def illustrator(self) -> Illustrator:
        """The illustrator, loaded now if this is the first call, with the plan's learned tokens."""
        if self.loaded is None:
            device_plan = self.planned_device()
            self.reporter.stage(f"Loading {self.backend.describe_model()} on {device_plan.describe()}…")
            self._owned = self.backend.load(device_plan)
        illustrator = self.loaded
        assert illustrator is not None
        if not self._ready:
            illustrator.use_embeddings(self.embeddings)
            self._ready = True
        return illustrator

    def batch_size(self) -> int:
        """Pictures per batch: the settings', else the device's."""
        return self.backend.settings.batch_size or self.illustrator().device_plan.batch_size

    def release(self) -> None:
        """Close the illustrator this session loaded (one it was given stays open)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    def __enter__(self) -> IllustratorSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
