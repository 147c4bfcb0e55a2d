import numpy as np
import pytest
import torch

from advmir.data.contract import load_dataset
from advmir.models.train import (
    TrainConfig,
    augment,
    classification_metrics,
    predict,
    subset_rows,
    train_model,
)
from advmir.models.zoo import load_checkpoint, load_model, save_checkpoint

SPEC = {"frontend": "logmel", "arch": "cnn2d", "arch_args": {"width": 8}}
FAST = {"max_epochs": 8, "min_epochs": 8, "patience": 8, "batch_size": 16, "learning_rate": 0.005}


def test_training_is_seeded_and_checkpoint_round_trips(tiny_dataset, tmp_path):
    ds = load_dataset(tiny_dataset, mmap=False)
    runs = [train_model(ds, SPEC, TrainConfig(seed=3, **FAST), "cpu", tmp_path / str(i)) for i in range(2)]
    (m1, met1, hist1), (m2, met2, hist2) = runs
    assert met1["test_accuracy"] == met2["test_accuracy"]
    np.testing.assert_allclose(hist1["val_loss"], hist2["val_loss"])
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert list(hist1.columns) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    # three well-separated families: training must beat chance (1/3) clearly
    assert met1["test_accuracy"] > 0.6
    assert np.asarray(met1["confusion"]).sum() == met1["n_test"]

    save_checkpoint(tmp_path / "model.ckpt", m1, ds.classes)
    loaded = load_model(tmp_path / "model.ckpt")
    assert not loaded.training and loaded.classes == ds.classes
    x = ds.float_waveforms(ds.split_indices("test"))
    np.testing.assert_allclose(predict(m1, x, "cpu"), predict(loaded, x, "cpu"), atol=1e-5)


def test_checkpoint_refuses_foreign_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not an advmir model checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="train_model"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_halves_are_disjoint_and_stratified(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    a, b = subset_rows(ds, "half_a"), subset_rows(ds, "half_b")
    assert not set(a) & set(b)
    assert sorted(np.concatenate([a, b])) == sorted(ds.split_indices("train"))
    labels = ds.manifest["label_idx"].to_numpy()
    assert abs(np.bincount(labels[a]) - np.bincount(labels[b])).max() <= 1


def test_augment_keeps_range_and_shifts():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 1000)
    x[:, 500] = 0.9
    y = augment(x, gain_db=6.0, max_shift=100, generator=gen)
    assert y.abs().max() <= 1.0
    peaks = y.abs().argmax(1)
    assert (peaks - 500).abs().max() <= 100 and len(set(peaks.tolist())) > 1


def test_metrics():
    m = classification_metrics(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
