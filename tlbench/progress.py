"""Progress on stderr: a bar (cell i/N, cell id, epoch, ETA) on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("tlbench.run")


class Progress:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.bar = None
        self.started = time.monotonic()

    def cell_started(self, index: int, total: int, cell) -> None:
        self.cell_id = cell.cell_id
        if self.interactive:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=self.stream, unit="cell", dynamic_ncols=True)
            self.bar.set_description(cell.cell_id)
        else:
            log.info("cell %d/%d %s", index + 1, total, cell.cell_id)

    def epoch(self, epoch: int, total: int, logs: dict) -> None:
        accuracy = logs.get("val_accuracy")
        text = f"epoch {epoch}/{total}" + (f" val_acc={accuracy:.3f}" if accuracy is not None else "")
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        else:
            log.info("  %s %s", self.cell_id, text)

    def cell_finished(self, record: dict) -> None:
        accuracy = record["metrics"].get("test_accuracy")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(f"{record['status']:>14}  acc={shown}  {record['cell_id']}", file=self.stream)
            if self.bar.n == self.bar.total:
                self.bar.close()
        else:
            log.info("  %s: %s, test_accuracy=%s, %.1f s", record["cell_id"], record["status"], shown,
                     record["metrics"].get("wall_seconds", 0))
