"""Progress on stderr: a bar (cells done/N, the running cell, epoch) on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

    from tlbench.plugin.specs import Cell

log = logging.getLogger("tlbench.run")


class Progress:
    """Fed by the driver: the cells to run, each epoch a worker reports, each finished record."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.bar: tqdm[Any] | None = None
        self.cells: list[Cell] = []
        self.done = 0

    def started(self, cells: Sequence[Cell]) -> None:
        self.cells, self.done = list(cells), 0
        if self.interactive and self.cells:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.cells), file=self.stream, unit="cell", dynamic_ncols=True)
        self._announce()

    def _announce(self) -> None:
        """The next cell, in submission order (the local executor runs them in that order)."""
        if self.done >= len(self.cells):
            return
        cell_id = self.cells[self.done].cell_id
        if self.bar is not None:
            self.bar.set_description(cell_id)
        else:
            log.info("cell %d/%d %s", self.done + 1, len(self.cells), cell_id)

    def epoch(self, epoch: int, total: int, logs: Mapping[str, float]) -> None:
        accuracy = logs.get("val_accuracy")
        text = f"epoch {epoch}/{total}" + (f" val_acc={accuracy:.3f}" if accuracy is not None else "")
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        elif self.done < len(self.cells):
            log.info("  %s %s", self.cells[self.done].cell_id, text)

    def cell_finished(self, record: Mapping[str, Any]) -> None:
        accuracy = record["metrics"].get("test_accuracy")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(f"{record['status']:>14}  acc={shown}  {record['cell_id']}", file=self.stream)
            if self.bar.n == self.bar.total:
                self.bar.close()
        else:
            log.info("  %s: %s, test_accuracy=%s, %.1f s", record["cell_id"], record["status"], shown,
                     record["metrics"].get("wall_seconds") or 0)
        self._announce()
