import numpy as np
import pytest
import torch

from advmir.artifacts import ArtifactError
from advmir.datasets.contract import load_dataset
from advmir.models.augment import NOISE_COLOURS, AugmentConfig, Augmenter, add_noise, shift
from advmir.models.train import (
    CodecClips,
    TrainConfig,
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
    with pytest.raises(ArtifactError, match="not an advmir model checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(ArtifactError, match=r"missing\.ckpt: is missing; rebuild it with: snakemake"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_block_order_is_recorded_and_old_checkpoints_keep_theirs(tmp_path):
    """New checkpoints say pool_first; one written before the option loads in the order it was
    trained in (conv -> BN -> ReLU -> pool), with the same outputs, never silently reordered."""
    from advmir.models.zoo import build_model

    model = build_model(SPEC, 3, 16000).eval()
    assert model.spec["arch_args"]["pool_first"] is True
    assert isinstance(model.arch.features[0][1], torch.nn.MaxPool2d)

    old = build_model({**SPEC, "arch_args": {"width": 8, "pool_first": False}}, 3, 16000).eval()
    with torch.no_grad():  # non-trivial statistics, so the two orders give different outputs
        for m in old.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.weight.uniform_(-1.0, 1.0)
    del old.spec["arch_args"]["pool_first"]  # as a checkpoint from before the option
    save_checkpoint(tmp_path / "old.ckpt", old, ["a", "b", "c"])
    loaded = load_model(tmp_path / "old.ckpt")
    assert isinstance(loaded.arch.features[0][-1], torch.nn.MaxPool2d)
    x = torch.randn(4, 8000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old(x))
    with pytest.raises(RuntimeError, match="Missing key"):  # the other order refuses its weights
        build_model(SPEC, 3, 16000).load_state_dict(old.state_dict())


def test_halves_are_disjoint_and_stratified(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    a, b = subset_rows(ds, "half_a"), subset_rows(ds, "half_b")
    assert not set(a) & set(b)
    assert sorted(np.concatenate([a, b])) == sorted(ds.split_indices("train"))
    labels = ds.manifest["label_idx"].to_numpy()
    assert abs(np.bincount(labels[a]) - np.bincount(labels[b])).max() <= 1


def test_shift_keeps_range_and_moves_clips():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 1000)
    x[:, 500] = 0.9
    y = shift(x, 100, gen)
    assert y.abs().max() <= 1.0
    peaks = y.abs().argmax(1)
    assert (peaks - 500).abs().max() <= 100 and len(set(peaks.tolist())) > 1


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_background_noise_has_the_drawn_snr_and_colour(colour):
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(16000) / 16000
    x = 0.3 * torch.sin(2 * torch.pi * 440 * t).repeat(4, 1)
    snr = torch.tensor([20.0, 30.0, 40.0, 60.0])
    y = add_noise(x, snr, torch.full((4,), NOISE_COLOURS[colour]), gen)
    noise = y - x
    measured = 10 * torch.log10(x.pow(2).sum(1) / noise.pow(2).sum(1))
    torch.testing.assert_close(measured, snr, atol=0.01, rtol=0)
    spec = torch.fft.rfft(noise[0]).abs().pow(2)
    low, high = spec[20:200].mean(), spec[4000:6000].mean()
    assert (low / high > 20) == (colour != "white")


def test_augmenter_is_seeded_bounded_and_uses_codec_versions():
    cfg = AugmentConfig(n_rooms=2, codec_prob=1.0, noise_prob=0.0, room_prob=0.0, eq_prob=0.0,
                        detune_prob=0.0, gain_db=0.0, shift_seconds=0.0)  # fmt: skip
    x = torch.rand(6, 4000) * 1.6 - 0.8
    x_codec = torch.full_like(x, 0.25)
    has = torch.tensor([True, False, True, False, True, False])
    out = Augmenter(cfg, 16000, seed=0)(x, x_codec, has)
    torch.testing.assert_close(out[has], x_codec[has])
    torch.testing.assert_close(out[~has], x[~has])
    full = AugmentConfig(n_rooms=2)
    a, b = Augmenter(full, 16000, seed=5)(x), Augmenter(full, 16000, seed=5)(x)
    torch.testing.assert_close(a, b)
    assert a.abs().max() <= 1.0 and not torch.equal(a, x)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"noise_snr_db": [60, 20]}, "noise_snr_db is inverted"),
        ({"noise_snr_db": ["loud", 20]}, "noise_snr_db must be"),
        ({"noise_prob": 1.5}, "noise_prob must be a probability"),
        ({"noise_colours": ["purple"]}, "noise_colours"),
        ({"reverb": 0.5}, "unknown keys"),
    ],
)
def test_bad_augmentation_settings_name_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_dict(values)


def test_codec_clips_align_to_clip_ids():
    clips = CodecClips(np.array(["g", "c"]), np.stack([np.full(4, 0.7), np.full(4, 0.3)]).astype(np.float32))
    audio, has = clips.for_ids(np.array(["a", "c", "g"]))
    assert has.tolist() == [False, True, True]
    np.testing.assert_allclose(audio[:, 0], [0.0, 0.3, 0.7])


def test_min_epochs_above_max_is_refused():
    with pytest.raises(ValueError, match="min_epochs"):
        TrainConfig(max_epochs=2, min_epochs=3)


def test_metrics():
    m = classification_metrics(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
