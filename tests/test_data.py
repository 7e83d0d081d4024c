"""Channels are read and checked with one-line errors naming the file; batches shard by rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import npz_declaring, write_channel
from titanic_lightning.data.channels import load_channel, num_features
from titanic_lightning.data.datamodule import ShardedBatchSampler, TensorBatches, TitanicDataModule, TrainBatches
from titanic_lightning.errors import UsageError


def test_directory_channel_concatenates_files_in_name_order(tmp_path):
    a = write_channel(tmp_path / "ch" / "a.npz", "train", rows=10, seed=1)
    b = write_channel(tmp_path / "ch" / "b.npz", "train", rows=7, seed=2)
    X, y = load_channel(tmp_path / "ch", "train")
    with np.load(a) as first, np.load(b) as second:
        np.testing.assert_array_equal(X, np.concatenate([first["X_train"], second["X_train"]]))
    assert X.dtype == np.float32 and y.shape == (17,)


def test_plain_X_y_keys_are_accepted(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, X=np.ones((4, 3)), y=np.array([0, 1, 0, 1]))
    X, y = load_channel(path, "val")
    assert X.shape == (4, 3) and y.tolist() == [0, 1, 0, 1]
    assert num_features(path, "val") == 3


BAD_CHANNELS = [
    ("missing key", dict(X_train=np.ones((4, 2))), "missing key y_train"),
    ("1-D features", dict(X_train=np.ones(4), y_train=np.zeros(4)), "features must be 2-D"),
    ("2-D labels", dict(X_train=np.ones((4, 2)), y_train=np.zeros((4, 1))), "labels must be 1-D"),
    ("lengths", dict(X_train=np.ones((4, 2)), y_train=np.zeros(3)), "4 feature rows but 3 labels"),
    ("zero rows", dict(X_train=np.ones((0, 2)), y_train=np.zeros(0)), "zero rows"),
    ("nan", dict(X_train=np.array([[np.nan, 1.0]]), y_train=np.zeros(1)), "NaN or infinite"),
    ("inf", dict(X_train=np.array([[np.inf, 1.0]]), y_train=np.zeros(1)), "NaN or infinite"),
    ("beyond float32", dict(X_train=np.array([[1e300, 1.0]]), y_train=np.zeros(1)), "beyond float32's range"),
    ("labels", dict(X_train=np.ones((2, 2)), y_train=np.array([0, 2])), "labels must be 0 or 1"),
    ("strings", dict(X_train=np.array([["a", "b"]]), y_train=np.zeros(1)), "must be numeric"),
    ("object", dict(X_train=np.array([[1, None]], dtype=object), y_train=np.zeros(1)), "object (pickled)"),
]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # one line: no stray warning of NumPy's before it
@pytest.mark.parametrize(("case", "arrays", "message"), BAD_CHANNELS, ids=[c[0] for c in BAD_CHANNELS])
def test_bad_npz_is_a_usage_error_naming_the_file(tmp_path, case, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError) as err:
        load_channel(path, "train")
    assert str(path) in str(err.value) and message in str(err.value)


def test_not_an_npz_and_empty_directory(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(UsageError, match="junk.npz: not a"):
        load_channel(junk, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no .npz file"):
        load_channel(tmp_path / "empty", "train")


def test_zero_feature_columns_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "empty_features.npz"
    np.savez(path, X_train=np.zeros((4, 0), "float32"), y_train=np.array([0, 1, 0, 1]))
    for read in (load_channel, num_features):
        with pytest.raises(UsageError, match=f"^{path}: features have zero columns"):
            read(path, "train")


@pytest.mark.parametrize("claim_in_zip", [False, True], ids=["header only", "header and zip entry"])
def test_declared_shape_is_checked_before_allocating(tmp_path, claim_in_zip):
    # A few hundred bytes declaring 10**8 x 7 float32 (2.8 GB): refused from the headers alone. With the
    # zip entry's size claiming as much, the claim is held against what its compressed bytes can expand to.
    path = npz_declaring(tmp_path / "claims.npz", "train", rows=10**8, claim_in_zip=claim_in_zip)
    assert path.stat().st_size < 5000
    for read in (load_channel, num_features):
        with pytest.raises(UsageError, match=rf"^{path}: array X_train declares shape \(100000000, 7\) of float32"):
            read(path, "train")


def test_declared_10_to_the_12_rows_end_in_one_error_not_memory_error(tmp_path):
    path = npz_declaring(tmp_path / "huge.npz", "train", rows=10**12)
    with pytest.raises(UsageError, match=r"declares shape \(1000000000000, 7\)"):
        load_channel(path, "train")


def test_compressed_npz_with_a_high_ratio_still_loads(tmp_path):
    # A million rows of zeros compress about 1000-fold: the size check must not refuse honest files.
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, X_train=np.zeros((1_000_000, 7), "float32"), y_train=np.zeros(1_000_000, "int64"))
    X, y = load_channel(path, "train")
    assert X.shape == (1_000_000, 7) and num_features(path, "train") == 7


def test_feature_counts_must_match_across_splits(tmp_path):
    train = write_channel(tmp_path / "train_data.npz", "train", features=5)
    val = write_channel(tmp_path / "val_data.npz", "val", features=4)
    dm = TitanicDataModule(train, val)
    with pytest.raises(UsageError, match=r"val_data.npz: 4 features, but the training channel .* has 5"):
        dm.setup("fit")


@pytest.mark.parametrize(("rows", "world", "batch"), [(569, 2, 32), (10, 3, 4), (7, 4, 100), (100, 1, 16)])
def test_training_shards_are_disjoint_padded_and_equal(rows, world, batch):
    samplers = [ShardedBatchSampler(rows, batch, shuffle=True, seed=7, rank=r, world_size=world) for r in range(world)]
    for s in samplers:
        s.set_epoch(3)
    shards = [torch.cat(list(iter(s))) for s in samplers]
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1  # every rank the same number of rows ...
    assert len({len(s) for s in samplers}) == 1  # ... and of steps
    all_rows = torch.cat(shards)
    assert set(all_rows.tolist()) == set(range(rows))  # together they cover the data
    assert len(all_rows) - rows <= world - 1  # duplicates are only the padding
    assert len(list(iter(samplers[0]))) == len(samplers[0])


def test_epochs_reshuffle_identically_on_every_rank():
    a = ShardedBatchSampler(50, 8, shuffle=True, seed=1, rank=0, world_size=2)
    b = ShardedBatchSampler(50, 8, shuffle=True, seed=1, rank=1, world_size=2)
    first = torch.cat(list(iter(a)))
    a.set_epoch(1)
    b.set_epoch(1)
    second_a, second_b = torch.cat(list(iter(a))), torch.cat(list(iter(b)))
    assert not torch.equal(first, second_a)
    assert not set(second_a.tolist()) & set(second_b.tolist())


def test_evaluation_shards_are_not_padded():
    shards = [torch.cat(list(iter(ShardedBatchSampler(7, 100, shuffle=False, seed=0, rank=r, world_size=3, pad=False))))
              for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(7))


def test_batches_are_cut_from_memory(tiny_channels):
    dm = TitanicDataModule(tiny_channels["train"], tiny_channels["val"], tiny_channels["test"], batch_size=16)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [len(y) for _, y in batches] == [16, 16, 16]
    X, y = batches[0]
    assert X.shape == (16, 5) and X.dtype == torch.float32 and y.dtype == torch.float32
    assert dm.num_features == 5


def test_each_channel_is_listed_and_its_first_header_read_once(tmp_path, monkeypatch):
    from titanic_lightning.data import channels
    from titanic_lightning.data import datamodule as data

    write_channel(tmp_path / "train" / "a.npz", "train", rows=10, seed=1)
    write_channel(tmp_path / "train" / "b.npz", "train", rows=7, seed=2)
    write_channel(tmp_path / "val.npz", "val", rows=5, seed=3)
    listed, headers = [], []
    monkeypatch.setattr(data, "channel_files", lambda path, real=data.channel_files: listed.append(path) or real(path))
    counted = lambda path, split, real=channels.check_headers: headers.append(path.name) or real(path, split)  # noqa: E731
    for module in (data, channels):  # the DataModule reads the first header, the channel reader the others
        monkeypatch.setattr(module, "check_headers", counted)
    dm = TitanicDataModule(tmp_path / "train", tmp_path / "val.npz")
    assert dm.num_features == 5  # what the model is built from, before the data is loaded
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 17 and data.DATA_SHA256 in dm.hparams
    assert sorted(map(str, listed)) == sorted([str(tmp_path / "train"), str(tmp_path / "val.npz")])
    assert sorted(headers) == ["a.npz", "b.npz", "val.npz"]


def test_train_loader_state_resumes_inside_an_epoch():
    sampler = ShardedBatchSampler(100, 10, shuffle=True, seed=3, rank=0, world_size=2)
    loader = TrainBatches(TensorBatches(torch.arange(100.0)[:, None], torch.zeros(100)), sampler, lambda: (4, 3))
    state = loader.state_dict()
    assert state == {"epoch": 4, "batches_done": 3, "world_size": 2}
    sampler.set_epoch(4)
    full = list(sampler)
    loader.load_state_dict(state)
    assert [b.tolist() for b in sampler] == [b.tolist() for b in full[3:]]  # the batches not yet trained on
    assert len(list(sampler)) == len(full)  # only the one resumed pass is shortened
    sampler.set_epoch(5)
    loader.load_state_dict(state)  # a state for another epoch than the next pass skips nothing
    assert len(list(sampler)) == len(full)
