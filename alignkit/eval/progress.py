"""Progress bars for evaluations: one rich task per stage, in our own Progress or the caller's."""

from __future__ import annotations

from collections.abc import Callable


class StageProgress:
    """``progress``: True (own rich bars), False/None (none), or a running ``rich.progress.Progress``.

    ``stage(description, total)`` returns the ``progress(n)`` callback the scoring functions take
    (None when there are no bars). In a caller's Progress, a finished stage is hidden when the next
    starts, so a pipeline evaluating many models does not pile up bars.
    """

    def __init__(self, progress):
        self.own = progress is True
        self.bars = None
        self.last = None
        if progress is True:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bars = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            )
        elif progress not in (None, False):
            self.bars = progress

    def __enter__(self):
        if self.own:
            self.bars.start()
        return self

    def __exit__(self, *exc):
        if self.own:
            self.bars.stop()
        else:
            self._hide_last()

    def _hide_last(self):
        if self.bars is not None and not self.own and self.last is not None:
            self.bars.update(self.last, visible=False)

    def stage(self, description: str, total: int) -> Callable[[int], None] | None:
        if self.bars is None:
            return None
        self._hide_last()
        task = self.last = self.bars.add_task(description, total=total)
        return lambda n: self.bars.advance(task, n)
