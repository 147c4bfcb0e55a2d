"""The augmentation study's table, results/tables/defense_augmentation.csv: does training on
adversarial examples beside the clean batch (the ``adv_aug`` mode, :mod:`advmir.defenses.adversarial`)
raise clean accuracy, and where the undefended model is weakest?

One row per (dataset, augmented model, condition): the augmented model's accuracy beside its base
model's (its undefended twin: same spec, seed and recipe, no augmentation) on the same clips, and
the change in points, with its sign. No model runs here; the numbers come from what other stages
wrote:

- ``clean``: the test split (each model's metrics.json: ``test_accuracy``, ``n_test``).
- ``split:instruments``, ``split:soundfont``: both models retrained on another split mode of
  synth_notes and scored on its test split (generalisation.csv); the default split's rows are the
  ``clean`` row again and are left out.
- ``none`` and each codec setting and room: the codec stage's clean subset (its n clips) as they are
  (``none``) and after each round trip or room (codec_clean_accuracy.csv). Read a codec's change
  beside ``none``'s: the rows share their clips, the ``clean`` row does not.

A condition is in the table only when both models have a row for it; a missing table (the
generalisation or codec stage off) or a model absent from one means fewer rows, and the log says
which. Rows are sorted and numbers rounded (accuracy to 4 decimals, the change to 2), so two runs
write the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from advmir.defenses.settings import AUGMENT_MODES
from advmir.defenses.tables import training_cost
from advmir.errors import InputError

log = logging.getLogger("advmir.defenses")

AUGMENTATION_COLUMNS = [
    "dataset", "model", "base_model", "condition", "condition_kind", "condition_label", "n",
    "accuracy_base", "accuracy", "change_points", "defense", "defense_norm", "defense_snr_db",
    "defense_eps", "steps", "weight", "separate_bn", "train_epochs", "train_cost",
]  # fmt: skip
#: row order within a model: the test split, the other split modes, then the codec stage's subset
KIND_ORDER = {"clean": 0, "split": 1, "none": 2, "codec": 3, "room": 4}
SPLIT_LABELS = {
    "notes": "notes split (unseen notes)",
    "instruments": "instruments split (unseen GM programs)",
    "soundfont": "soundfont split (an unseen SoundFont)",
}
SPLIT_PREFIX = "split:"


def augmentation_table(
    pairs: Mapping[str, str],
    metrics: Mapping[str, Mapping[str, Any]],
    generalisation: pd.DataFrame | None,
    codecs: pd.DataFrame | None,
    dataset: str,
    *,
    default_split: str | None = "notes",
) -> pd.DataFrame:
    """The rows of one dataset (columns :data:`AUGMENTATION_COLUMNS`, order of the module docstring).

    Args:
        pairs: augmented model -> its base model.
        metrics: model -> its metrics.json on ``dataset`` (every model of ``pairs``, both sides).
        generalisation: generalisation.csv (``split``, ``model``, ``test_accuracy``, ``n_test``) of
            ``dataset``'s split modes, or None (the stage is off, or ``dataset`` is not synth_notes).
        codecs: codec_clean_accuracy.csv (``dataset``, ``condition``, ``kind``, ``condition_label``,
            ``target_model``, ``n``, ``accuracy``), or None (the codec stage is off).
        dataset: the dataset of ``metrics``; codec rows of other datasets are ignored.
        default_split: the split mode ``metrics`` were trained on (synth_notes.split): its
            generalisation rows repeat the ``clean`` row and are skipped.

    Raises:
        InputError: a model of ``pairs`` without metrics.
    """
    missing = sorted({m for pair in pairs.items() for m in pair} - set(metrics))
    if missing:
        raise InputError(f"augmentation table of {dataset}: no metrics.json for model(s) {missing}")
    if not pairs:
        log.warning("%s: no augmented model (defenses.models with mode in %s)", dataset, list(AUGMENT_MODES))
    if generalisation is None:
        log.info("%s: no generalisation table (stage off, or not this dataset's): no split rows", dataset)
    if codecs is None:
        log.info("%s: no codec table (codec stage off): no codec or room rows", dataset)
    rows: list[dict[str, Any]] = []
    for model, base in sorted(pairs.items()):
        aug_metrics, base_metrics = metrics[model], metrics[base]
        found = [_clean_row(aug_metrics, base_metrics)]
        if generalisation is not None:
            found += _split_rows(generalisation, model, base, dataset, default_split)
        if codecs is not None:
            found += _codec_rows(codecs, model, base, dataset)
        settings = _settings(model, aug_metrics)
        for order, row in enumerate(found):
            if row["n_base"] is not None and row["n"] != row["n_base"]:
                log.warning(
                    "%s %s: %s has %s clips, %s %s: not the same clips",
                    dataset, row["condition"], model, row["n"], base, row["n_base"],
                )  # fmt: skip
            rows.append(
                {"dataset": dataset, "model": model, "base_model": base, **row, **settings, "order": order}
            )
        log.info("%s: %s vs %s: %d conditions", dataset, model, base, len(found))
    if not rows:
        return pd.DataFrame(columns=AUGMENTATION_COLUMNS)
    table = pd.DataFrame(rows)
    change = (table["accuracy"].astype(float) - table["accuracy_base"].astype(float)) * 100
    table["change_points"] = change.round(2) + 0.0  # + 0.0: no "-0.0" in the file
    for column in ("accuracy", "accuracy_base"):
        table[column] = table[column].astype(float).round(4)
    table["n"] = table["n"].astype("Int64")
    table["rank"] = table["condition_kind"].map(KIND_ORDER)
    table = table.sort_values(["dataset", "model", "rank", "order"], kind="stable")
    return table[AUGMENTATION_COLUMNS].reset_index(drop=True)


def _clean_row(aug: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "condition": "clean",
        "condition_kind": "clean",
        "condition_label": "test split",
        "n": aug.get("n_test"),
        "n_base": base.get("n_test"),
        "accuracy_base": base["test_accuracy"],
        "accuracy": aug["test_accuracy"],
    }


def _split_rows(
    table: pd.DataFrame, model: str, base: str, dataset: str, default_split: str | None
) -> list[dict[str, Any]]:
    if "dataset" in table:
        table = table[table["dataset"] == dataset]
    table = table[table["split"] != default_split]
    rows, skipped = [], []
    for split, runs in table.groupby("split", sort=False):
        have = runs.drop_duplicates("model", keep="last").set_index("model")
        if model not in have.index or base not in have.index:
            skipped.append(str(split))
            continue
        rows.append(
            {
                "condition": f"{SPLIT_PREFIX}{split}",
                "condition_kind": "split",
                "condition_label": SPLIT_LABELS.get(str(split), f"{split} split"),
                "n": _int(have.at[model, "n_test"]),
                "n_base": _int(have.at[base, "n_test"]),
                "accuracy_base": have.at[base, "test_accuracy"],
                "accuracy": have.at[model, "test_accuracy"],
            }
        )
    if skipped:
        log.info(
            "%s: generalisation.csv lacks %s or %s on split(s) %s: no row", dataset, model, base, skipped
        )
    return rows


def _codec_rows(table: pd.DataFrame, model: str, base: str, dataset: str) -> list[dict[str, Any]]:
    table = table[table["dataset"] == dataset]
    rows, skipped = [], []
    for condition, runs in table.groupby("condition", sort=False):
        have = runs.drop_duplicates("target_model", keep="last").set_index("target_model")
        if model not in have.index or base not in have.index:
            skipped.append(str(condition))
            continue
        kind = str(have.at[model, "kind"])
        rows.append(
            {
                "condition": str(condition),
                "condition_kind": kind if kind in KIND_ORDER else "codec",
                "condition_label": str(have.at[model, "condition_label"]),
                "n": _int(have.at[model, "n"]),
                "n_base": _int(have.at[base, "n"]),
                "accuracy_base": have.at[base, "accuracy"],
                "accuracy": have.at[model, "accuracy"],
            }
        )
    if skipped:
        log.info(
            "%s: codec_clean_accuracy.csv lacks %s or %s (not transfer targets?) on %s: no row",
            dataset, model, base, skipped,
        )  # fmt: skip
    return rows


def _settings(model: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The augmented model's training mode and budget (metrics.json's ``adversarial``), and its cost."""
    adversarial = dict(metrics.get("adversarial") or {})
    if adversarial.get("mode") not in AUGMENT_MODES:
        log.warning(
            "%s was not trained in an augmentation mode %s (mode %r)",
            model, list(AUGMENT_MODES), adversarial.get("mode"),
        )  # fmt: skip
    budget = dict(adversarial.get("budget") or {})
    epochs, cost = training_cost(dict(metrics))
    return {
        "defense": adversarial.get("mode", "none"),
        "defense_norm": budget.get("norm", adversarial.get("norm")),
        "defense_snr_db": budget.get("snr_db"),
        "defense_eps": budget.get("eps"),
        "steps": adversarial.get("steps"),
        "weight": adversarial.get("weight"),
        "separate_bn": adversarial.get("separate_bn"),
        "train_epochs": epochs,
        "train_cost": cost,
    }


def _int(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)
