"""The run's TensorBoard logger: Lightning's, writing each logging call's scalars as one event."""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor


class OneEventTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, except that the scalars of one `log_metrics` call go into a
    single event (one `Summary` holding a value per scalar) instead of one event each.

    TensorBoard reads the file the same way: one curve per name, each point at the given step.
    What changes is the cost: every event wakes the SummaryWriter's writer thread, which then
    competes with training for the interpreter lock; a training epoch logs six scalars at once.
    """

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._prefix or any(isinstance(v, dict) for v in metrics.values()):
            return super().log_metrics(metrics, step)  # prefixed names and add_scalars: Lightning's way
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard.summary import scalar

        # The values SummaryWriter.add_scalar would write one event each, written as one event.
        values = [scalar(k, v.item() if isinstance(v, Tensor) else v).value[0] for k, v in metrics.items()]
        self.experiment._get_file_writer().add_summary(Summary(value=values), step)
