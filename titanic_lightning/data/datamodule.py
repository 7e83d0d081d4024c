"""The LightningDataModule: npz channels → batches cut by index from tensors held in memory (no
per-sample `__getitem__`, no collate). Each epoch's permutation is sharded across ranks as
DistributedSampler does it, training shards padded to the same steps on every rank, evaluation shards
not (metrics see every row once). The training loader resumes mid-epoch from its checkpointed state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from titanic_lightning.data.channels import channel_files, check_headers, load_channel, training_data_sha256
from titanic_lightning.errors import UsageError

EVAL_BATCH_SIZE = 8192  # evaluation needs no gradients, so it takes large batches whatever the training batch size
DATA_SHA256 = "data_sha256"  # the DataModule hyperparameter holding the training data's identity


TensorBatches = TensorDataset  # rows held as tensors: indexing with a tensor of row indices returns a whole batch


class ShardedBatchSampler(Sampler[torch.Tensor]):
    """This rank's batches of row indices: the slice `rank::world_size` of the (seed, epoch) permutation."""

    def __init__(self, num_rows: int, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, pad: bool = True, epoch_fn: Callable[[], int] | None = None):
        self.num_rows, self.batch_size, self.shuffle, self.seed = num_rows, batch_size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.rows_yielded = 0  # rows of the batches handed out, for the run's rows/s
        self._epoch, self.epoch_fn = 0, epoch_fn
        self.resume: tuple[int, int] | None = None  # (epoch, batches already trained): where the next pass starts

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        # On a resumed fit Lightning draws the first epoch's batches before it calls set_epoch: the
        # fit loop's count of processed epochs is the reliable source when there is a trainer.
        return self.epoch_fn() if self.epoch_fn is not None else self._epoch

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_rows)
        if self.pad and self.num_rows % self.world_size:
            order = torch.cat([order, order[:self.world_size - self.num_rows % self.world_size]])
        order = order[self.rank :: self.world_size]
        resume, self.resume = self.resume, None
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
    # batch_size=None: the sampler yields whole index batches. A generator of its own: otherwise every
    # new iterator draws a seed from the global random state, and a resumed run would draw other dropout masks.
    return {"sampler": sampler, "batch_size": None, "generator": torch.Generator()}


class TrainBatches(DataLoader):
    """The training loader, with Lightning's Stateful protocol. `progress_fn` returns (epoch, batches of
    it trained) from the trainer's counters: the loader itself runs a batch ahead (Lightning prefetches)."""

    def __init__(self, dataset: TensorBatches, sampler: ShardedBatchSampler, progress_fn: Callable[[], tuple[int, int]]):
        super().__init__(dataset, **loader_options(sampler))
        self.progress_fn = progress_fn

    def state_dict(self) -> dict[str, int]:
        epoch, batches_done = self.progress_fn()
        return {"epoch": epoch, "batches_done": batches_done, "world_size": self.sampler.world_size}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        # checkpoints.checkpoint_to_resume has refused a mid-epoch state saved by another number of processes.
        self.sampler.resume = (int(state_dict["epoch"]), int(state_dict["batches_done"]))


def data_parallel_rank(trainer: pl.Trainer | None) -> tuple[int, int]:
    """(data-parallel rank, data-parallel processes), as Lightning's distributed sampler would shard:
    the processes of a tensor-parallel group all take the same batches."""
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) if trainer is not None else None
    return (kwargs["rank"], kwargs["num_replicas"]) if kwargs else (0, 1)


class TitanicDataModule(pl.LightningDataModule):
    """The train/val/test channels as batches of `batch_size` rows per process (full batch when larger)."""

    def __init__(self, train: Path, val: Path, test: Path | None = None, batch_size: int = 32, seed: int = 42):
        super().__init__()
        # Saved into checkpoints: a resume with another batch size or seed would not be the same run.
        self.save_hyperparameters("batch_size", "seed")
        self.paths = {"train": Path(train), "val": Path(val), "test": Path(test) if test else None}
        self.datasets: dict[str, TensorBatches] = {}
        self._train_sampler: ShardedBatchSampler | None = None

    @cached_property
    def _files(self) -> dict[str, list[Path]]:
        """Each channel's files, listed once."""
        return {split: channel_files(path) for split, path in self.paths.items() if path is not None}

    @cached_property
    def _train_headers(self) -> tuple[str, str, tuple[int, ...]]:
        return check_headers(self._files["train"][0], "train")

    @property
    def num_features(self) -> int:
        """Feature count read from the training channel's first array header, without loading the data."""
        return int(self._train_headers[2][1])

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for split, files in self._files.items():
            X, y = load_channel(self.paths[split], split, files, self._train_headers if split == "train" else None)
            self.datasets[split] = TensorBatches(torch.from_numpy(X), torch.from_numpy(y))
        # Beside batch_size and seed: checkpoints.checkpoint_to_resume refuses a checkpoint trained on other data.
        self.hparams[DATA_SHA256] = training_data_sha256(self.paths["train"], self.paths["val"], self._files)
        width = self.datasets["train"].tensors[0].shape[1]
        for split, dataset in self.datasets.items():
            if dataset.tensors[0].shape[1] != width:
                raise UsageError(f"{self.paths[split]}: {dataset.tensors[0].shape[1]} features, but the training channel "
                                 f"{self.paths['train']} has {width}")

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        trainer = self.trainer
        dataset = self.datasets[split]
        if trainer is not None:  # moved once: batches are then cut on the training device
            dataset.tensors = tuple(t.to(trainer.strategy.root_device) for t in dataset.tensors)
        rank, world = data_parallel_rank(trainer)
        sampler = ShardedBatchSampler(
            len(dataset), self.hparams.batch_size if train else EVAL_BATCH_SIZE,
            shuffle=train, seed=self.hparams.seed, rank=rank, world_size=world, pad=train,
            epoch_fn=(lambda: trainer.fit_loop.epoch_progress.current.processed) if trainer is not None else None,
        )
        if not train:
            return DataLoader(dataset, **loader_options(sampler))
        self._train_sampler = sampler
        return TrainBatches(dataset, sampler, self._train_progress)

    def _train_progress(self) -> tuple[int, int]:
        """(epoch, batches of it trained) at a checkpoint: one optimizer step per batch, the same batches
        every epoch. At an epoch end (counted as processed) the next epoch starts from its first batch."""
        trainer = self.trainer
        epochs = trainer.fit_loop.epoch_progress.current.processed
        return epochs, trainer.global_step - epochs * trainer.num_training_batches

    @property
    def rows_trained(self) -> int:
        """Rows of the training batches this process handed out (and so trained on, once fit ends)."""
        return self._train_sampler.rows_yielded if self._train_sampler is not None else 0

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise UsageError("no test channel was given")
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.datasets else "val")
