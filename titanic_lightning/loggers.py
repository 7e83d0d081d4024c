"""The run's TensorBoard logger: Lightning's, writing each logging call's scalars as one event,
handed to TensorBoard's writer when the logger saves."""

from __future__ import annotations

import time
from collections.abc import Mapping

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

# Events kept before they are handed over even without a save (a bound on the memory they hold).
MAX_PENDING_EVENTS = 1000


class OneEventTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, with two differences in how, not what, it writes:

    * the scalars of one `log_metrics` call go into a single event (one `Summary` holding a value
      per scalar) instead of one event each;
    * the events wait in memory until the logger saves (Lightning saves it after its own logging
      calls and when the run ends, however it ends; the training epochs' values save it at most
      every `model.LOGGER_SAVE_SECONDS`), each keeping the time it was logged at.

    TensorBoard reads the file the same way: one curve per name, each point at its step and time.
    What changes is the cost: SummaryWriter serialises, checksums (in Python) and writes each
    event on its own thread, which wakes for every event and then competes with training for the
    interpreter lock. A training epoch logs six scalars; one event per epoch, handed over in
    batches, costs a fraction of six handed over at once.
    """

    def __init__(self, *args, **kwargs):
        # The writer's queue holds a whole batch, so handing one over never waits for the thread.
        kwargs.setdefault("max_queue", MAX_PENDING_EVENTS + 10)
        super().__init__(*args, **kwargs)
        self._pending: list[tuple] = []

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._prefix or any(isinstance(v, dict) for v in metrics.values()):
            self._write_pending()
            return super().log_metrics(metrics, step)  # prefixed names and add_scalars: Lightning's way
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard.summary import scalar

        # The values SummaryWriter.add_scalar would write one event each, as one event.
        values = [scalar(k, v.item() if isinstance(v, Tensor) else v).value[0] for k, v in metrics.items()]
        self._pending.append((Summary(value=values), step, time.time()))
        if len(self._pending) >= MAX_PENDING_EVENTS:
            self._write_pending()

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            writer = self.experiment._get_file_writer()  # what SummaryWriter.add_scalar writes through
            for summary, step, walltime in pending:
                writer.add_summary(summary, step, walltime)

    @rank_zero_only
    def save(self) -> None:
        self._write_pending()
        super().save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._write_pending()  # before Lightning flushes and closes the writer
        super().finalize(status)
