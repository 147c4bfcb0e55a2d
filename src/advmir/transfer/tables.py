"""Tidy tables of transfer after transformations, built from the per-(attack, condition) predictions.

Success of an adversarial example on a target model under a condition (no transformation, a codec
setting, a room) counts only when the target classifies the *clean* version of the example,
through the same condition, correctly (``counted``); an example whose clean version the codec
already breaks tells nothing about the attack. Untargeted success: prediction != label; targeted:
prediction == target. The rule is the attack stage's (:mod:`advmir.attacks.scoring`), not a copy.

Every adversarial example comes with its matched-noise control (the clean clip plus white noise of
the perturbation's L2 norm, through the same condition), scored by the same target with the same
rule on the same counted clips: ``noise_success_rate`` is what plain noise of that size achieves,
and ``excess_over_noise = success_rate - noise_success_rate`` what the attack adds to it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from advmir.artifacts import read_csv
from advmir.attacks.scoring import fooled, success_rule
from advmir.errors import InputError

log = logging.getLogger(__name__)

NONE = "none"
CLEAN = "clean"
FRONTEND_ORDER = ("waveform", "stft", "logmel", "cqt")
KEY = ["dataset", "condition", "row", "target_model"]
NOISE_KBPS = ("noise_achieved_kbps", "noise_payload_kbps")
RATES = ("success_rate", "noise_success_rate", "excess_over_noise")


class TransferTableError(InputError, ValueError):
    """The predictions do not fit together (missing clean predictions, mismatched rows)."""


def model_order(models: Mapping[str, Mapping[str, Any]], names: list[str] | None = None) -> list[str]:
    """Model names grouped by input representation (waveform, stft, logmel, cqt), then by name."""
    names = list(models) if names is None else names

    def key(name: str) -> tuple[int, str]:
        frontend = models.get(name, {}).get("frontend", "")
        rank = FRONTEND_ORDER.index(frontend) if frontend in FRONTEND_ORDER else len(FRONTEND_ORDER)
        return rank, name

    return sorted(names, key=key)


def source_role(name: str, spec: Mapping[str, Any]) -> str:
    """``surrogate`` for a model trained on other data than the targets (limited knowledge), else
    ``model``."""
    subset = spec.get("train_subset", "all")
    return "surrogate" if (subset not in (None, "all") or name.startswith("surrogate")) else "model"


def relation(source: str, target: str, models: Mapping[str, Mapping[str, Any]]) -> str:
    """``self`` (white-box), ``same_representation`` or ``cross_representation``."""
    if source == target:
        return "self"
    same = models.get(source, {}).get("frontend") == models.get(target, {}).get("frontend")
    return "same_representation" if same else "cross_representation"


def _condition_columns(conditions: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{"condition": NONE, "kind": "none", "codec": "none", "label": "no transformation"}]
    for name, spec in conditions.items():
        if name == NONE:
            continue
        rows.append(
            {
                "condition": name,
                "kind": spec.get("kind", "codec"),
                "codec": spec.get("codec", spec.get("kind", "room")),
                "label": spec.get("label", name),
                "bitrate_kbps": spec.get("bitrate_kbps"),
                "quality": spec.get("quality"),
                "codec_sample_rate": spec.get("sample_rate"),
                "lossless": bool(spec.get("codec") == "flac" or spec.get("lossless", False)),
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("bitrate_kbps", "quality", "codec_sample_rate", "lossless"):
        if column not in frame:
            frame[column] = np.nan
    frame["lossless"] = frame["lossless"].fillna(False).astype(bool)
    return frame


def _check_noise(adv: pd.DataFrame) -> None:
    """Every adversarial prediction has its control's prediction (``noise_pred`` >= 0)."""
    noise = adv["noise_pred"] if "noise_pred" in adv else pd.Series(np.nan, index=adv.index)
    missing = noise.isna() | (noise < 0)
    if missing.any():
        first = adv[missing].iloc[0]
        raise TransferTableError(
            f"no matched-noise prediction for {first['source_model']}/{first['attack']} under "
            f"{first['condition']!r} (row {first['row']}, target {first['target_model']}): every attack "
            "prediction needs its control; re-run evaluate-transfer with --noise (the attack run's "
            "matched_noise.npy, or the codec job's decoded_noise.npy)"
        )


