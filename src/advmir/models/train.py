"""Training of one zoo model with pytorch-lightning: seeded, early-stopped, best checkpoint kept."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from advmir.datasets.contract import Dataset
from advmir.models.augment import AugmentConfig, Augmenter
from advmir.models.zoo import WaveformClassifier, build_model

log = logging.getLogger(__name__)

TRAIN_SUBSETS = ("all", "half_a", "half_b")


@dataclass
class TrainConfig:
    """Training settings; mirrors ``training`` in config.yaml (a model may override any key)."""

    max_epochs: int = 30
    min_epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    label_smoothing: float = 0.05
    augment: dict[str, Any] = field(default_factory=dict)
    train_subset: str = "all"
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    adversarial: dict[str, Any] | None = None  # a training mode of advmir.defenses; None: ordinary
    init_from: str | None = None  # a zoo model whose checkpoint the weights start from; None: new weights

    def __post_init__(self) -> None:
        if self.train_subset not in TRAIN_SUBSETS:
            raise ValueError(f"train_subset must be one of {list(TRAIN_SUBSETS)}, got {self.train_subset!r}")
        if self.max_epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("max_epochs and batch_size must be >= 1 and learning_rate > 0")
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"min_epochs ({self.min_epochs}) must not exceed max_epochs ({self.max_epochs})")
        self.augment_cfg = AugmentConfig.from_dict(self.augment)
        self.adversarial_cfg = None
        if self.adversarial is not None:
            from advmir.defenses import AdversarialConfig

            self.adversarial_cfg = AdversarialConfig.from_dict(self.adversarial)


def subset_rows(dataset: Dataset, subset: str, seed: int = 1234) -> np.ndarray:
    """Training rows of one subset. ``half_a``/``half_b`` are a fixed, label-stratified split of the
    training set into disjoint halves (the limited-knowledge attacker trains on ``half_b``)."""
    rows = dataset.split_indices("train")
    if subset == "all":
        return rows
    rng = np.random.default_rng(seed)
    labels = dataset.manifest["label_idx"].to_numpy()[rows]
    half_a = []
    for label in np.unique(labels):
        members = rows[labels == label]
        members = members[rng.permutation(len(members))]
        half_a.append(members[: len(members) // 2])
    in_a = np.isin(rows, np.concatenate(half_a))
    return rows[in_a] if subset == "half_a" else rows[~in_a]


class ClassifierModule(pl.LightningModule):
    """Lightning wrapper: cross-entropy, AdamW, one-cycle learning rate, on-the-fly augmentation
    (:mod:`advmir.models.augment`), and adversarial training when ``cfg.adversarial`` is set
    (:mod:`advmir.defenses.adversarial`: ``defense`` computes the loss of each augmented batch)."""

    def __init__(self, model: WaveformClassifier, cfg: TrainConfig, steps_per_epoch: int) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.augmenter = Augmenter(cfg.augment_cfg, model.spec["sample_rate"], cfg.seed)
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.defense = None
        if cfg.adversarial_cfg is not None:
            from advmir.defenses import build_adversarial

            self.defense = build_adversarial(cfg.adversarial_cfg, cfg.seed)
            extra = self.defense.trainable_modules(self.model)
            if extra is not None:  # trained beside the model, never part of its checkpoint
                self.defense_modules = extra

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, ...], _: int) -> Tensor:
        """batch: (x (B, T), y (B,)) or, with codec versions, (x, x_codec (B, T), has_codec (B,), y)."""
        if len(batch) == 4:
            x, x_codec, has_codec, y = batch
            x = self.augmenter(x, x_codec, has_codec)
        else:
            x, y = batch
            x = self.augmenter(x)
        if self.defense is not None:
            loss, logits = self.defense.training_loss(self.model, x, y, self.loss)
        else:
            logits = self.model(x)
            loss = self.loss(logits, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        if self.defense is not None:  # gaussian validates under its noise; other modes on clean clips
            x = self.defense.validation_input(x, batch_idx)
        logits = self.model(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay
        )
        total_steps = self.cfg.max_epochs * self.steps_per_epoch
        if total_steps < 3:  # too short to warm up and anneal: OneCycleLR divides by zero there
            return opt
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=self.cfg.learning_rate,
            total_steps=total_steps,
            # The warm-up must span at least two steps, or OneCycleLR divides by zero.
            pct_start=min(0.5, max(0.2, 2.0 / total_steps)),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loader(
    dataset: Dataset,
    rows: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    codec_clips: CodecClips | None = None,
) -> DataLoader:
    rows = np.sort(rows)
    x = torch.from_numpy(dataset.float_waveforms(rows))
    y = torch.from_numpy(dataset.manifest["label_idx"].to_numpy()[rows]).long()
    tensors = [x, y]
    if codec_clips is not None:
        x_codec, has_codec = codec_clips.for_ids(dataset.manifest["id"].to_numpy()[rows])
        tensors = [x, torch.from_numpy(x_codec), torch.from_numpy(has_codec), y]
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=gen)


@dataclass
class CodecClips:
    """Lossy-codec versions of training clips (rule ``encode_training_codecs``), keyed by clip id, so
    that a dataset rendered with another split (the generalisation stage) finds its clips too.

    Attributes:
        ids: (M,) manifest ids of the clips that have a codec version.
        audio: (M, T) float32, row k is the decoded codec version of clip ``ids[k]``.
    """

    ids: np.ndarray
    audio: np.ndarray

    @classmethod
    def from_folder(cls, folder: str | Path, clip_samples: int) -> CodecClips:
        """Read ``codec_train.csv`` and ``codec_train.npy`` (T = ``clip_samples``) of ``folder``,
        checked as artifacts (:mod:`advmir.artifacts`)."""
        from advmir.artifacts import open_npy, read_csv

        table = read_csv(Path(folder) / "codec_train.csv", columns=["id"])
        audio = open_npy(Path(folder) / "codec_train.npy", rows=len(table), cols=clip_samples)
        return cls(table["id"].to_numpy(), np.asarray(audio))

    def for_ids(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codec audio (n, T) of the clips ``ids`` (zeros where none) and a has-codec mask (n,)."""
        where = {str(i): k for k, i in enumerate(self.ids)}
        has = np.array([str(i) in where for i in ids], dtype=bool)
        out = np.zeros((len(ids), self.audio.shape[1]), dtype=np.float32)
        if has.any():
            out[has] = self.audio[[where[str(i)] for i in ids[has]]]
        return out, has


