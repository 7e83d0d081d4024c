"""npz channels (`titanic_lightning.data.channels`) → in-memory tensor batches: the LightningDataModule.

Every split must have the training split's feature count; each error names the file.

Batches are cut from tensors held in memory by index: a per-epoch permutation (the same on every
rank), sharded across DDP ranks the way DistributedSampler does it. There is no per-sample
`__getitem__` and no collate: one indexing operation per batch. Training shards are padded to equal
length so every rank runs the same number of steps; evaluation shards are not padded, so metrics
aggregated over ranks see every row exactly once.

The training loader is resumable mid-epoch: Lightning keeps its `state_dict()` (which epoch, how
many of its batches were trained on) in every checkpoint and hands it back on a restart, so a run
stopped inside an epoch continues with the batches it had not trained on, none repeated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from titanic_lightning.data.channels import channel_files, check_headers, load_channel, training_data_sha256
from titanic_lightning.errors import UsageError

# Evaluation needs no gradients, so it takes large batches whatever the training batch size.
EVAL_BATCH_SIZE = 8192
# The DataModule hyperparameter holding the training data's identity.
DATA_SHA256 = "data_sha256"


class TensorBatches(Dataset):
    """Rows held as tensors; indexing with a tensor of row indices returns a whole batch."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor):
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X[index], self.y[index]

    def to(self, device: torch.device) -> None:
        self.X, self.y = self.X.to(device), self.y.to(device)