def summarize_predictions(
    predictions: Sequence[str | os.PathLike],
    bitrates: Sequence[str | os.PathLike],
    models: Mapping[str, Mapping[str, Any]],
    conditions: Mapping[str, Mapping[str, Any]],
    attacks: Mapping[str, Mapping[str, Any]],
) -> dict[str, pd.DataFrame]:
    """:func:`build_tables` of the prediction tables ``predictions`` (``results/transfer/...csv``)
    and the codec jobs' ``bitrates.csv`` files (none: no bitrate columns), read in the order given."""
    frame = pd.concat([read_csv(p, dtype={"id": str}) for p in predictions], ignore_index=True)
    kbps = (
        pd.concat([read_csv(p, dtype={"id": str}) for p in bitrates], ignore_index=True) if bitrates else None
    )
    return build_tables(frame, models, conditions, kbps, attacks)


def build_tables(
    predictions: pd.DataFrame,
    models: Mapping[str, Mapping[str, Any]],
    conditions: Mapping[str, Mapping[str, Any]],
    bitrates: pd.DataFrame | None = None,
    attacks: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, pd.DataFrame]:
    """All transfer tables from the tidy predictions of every (attack, condition) job.

    Args:
        predictions: rows ``dataset, attack, condition, source_model, index, id, row, label_idx,
            attack_target, target_model, pred, conf, noise_pred, noise_conf``; attack ``clean`` holds
            the clean predictions (their ``noise_pred`` is -1: the clean source has no control);
            ``noise_pred`` of an attack row is the target's prediction on the example's
            matched-noise control under the same condition.
        models: model name -> spec (``frontend``, ``arch``, optional ``train_subset``).
        conditions: condition name -> spec (``kind``: codec or room, ``codec``, ``bitrate_kbps``,
            ``quality``, ``sample_rate``, ``label``); ``none`` is implied.
        bitrates: per-clip ``dataset, source, condition, row, achieved_kbps, payload_kbps`` of the
            codec jobs (attack sources also ``noise_achieved_kbps, noise_payload_kbps``).
        attacks: attack name -> spec (``threat``, ``surrogate``). The examples of a ``surrogate``
            attack stored under ``{model}/{attack}`` were crafted on the surrogate (``crafted_on``),
            which decides self / same / cross representation; default: white-box.

    Returns:
        ``transfer`` (one row per example x source x target x condition x attack, with
        ``noise_pred, noise_success`` of the control), ``clean`` (accuracy of every target on clean
        audio per condition), ``rates`` (per source/target pair: ``success_rate``,
        ``noise_success_rate``, ``excess_over_noise``), ``matrix`` (those three as source x target
        matrices, column ``quantity``), ``representation`` (rates pooled by self / same / cross
        representation and source role).

    Raises:
        TransferTableError: clean predictions missing or inconsistent, or an attack's predictions
            without their matched-noise control.
    """
    cond = _condition_columns(conditions)
    clean = predictions[predictions["attack"] == CLEAN]
    adv = predictions[predictions["attack"] != CLEAN]
    if clean.empty:
        raise TransferTableError(
            "no clean predictions (attack `clean`): the evaluate jobs of the clean source are missing"
        )
    _check_noise(adv)
    kbps = _kbps_columns(bitrates)
    table = join_clean(adv, clean)
    table = score_and_relate(table, models, attacks or {})
    table = table.merge(cond, on="condition", how="left")
    table = _join_kbps(table, kbps)
    columns = [
        "dataset", "attack", "condition", "kind", "codec", "label", "bitrate_kbps", "quality",
        "codec_sample_rate", "threat", "source_model", "crafted_on", "source_frontend", "source_role",
        "target_model", "target_frontend", "relation", "index", "id", "row", "label_idx", "attack_target",
        "pred", "conf", "noise_pred", "noise_conf", "clean_pred", "clean_conf", "clean_correct", "success",
        "noise_success", "counted", "achieved_kbps", "payload_kbps", "noise_achieved_kbps",
        "noise_payload_kbps", "clean_achieved_kbps",
    ]  # fmt: skip
    table = table[columns].rename(columns={"label": "condition_label"})

    return {
        "transfer": table,
        "clean": _clean_accuracy(clean, adv, cond, models, kbps),
        **_rates(table, models),
    }


def _kbps_columns(bitrates: pd.DataFrame | None) -> pd.DataFrame | None:
    """The codec jobs' per-clip bitrates with ``payload_kbps`` (else ``achieved_kbps``) and the control's
    columns always there (NaN without a control); None without bitrates."""
    if bitrates is None or bitrates.empty:
        return None
    kbps = bitrates.assign(payload_kbps=bitrates.get("payload_kbps", bitrates["achieved_kbps"]))
    for column in NOISE_KBPS:
        if column not in kbps:
            kbps[column] = np.nan
    return kbps[["dataset", "source", "condition", "row", "achieved_kbps", "payload_kbps", *NOISE_KBPS]]