@torch.no_grad()
def predict(model: torch.nn.Module, waveforms: np.ndarray, device: str, batch_size: int = 128) -> np.ndarray:
    """Logits of ``model`` on waveforms (N, T) -> (N, n_classes), in batches, in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(waveforms), batch_size):
        x = torch.from_numpy(np.asarray(waveforms[start : start + batch_size], dtype=np.float32))
        out.append(model(x.to(device)).float().cpu())
    return torch.cat(out).numpy()


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix (rows: true, columns: predicted)."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros(n_classes), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros(n_classes), where=confusion.sum(1) > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=precision + recall > 0
    )
    present = confusion.sum(1) > 0
    return {
        "accuracy": float(tp.sum() / max(confusion.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion": confusion.tolist(),
    }


def train_model(
    dataset: Dataset,
    spec: dict[str, Any],
    cfg: TrainConfig,
    device: str,
    work_dir: Path,
    codec_clips: CodecClips | None = None,
    init: dict[str, Any] | None = None,
) -> tuple[WaveformClassifier, dict[str, Any], pd.DataFrame]:
    """Train one model; return the best (by validation accuracy) model, its metrics and the history.

    The model sees ``cfg.train_subset`` of the training split (augmented on the fly, with the
    codec versions of ``codec_clips`` where given), selects its epoch on the valid split, and is
    scored once on the test split: clean, and with white noise at 40, 30 and 20 dB SNR. ``init``, a
    checkpoint dict (:func:`advmir.models.zoo.load_checkpoint`) of the same spec and classes, gives
    the starting weights (``cfg.init_from`` names its model; adversarial fine-tuning of a twin).
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(spec, len(dataset.classes), dataset.sample_rate)
    if (init is None) != (cfg.init_from is None):
        raise ValueError(
            f"training.init_from is {cfg.init_from!r} but {'a' if init is not None else 'no'} starting "
            "checkpoint was given: pass both or neither"
        )
    if init is not None:
        start_from(model, init, dataset.classes, cfg.init_from)
    train_rows = subset_rows(dataset, cfg.train_subset)
    valid_rows = dataset.split_indices("valid")
    if len(valid_rows) == 0:
        raise ValueError("the dataset has no 'valid' split; early stopping needs one (valid_fraction > 0)")
    train_loader = _loader(dataset, train_rows, cfg.batch_size, True, cfg.seed, codec_clips)
    valid_loader = _loader(dataset, valid_rows, 256, False, cfg.seed)
    module = ClassifierModule(model, cfg, steps_per_epoch=len(train_loader))
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    ckpt_cb = pl.callbacks.ModelCheckpoint(
        dirpath=work_dir / "checkpoints", monitor="val_acc", mode="max", save_top_k=1, save_weights_only=True
    )
    stop_cb = pl.callbacks.EarlyStopping(monitor="val_acc", mode="max", patience=cfg.patience)
    csv_logger = pl.loggers.CSVLogger(work_dir, name="history", version=0)
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs,
        min_epochs=min(cfg.min_epochs, cfg.max_epochs),
        accelerator=accelerator,
        devices=1,
        deterministic=True,
        logger=csv_logger,
        callbacks=[
            ckpt_cb,
            stop_cb,
            pl.callbacks.TQDMProgressBar(refresh_rate=20),
            *(module.defense.callbacks() if module.defense is not None else []),
        ],
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, train_loader, valid_loader)
    seconds = time.perf_counter() - start
    best = torch.load(ckpt_cb.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(best)
    model = module.model.to(device).eval()
    test_rows = dataset.split_indices("test")
    labels = dataset.manifest["label_idx"].to_numpy()
    test_audio = dataset.float_waveforms(test_rows)
    logits = predict(model, test_audio, device)
    metrics = classification_metrics(labels[test_rows], logits.argmax(1), len(dataset.classes))
    metrics["noise"] = noise_robustness(model, test_audio, labels[test_rows], device, seed=cfg.seed)
    history = _history(work_dir / "history" / "version_0" / "metrics.csv")
    metrics.update(
        {
            "test_accuracy": metrics.pop("accuracy"),
            "n_train": len(train_rows),
            "n_valid": len(valid_rows),
            "n_test": len(test_rows),
            "best_epoch": int(history.loc[history["val_acc"].idxmax(), "epoch"]) if len(history) else -1,
            "epochs_run": int(trainer.current_epoch),
            "train_seconds": round(seconds, 1),
            "device": device,
            "classes": dataset.classes,
        }
    )
    if module.defense is not None:
        metrics["adversarial"] = module.defense.summary()
    if cfg.init_from is not None:
        metrics["init_from"] = cfg.init_from
    return model, metrics, history


def start_from(
    model: WaveformClassifier, payload: dict[str, Any], classes: list[str], name: str | None
) -> None:
    """Load a trained zoo model's weights (checkpoint dict ``payload``) into ``model``, in place.

    Raises:
        ValueError: naming ``name`` and what differs, when the checkpoint is not a trained zoo model
            of the same front-end, architecture, arguments and classes.
    """
    from advmir.models.zoo import CHECKPOINT_FORMAT

    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"training.init_from {name!r}: its checkpoint is a {payload.get('format')!r}, not a trained zoo "
            f"model's ({CHECKPOINT_FORMAT}); only those can start a training"
        )
    if list(payload["classes"]) != list(classes):
        raise ValueError(
            f"training.init_from {name!r}: its classes {payload['classes']} are not the dataset's {classes}"
        )
    if payload["spec"] != model.spec:
        raise ValueError(
            f"training.init_from {name!r}: its spec {payload['spec']} is not this model's {model.spec}"
        )
    model.load_state_dict(payload["state_dict"])