class ShardedBatchSampler(Sampler[torch.Tensor]):
    """Yields this rank's batches of row indices for one epoch.

    The permutation depends only on (seed, epoch), so every rank draws the same one and takes the
    slice `rank::world_size` of it — DistributedSampler's sharding, applied to batches.
    """

    def __init__(self, num_rows: int, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, pad: bool = True, epoch_fn: Callable[[], int] | None = None):
        self.num_rows, self.shuffle, self.seed = num_rows, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.batch_size = batch_size
        self.rows_yielded = 0  # rows of the batches handed out, for the run's rows/s
        self._epoch, self.epoch_fn = 0, epoch_fn
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained on)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next pass over `epoch` start after its first `batches_done` batches."""
        self._resume = (epoch, batches_done)

    @property
    def epoch(self) -> int:
        # On a resumed fit Lightning draws the first epoch's batches before it calls set_epoch, so
        # the fit loop's count of processed epochs is the reliable source when there is a trainer.
        return self.epoch_fn() if self.epoch_fn is not None else self._epoch

    def shard(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_rows, generator=generator)
        else:
            order = torch.arange(self.num_rows)
        if self.pad and self.num_rows % self.world_size:
            extra = self.world_size - self.num_rows % self.world_size
            order = torch.cat([order, order[:extra]])
        return order[self.rank :: self.world_size]

    def __iter__(self):
        order = self.shard()
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == self.epoch:
            order = order[min(resume[1] * self.batch_size, len(order)):]
        # A batch size above the shard's rows is full-batch; torch's split takes at most an int64.
        for batch in order.split(min(self.batch_size, max(len(order), 1))):
            self.rows_yielded += len(batch)
            yield batch

    def __len__(self) -> int:
        rows = math.ceil(self.num_rows / self.world_size) if self.pad else len(range(self.rank, self.num_rows, self.world_size))
        return math.ceil(rows / self.batch_size)


def loader_options(sampler: ShardedBatchSampler) -> dict:
    # batch_size=None: the sampler yields whole index batches and the dataset answers each with one
    # indexing operation. A generator of its own: otherwise every new iterator draws a seed from
    # the global random state, and a run resumed mid-epoch would draw other dropout masks.
    return {"sampler": sampler, "batch_size": None, "generator": torch.Generator()}


class TrainBatches(DataLoader):
    """The training loader, with Lightning's Stateful protocol (`state_dict`/`load_state_dict`).

    `progress_fn` returns (epoch, batches of it trained) from the trainer's counters: the loader
    itself runs one batch ahead of training, because Lightning prefetches.
    """

    def __init__(self, dataset: TensorBatches, sampler: ShardedBatchSampler, progress_fn: Callable[[], tuple[int, int]]):
        super().__init__(dataset, **loader_options(sampler))
        self.progress_fn = progress_fn

    def state_dict(self) -> dict[str, int]:
        epoch, batches_done = self.progress_fn()
        return {"epoch": epoch, "batches_done": batches_done, "world_size": self.sampler.world_size}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        # resume.checkpoint_to_resume has refused a mid-epoch state saved by another number of processes.
        self.sampler.resume_at(int(state_dict["epoch"]), int(state_dict["batches_done"]))


def data_parallel_rank(trainer: pl.Trainer | None) -> tuple[int, int]:
    """(this process's data-parallel rank, data-parallel processes): what Lightning's distributed
    sampler would shard by. The world, except that the processes of a tensor-parallel group all
    take the same batches."""
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) if trainer is not None else None
    if not kwargs:
        return 0, 1
    return kwargs["rank"], kwargs["num_replicas"]


class TitanicDataModule(pl.LightningDataModule):
    """Serves the train/val/test npz channels as in-memory batches.

    Args:
        train: Training channel (npz file or directory).
        val: Validation channel.
        test: Test channel, or None.
        batch_size: Rows per step on each process; at least the shard's size means full batch.
        seed: Seed of the per-epoch shuffle.
    """

    def __init__(self, train: Path, val: Path, test: Path | None = None, batch_size: int = 32, seed: int = 42):
        super().__init__()
        # Saved into checkpoints: a resume with another batch size or seed would not be the same run.
        self.save_hyperparameters("batch_size", "seed")
        self.paths = {"train": Path(train), "val": Path(val), "test": Path(test) if test else None}
        self.batch_size, self.seed = batch_size, seed
        self.datasets: dict[str, TensorBatches] = {}
        # Each channel is listed (and its existence checked) once, and the training channel's first
        # header read once: num_features, setup and the data's identity share them.
        self._files: dict[str, list[Path]] = {}
        self._train_headers: tuple[str, str, tuple[int, ...]] | None = None
        self._train_sampler: ShardedBatchSampler | None = None

    def channel_files(self, split: str) -> list[Path]:
        if split not in self._files:
            self._files[split] = channel_files(self.paths[split])
        return self._files[split]

    @property
    def num_features(self) -> int:
        """Feature count read from the training channel's first array header, without loading the data."""
        if self._train_headers is None:
            self._train_headers = check_headers(self.channel_files("train")[0], "train")
        return int(self._train_headers[2][1])

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        widths = {}
        for split, path in self.paths.items():
            if path is None:
                continue
            X, y = load_channel(path, split, self.channel_files(split),
                                self._train_headers if split == "train" else None)
            widths[split] = X.shape[1]
            self.datasets[split] = TensorBatches(torch.from_numpy(X), torch.from_numpy(y))
        # Saved into checkpoints beside batch_size and seed: a checkpoint trained on other data is
        # not this run's to continue (resume.checkpoint_to_resume compares it).
        self.hparams[DATA_SHA256] = training_data_sha256(self.paths["train"], self.paths["val"], self._files)
        for split, width in widths.items():
            if width != widths["train"]:
                raise UsageError(
                    f"{self.paths[split]}: {width} features, but the training channel {self.paths['train']} has "
                    f"{widths['train']}"
                )

    def to(self, device: torch.device) -> None:
        """Move the held tensors to the training device once, instead of every batch."""
        for dataset in self.datasets.values():
            dataset.to(device)

    def _sampler(self, split: str, train: bool) -> ShardedBatchSampler:
        trainer = self.trainer
        rank, world = data_parallel_rank(trainer)
        return ShardedBatchSampler(
            len(self.datasets[split]), self.batch_size if train else EVAL_BATCH_SIZE,
            shuffle=train, seed=self.seed, rank=rank, world_size=world, pad=train,
            epoch_fn=(lambda: trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else None,
        )

    def _dataset(self, split: str) -> TensorBatches:
        """The split's tensors, moved to the training device once (batches are then cut there)."""
        dataset = self.datasets[split]
        if self.trainer is not None:
            dataset.to(self.trainer.strategy.root_device)
        return dataset

    def _loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(self._dataset(split), **loader_options(self._sampler(split, train)))

    def _train_progress(self) -> tuple[int, int]:
        """(epoch, batches of it trained) at a checkpoint: one optimizer step per batch, and every
        epoch has the same number of batches. At an epoch end (its epoch counted as processed) the
        next epoch starts from its first batch; inside an epoch, or after its last batch but before
        Lightning counts it, the batches already trained are skipped."""
        trainer = self.trainer
        epochs = trainer.fit_loop.epoch_progress.current.processed
        return epochs, trainer.global_step - epochs * trainer.num_training_batches

    @property
    def rows_trained(self) -> int:
        """Rows of the training batches this process handed out (and so trained on, once fit ends)."""
        return self._train_sampler.rows_yielded if self._train_sampler is not None else 0

    def train_dataloader(self) -> DataLoader:
        self._train_sampler = self._sampler("train", train=True)
        return TrainBatches(self._dataset("train"), self._train_sampler, self._train_progress)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise UsageError("no test channel was given")
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.datasets else "val", train=False)