def join_clean(adv: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """The attack predictions ``adv`` with the clean prediction of the same (dataset, condition, row,
    target) as ``clean_pred, clean_conf`` and ``clean_correct``.

    Raises:
        TransferTableError: a repeated clean key, an attack row without its clean prediction, or
            labels that disagree.
    """
    clean_keyed = clean[[*KEY, "pred", "conf", "label_idx"]].rename(
        columns={"pred": "clean_pred", "conf": "clean_conf", "label_idx": "clean_label"}
    )
    if clean_keyed.duplicated(KEY).any():
        raise TransferTableError("clean predictions repeat a (dataset, condition, row, target) key")
    table = adv.merge(clean_keyed, on=KEY, how="left", validate="many_to_one")
    missing = table["clean_pred"].isna()
    if missing.any():
        first = table[missing].iloc[0]
        raise TransferTableError(
            f"no clean prediction for row {first['row']} of {first['dataset']} under "
            f"{first['condition']!r} by {first['target_model']}: the clean source must cover the rows of "
            "every attack (the attack stage must use the same evaluation subset)"
        )
    if not (table["clean_label"] == table["label_idx"]).all():
        raise TransferTableError("labels of the clean and adversarial predictions disagree")
    table = table.drop(columns="clean_label")
    table["clean_pred"] = table["clean_pred"].astype(np.int64)
    table["noise_pred"] = table["noise_pred"].astype(np.int64)
    table["clean_correct"] = table["clean_pred"] == table["label_idx"]
    return table


def score_and_relate(
    table: pd.DataFrame, models: Mapping[str, Mapping[str, Any]], attacks: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """Add ``success, noise_success, counted`` (the attack stage's rule) and who crafted each example
    against whom: ``threat, crafted_on, source_frontend, target_frontend, source_role, relation``."""
    label, target = table["label_idx"].to_numpy(), table["attack_target"].to_numpy()
    # `success` / `noise_success`: the prediction fools the target; a rate counts them only on the
    # clean-correct clips (`counted`), which is the attack stage's success rule (see _rates).
    table["success"] = fooled(table["pred"].to_numpy(), label, target)
    table["noise_success"] = fooled(table["noise_pred"].to_numpy(), label, target)
    table["counted"] = table["clean_correct"]
    threat = {a: (attacks.get(a) or {}).get("threat", "white_box") for a in table["attack"].unique()}
    table["threat"] = table["attack"].map(threat)
    surrogate = table["attack"].map(lambda a: (attacks.get(a) or {}).get("surrogate"))
    table["crafted_on"] = np.where(table["threat"] == "surrogate", surrogate, table["source_model"])
    frontend = {m: spec.get("frontend", "unknown") for m, spec in models.items()}
    table["source_frontend"] = table["crafted_on"].map(lambda m: frontend.get(m, "unknown"))
    table["target_frontend"] = table["target_model"].map(lambda m: frontend.get(m, "unknown"))
    table["source_role"] = table["crafted_on"].map(lambda m: source_role(m, models.get(m, {})))
    table["relation"] = [
        relation(s, t, models) for s, t in zip(table["crafted_on"], table["target_model"], strict=True)
    ]
    return table


def _join_kbps(table: pd.DataFrame, kbps: pd.DataFrame | None) -> pd.DataFrame:
    """Each example's (and its control's) bitrates and its clean clip's ``clean_achieved_kbps``
    (NaN without bitrates)."""
    if kbps is None:
        for column in ("achieved_kbps", "payload_kbps", *NOISE_KBPS, "clean_achieved_kbps"):
            table[column] = np.nan
        return table
    adv_kbps = kbps.assign(
        source_model=kbps["source"].str.split("/").str[0], attack=kbps["source"].str.split("/").str[1]
    )
    run_key = ["dataset", "attack", "source_model", "condition", "row"]
    table = table.merge(
        adv_kbps[[*run_key, "achieved_kbps", "payload_kbps", *NOISE_KBPS]],
        on=run_key,
        how="left",
        validate="many_to_one",
    )
    clean_kbps = kbps[kbps["source"] == CLEAN][["dataset", "condition", "row", "achieved_kbps"]]
    return table.merge(
        clean_kbps.rename(columns={"achieved_kbps": "clean_achieved_kbps"}),
        on=["dataset", "condition", "row"],
        how="left",
        validate="many_to_one",
    )


def _clean_accuracy(
    clean: pd.DataFrame,
    adv: pd.DataFrame,
    cond: pd.DataFrame,
    models: Mapping[str, Mapping[str, Any]],
    kbps: pd.DataFrame | None,
) -> pd.DataFrame:
    """Accuracy of every target on the clean subset per condition, and how many predictions changed
    against no transformation (clean and adversarial inputs alike)."""
    out = clean_changes(clean)
    out = out.merge(adversarial_changes(adv), on=["dataset", "condition", "target_model"], how="left")
    for column in ("n_adversarial", "n_adversarial_changed_vs_none"):
        out[column] = out[column].fillna(0).astype(np.int64)
    out = out.merge(cond, on="condition", how="left")
    if kbps is not None:
        clean_kbps = (
            kbps[kbps["source"] == CLEAN]
            .groupby(["dataset", "condition"])[["achieved_kbps", "payload_kbps"]]
            .median()
            .add_suffix("_median")
            .reset_index()
        )
        out = out.merge(clean_kbps, on=["dataset", "condition"], how="left")
    else:
        out["achieved_kbps_median"] = np.nan
        out["payload_kbps_median"] = np.nan
    out["target_frontend"] = out["target_model"].map(lambda m: models.get(m, {}).get("frontend", "unknown"))
    columns = [
        "dataset", "condition", "kind", "codec", "label", "bitrate_kbps", "quality", "codec_sample_rate",
        "lossless", "achieved_kbps_median", "payload_kbps_median", "target_model", "target_frontend", "n",
        "correct", "accuracy", "accuracy_none", "accuracy_change", "n_changed_vs_none",
        "max_conf_change_vs_none", "n_adversarial", "n_adversarial_changed_vs_none",
    ]  # fmt: skip
    return out[columns].rename(columns={"label": "condition_label"})


def clean_changes(clean: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, condition, target_model): ``n, correct, accuracy`` on the clean predictions, the
    accuracy under no transformation and its change, how many predictions changed against it and the
    largest confidence change."""
    frame = clean.assign(correct=clean["pred"] == clean["label_idx"])
    none = frame[frame["condition"] == NONE][["dataset", "row", "target_model", "pred", "conf"]]
    frame = frame.merge(
        none.rename(columns={"pred": "pred_none", "conf": "conf_none"}),
        on=["dataset", "row", "target_model"],
        how="left",
        validate="many_to_one",
    )
    frame["changed"] = frame["pred"] != frame["pred_none"]
    frame["conf_change"] = (frame["conf"] - frame["conf_none"]).abs()
    out = (
        frame.groupby(["dataset", "condition", "target_model"], sort=False)
        .agg(
            n=("correct", "size"),
            correct=("correct", "sum"),
            accuracy=("correct", "mean"),
            n_changed_vs_none=("changed", "sum"),
            max_conf_change_vs_none=("conf_change", "max"),
        )
        .reset_index()
    )
    acc_none = out[out["condition"] == NONE][["dataset", "target_model", "accuracy"]]
    out = out.merge(
        acc_none.rename(columns={"accuracy": "accuracy_none"}), on=["dataset", "target_model"], how="left"
    )
    out["accuracy_change"] = out["accuracy"] - out["accuracy_none"]
    return out


def adversarial_changes(adv: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, condition, target_model): ``n_adversarial`` attack predictions and
    ``n_adversarial_changed_vs_none``, how many differ from the same example's under no transformation."""
    adv_none = adv[adv["condition"] == NONE][
        ["dataset", "attack", "source_model", "row", "target_model", "pred"]
    ]
    flips = adv.merge(
        adv_none.rename(columns={"pred": "pred_none"}),
        on=["dataset", "attack", "source_model", "row", "target_model"],
        how="left",
    )
    return (
        flips.assign(changed=flips["pred"] != flips["pred_none"])
        .groupby(["dataset", "condition", "target_model"], sort=False)
        .agg(n_adversarial=("changed", "size"), n_adversarial_changed_vs_none=("changed", "sum"))
        .reset_index()
    )


def _rates(table: pd.DataFrame, models: Mapping[str, Mapping[str, Any]]) -> dict[str, pd.DataFrame]:
    pair = [
        "dataset", "attack", "condition", "kind", "codec", "condition_label", "bitrate_kbps", "quality",
        "threat", "source_model", "crafted_on", "source_frontend", "source_role", "target_model",
        "target_frontend", "relation",
    ]  # fmt: skip
    label, target, clean = (table[c].to_numpy() for c in ("label_idx", "attack_target", "clean_pred"))
    work = table.assign(
        hit=success_rule(table["pred"].to_numpy(), label, target, clean),
        noise_hit=success_rule(table["noise_pred"].to_numpy(), label, target, clean),
    )
    rates = (
        work.groupby(pair, sort=False, dropna=False)
        .agg(
            n=("success", "size"),
            n_counted=("counted", "sum"),
            n_success=("hit", "sum"),
            n_noise_success=("noise_hit", "sum"),
            success_rate_all=("success", "mean"),
            achieved_kbps=("achieved_kbps", "mean"),
            payload_kbps=("payload_kbps", "mean"),
            noise_payload_kbps=("noise_payload_kbps", "mean"),
        )
        .reset_index()
    )
    _add_rates(rates)
    return {"rates": rates, "matrix": rate_matrix(rates, models), "representation": _representation(rates)}


def rate_matrix(rates: pd.DataFrame, models: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The pair rates as source x target matrices: one row per (dataset, attack, condition, source,
    ``quantity`` in RATES), one column per target model in :func:`model_order`."""
    order = model_order(models, sorted(set(rates["target_model"]) | set(rates["crafted_on"])))
    keys = ["dataset", "attack", "condition", "source_model", "crafted_on"]
    long = rates.melt([*keys, "target_model"], list(RATES), var_name="quantity")
    wide = long.set_index([*keys, "quantity", "target_model"])["value"].unstack("target_model")
    wide = wide[[m for m in order if m in wide.columns]].reset_index()
    wide.columns.name = None
    rank = {m: i for i, m in enumerate(order)}
    wide["source_rank"] = [
        (rank.get(c, 0), rank.get(s, 0))
        for c, s in zip(wide["crafted_on"], wide["source_model"], strict=True)
    ]
    wide["quantity_rank"] = wide["quantity"].map(RATES.index)
    wide = wide.sort_values(["dataset", "attack", "condition", "quantity_rank", "source_rank"], kind="stable")
    return wide.drop(columns=["source_rank", "quantity_rank"]).reset_index(drop=True)


def _representation(rates: pd.DataFrame) -> pd.DataFrame:
    """The pair rates pooled by relation (self / same / cross representation) and source role."""
    groups = ["dataset", "attack", "condition", "kind", "codec", "condition_label", "relation", "source_role"]
    representation = (
        rates.groupby(groups, sort=False, dropna=False)
        .agg(
            n_pairs=("success_rate", "size"),
            mean_pair_success_rate=("success_rate", "mean"),
            mean_pair_noise_success_rate=("noise_success_rate", "mean"),
            mean_pair_excess_over_noise=("excess_over_noise", "mean"),
            n_counted=("n_counted", "sum"),
            n_success=("n_success", "sum"),
            n_noise_success=("n_noise_success", "sum"),
        )
        .reset_index()
    )
    _add_rates(representation, prefix="pooled_")
    return representation


def _add_rates(frame: pd.DataFrame, prefix: str = "") -> None:
    """Add the RATES columns (named ``prefix + rate``) to a table of counts, in place: the shares of
    the counted clips (``n_counted``; none counted: NaN) fooled (``n_success``) and fooled by the
    matched noise (``n_noise_success``), and the first minus the second."""
    success, noise, excess = (prefix + rate for rate in RATES)
    counted = frame["n_counted"].where(frame["n_counted"] > 0)
    frame[success] = frame["n_success"] / counted
    frame[noise] = frame["n_noise_success"] / counted
    frame[excess] = frame[success] - frame[noise]


def lossless_changes(clean_table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the clean-accuracy table where a lossless codec changed any prediction (should be none)."""
    lossless = clean_table[clean_table["lossless"].astype(bool)]
    return lossless[(lossless["n_changed_vs_none"] > 0) | (lossless["n_adversarial_changed_vs_none"] > 0)]


def lossless_problem(clean_table: pd.DataFrame) -> str | None:
    """What :func:`lossless_changes` finds, as the message that fails the summary (None: nothing)."""
    bad = lossless_changes(clean_table)
    if not len(bad):
        return None
    return (
        "the lossless control changed predictions (it must change none): "
        + "; ".join(f"{r.condition} on {r.target_model}" for r in bad.itertuples())
        + ". The codec path is broken; run summarize-transfer with --allow-lossless-changes to inspect "
        "the tables"
    )