def noise_robustness(
    model: torch.nn.Module,
    waveforms: np.ndarray,
    labels: np.ndarray,
    device: str,
    snrs_db: tuple[float, ...] = (40.0, 30.0, 20.0),
    seed: int = 0,
) -> list[dict[str, float]]:
    """Accuracy under white Gaussian noise at each per-clip SNR, and the share of clean-correct
    clips it flips: the benign control every attack number stands beside.

    Args:
        waveforms: (N, T) float32 in [-1, 1]; labels: (N,) class indices.
    """
    from advmir.attacks.budgets import radius_for_snr

    clean = predict(model, waveforms, device).argmax(1)
    correct = clean == labels
    rng = np.random.default_rng([seed, 0x4E01])
    rows = []
    for snr in snrs_db:
        noise = rng.standard_normal(waveforms.shape).astype(np.float32)
        unit = noise / np.linalg.norm(noise, axis=1, keepdims=True)
        radius = radius_for_snr(torch.from_numpy(np.asarray(waveforms)), snr, "l2").numpy()[:, None]
        noisy = np.clip(waveforms + unit * radius, -1, 1)
        pred = predict(model, noisy, device).argmax(1)
        rows.append(
            {
                "snr_db": snr,
                "accuracy": float(np.mean(pred == labels)),
                "flip_rate": float(np.mean(pred[correct] != labels[correct])) if correct.any() else 0.0,
            }
        )
    return rows


def _history(path: Path) -> pd.DataFrame:
    """One row per epoch: the logged epoch metrics merged (Lightning writes train/val rows apart)."""
    raw = pd.read_csv(path)
    cols = [c for c in ("train_loss", "train_acc", "val_loss", "val_acc") if c in raw.columns]
    return raw.groupby("epoch", as_index=False)[cols].max()


def default_work_dir() -> Path:
    """A scratch folder for Lightning's own files (removed after the rule's outputs are written)."""
    return Path(tempfile.mkdtemp(prefix="advmir-train-"))
