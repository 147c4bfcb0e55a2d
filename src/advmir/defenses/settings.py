"""The settings of a defense training mode and of randomized smoothing, checked without torch or
Lightning.

:class:`AdversarialConfig` checks ``training["adversarial"]`` (and each entry of the config's
``defenses.models``, which the workflow turns into one): the workflow calls it when it starts, so a
bad mode, budget or guard setting stops ``snakemake -n`` with the key and what it allows, and the
training job (:mod:`advmir.defenses.adversarial`) builds the same object. The ``gaussian`` mode
(:data:`NOISE_MODES`) is no attack: it trains on clips with Gaussian noise of a fixed absolute
``sigma``, the base model of randomized smoothing, and takes no budget. :class:`SmoothingConfig`
checks an entry of ``defenses.smoothing`` (:mod:`advmir.defenses.smoothing` certifies it). Kept apart
from those modules so that checking a config imports neither torch nor pytorch_lightning.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from advmir.errors import InputError

if TYPE_CHECKING:
    from advmir.attacks.budgets import Budget

MODES = ("pgd_at", "fast_at", "trades", "adv_aug", "gaussian")
#: modes that aim at clean accuracy (adversarial examples as augmentation), not at robustness
AUGMENT_MODES = ("adv_aug",)
#: modes that train on noisy clips, no attack and no budget (the base models of randomized smoothing)
NOISE_MODES = ("gaussian",)
SECTION = "training.adversarial"
#: keys every adversarial mode takes, and each mode's own (a noise mode takes only its own)
COMMON_KEYS = ("mode", "eps", "snr_db", "rel_step", "alpha")
MODE_KEYS = {
    "pgd_at": ("norm", "steps", "mix"),
    "fast_at": ("mix", "guard_drop", "guard_steps", "guard_clips"),
    "trades": ("norm", "steps", "beta"),
    "adv_aug": ("norm", "steps", "weight", "separate_bn"),
    "gaussian": ("sigma",),
}
DEFAULT_STEPS = 10
FAST_REL_STEP = 1.25  # Wong et al.'s alpha = 1.25 eps


class DefenseConfigError(InputError, ValueError):
    """A defense setting that is unknown or out of range; the message names the key and what it allows."""


@dataclass(frozen=True)
class AdversarialConfig:
    """One adversarial-training mode, checked (see the module docstring for the keys).

    Attributes:
        mode: one of :data:`MODES`.
        norm: ``"linf"`` or ``"l2"`` (fast_at: linf).
        eps: absolute budget in (0, 1], or None. snr_db: per-clip budget in dB in (0, 100], or None;
            exactly one of the two.
        steps: PGD steps per batch (pgd_at, trades; fast_at: 1).
        rel_step: step as a fraction of each clip's radius, or None when ``alpha`` is given.
        alpha: absolute step size, or None.
        mix: share of each batch replaced by adversarial clips, in (0, 1] (pgd_at, fast_at).
        weight: adv_aug's weight of the adversarial batch's loss beside the clean batch's, > 0.
        separate_bn: adv_aug: adversarial clips go through auxiliary batch norms (AdvProp), the
            clean ones through the model's own; False: one set of batch norms for both.
        beta: TRADES' weight of the KL term, > 0.
        guard_drop: fast_at's tolerated fall of robust accuracy below the best, in (0, 1).
        guard_steps: steps of the guard's PGD (fast_at).
        guard_clips: clips in the guard's fixed batch: the first training clips (fast_at).
        sigma: gaussian's standard deviation of the noise added to every training clip, absolute
            (full scale 1.0), in (0, 1]; None in the adversarial modes.
    """

    mode: str
    norm: str = "linf"
    eps: float | None = None
    snr_db: float | None = None
    steps: int = DEFAULT_STEPS
    rel_step: float | None = None
    alpha: float | None = None
    mix: float = 1.0
    beta: float = 6.0
    guard_drop: float = 0.2
    guard_steps: int = DEFAULT_STEPS
    guard_clips: int = 128
    weight: float = 1.0
    separate_bn: bool = True
    sigma: float | None = None

    @classmethod
    def from_dict(cls, values: Any, section: str = SECTION) -> AdversarialConfig:
        """Check ``training["adversarial"]``; raise :class:`DefenseConfigError` naming the key (under
        ``section``, e.g. ``defenses.models.NAME`` for the config's defenses section)."""
        if not isinstance(values, dict):
            raise DefenseConfigError(f"{section} must be a mapping with a 'mode', got {values!r}")
        mode = values.get("mode")
        if mode not in MODES:
            raise DefenseConfigError(f"{section}: key 'mode' must be one of {list(MODES)}, got {mode!r}")
        allowed = ("mode", *MODE_KEYS[mode]) if mode in NOISE_MODES else COMMON_KEYS + MODE_KEYS[mode]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise DefenseConfigError(
                f"{section}: unknown key(s) {unknown} for mode {mode!r}; allowed: {list(allowed)}"
            )
        if mode in NOISE_MODES:
            if values.get("sigma") is None:
                raise DefenseConfigError(
                    f"{section}: mode {mode!r} needs key 'sigma' (the noise's absolute standard deviation, "
                    "a number in (0, 1])"
                )
            return cls(mode=mode, sigma=_number(section, "sigma", values["sigma"], 0.0, 1.0, "in (0, 1]"))
        out: dict[str, Any] = {"mode": mode}
        if "norm" in values:
            if values["norm"] not in ("linf", "l2"):
                raise DefenseConfigError(
                    f"{section}: key 'norm' must be one of ['linf', 'l2'], got {values['norm']!r}"
                )
            out["norm"] = values["norm"]
        budget = [k for k in ("eps", "snr_db") if values.get(k) is not None]
        if len(budget) != 1:
            raise DefenseConfigError(
                f"{section}: give exactly one budget key, 'eps' (absolute, in (0, 1]) or 'snr_db' "
                f"(per clip, in (0, 100] dB), got {budget or 'neither'}"
            )
        if budget == ["eps"]:
            out["eps"] = _number(section, "eps", values["eps"], 0.0, 1.0, "in (0, 1]")
        else:
            out["snr_db"] = _number(section, "snr_db", values["snr_db"], 0.0, 100.0, "in (0, 100]")
        if "steps" in values:
            out["steps"] = _integer(section, "steps", values["steps"], minimum=1)
        if values.get("rel_step") is not None and values.get("alpha") is not None:
            raise DefenseConfigError(f"{section}: give either key 'rel_step' or 'alpha', not both")
        if values.get("rel_step") is not None:
            out["rel_step"] = _number(section, "rel_step", values["rel_step"], 0.0, math.inf, "> 0")
        if values.get("alpha") is not None:
            out["alpha"] = _number(section, "alpha", values["alpha"], 0.0, 2.0, "in (0, 2]")
        if "mix" in values:
            out["mix"] = _number(section, "mix", values["mix"], 0.0, 1.0, "in (0, 1]")
        if "weight" in values:
            out["weight"] = _number(section, "weight", values["weight"], 0.0, math.inf, "> 0")
        if "separate_bn" in values:
            if not isinstance(values["separate_bn"], bool):
                raise DefenseConfigError(
                    f"{section}: key 'separate_bn' must be true or false, got {values['separate_bn']!r}"
                )
            out["separate_bn"] = values["separate_bn"]
        if "beta" in values:
            out["beta"] = _number(section, "beta", values["beta"], 0.0, math.inf, "> 0")
        if "guard_drop" in values:
            out["guard_drop"] = _number(
                section, "guard_drop", values["guard_drop"], 0.0, 1.0, "in (0, 1)", high_open=True
            )
        for key in ("guard_steps", "guard_clips"):
            if key in values:
                out[key] = _integer(section, key, values[key], minimum=1)
        if mode == "fast_at":
            out["steps"] = 1
        elif mode == "adv_aug":
            out.setdefault("steps", 1)  # augmentation: one FGSM step from a random start by default
        if out.get("alpha") is None and out.get("rel_step") is None:
            steps = out.get("steps", DEFAULT_STEPS)
            single = mode == "fast_at" or (mode == "adv_aug" and steps == 1)
            out["rel_step"] = FAST_REL_STEP if single else 2.5 / steps
        return cls(**out)

    @property
    def budget(self) -> Budget:
        """The training budget in the attack stage's semantics (an adversarial mode's; a noise mode
        has none)."""
        from advmir.attacks.budgets import Budget

        if self.mode in NOISE_MODES:
            raise DefenseConfigError(f"{SECTION}: mode {self.mode!r} trains on noise and has no budget")
        return Budget.create(SECTION, self.norm, eps=self.eps, snr_db=self.snr_db)

    def attack_params(self) -> dict[str, Any]:
        """Parameters of the attack stage's PGD that crafts the training examples."""
        params: dict[str, Any] = {
            "norm": self.norm,
            "steps": self.steps,
            "random_start": True,
            "early_stop": False,  # training ascends the loss for every clip, fooled or not
        }
        params.update(
            {
                k: getattr(self, k)
                for k in ("eps", "snr_db", "rel_step", "alpha")
                if getattr(self, k) is not None
            }
        )
        return params

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings of the mode (what metrics.json records)."""
        if self.mode in NOISE_MODES:
            return {"mode": self.mode, "sigma": self.sigma}
        keys = ("norm", "steps", "rel_step", "alpha", *MODE_KEYS[self.mode])
        out = {"mode": self.mode, "budget": self.budget.as_dict()}
        out.update({k: getattr(self, k) for k in dict.fromkeys(keys)})
        return out


SMOOTHING_SECTION = "defenses.smoothing"
SMOOTHING_KEYS = ("model", "sigma", "n0", "n", "alpha", "n_predict", "eval_size", "batch_size")
MIN_SAMPLES = 100  # fewer certify next to nothing: at alpha 0.001 the radius is at most 0.003 sigma at n = 10


@dataclass(frozen=True)
class SmoothingConfig:
    """One smoothed classifier of ``defenses.smoothing`` (Cohen et al. 2019), checked.

    Attributes:
        name: the config key. model: the base model, a key of ``models`` (the zoo with the defended
            models, a ``gaussian``-mode model as Cohen et al. train it).
        sigma: the noise's absolute standard deviation (full scale 1.0), in (0, 1]: fixed, the same
            for every clip (a sigma chosen per clip voids the certificate).
        n0: noise samples that select the class (>= 1). n: samples that estimate its probability
            (>= 100). alpha: the certificate fails with probability at most alpha, in (0, 0.5).
        n_predict: samples of the prediction (Cohen's PREDICT, binomial test at alpha; >= 100), None: n.
        eval_size: clips of the attack stage's seeded evaluation subset (None: the attack stage's).
        batch_size: noisy copies per forward pass (>= 1).
    """

    name: str
    model: str
    sigma: float
    n0: int
    n: int
    alpha: float
    batch_size: int
    n_predict: int | None = None
    eval_size: int | None = None

    @classmethod
    def from_dict(cls, name: str, values: Any, models: Any = None) -> SmoothingConfig:
        """Check ``defenses.smoothing.NAME``, a key missing taking the schema's default (one home:
        Cohen et al.'s n0 = 100, n = 1,000, alpha = 0.001); ``models`` (names), when given, are the
        models it may smooth. Raises :class:`DefenseConfigError` naming the key and what it allows."""
        from advmir.config import schema_defaults

        where = f"{SMOOTHING_SECTION}.{name}"
        if not isinstance(values, dict):
            raise DefenseConfigError(f"{where} must be a mapping with 'model' and 'sigma', got {values!r}")
        unknown = sorted(set(values) - set(SMOOTHING_KEYS))
        if unknown:
            raise DefenseConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(SMOOTHING_KEYS)}")
        values = {**schema_defaults("defenses.schema.yaml", "smoothing"), **values}
        model = values.get("model")
        if not isinstance(model, str) or (models is not None and model not in models):
            allowed_models = sorted(models) if models is not None else "a model name"
            raise DefenseConfigError(
                f"{where}: key 'model' must name a model of the zoo or of defenses.models "
                f"{allowed_models}, got {model!r}"
            )
        if values.get("sigma") is None:
            raise DefenseConfigError(f"{where}: key 'sigma' is required (a number in (0, 1])")
        out: dict[str, Any] = {
            "name": name,
            "model": model,
            "sigma": _number(where, "sigma", values["sigma"], 0.0, 1.0, "in (0, 1]"),
        }
        for key, minimum in (("n0", 1), ("n", MIN_SAMPLES), ("batch_size", 1)):
            out[key] = _integer(where, key, values[key], minimum)
        for key, minimum in (("n_predict", MIN_SAMPLES), ("eval_size", 1)):
            if values.get(key) is not None:
                out[key] = _integer(where, key, values[key], minimum)
        out["alpha"] = _number(where, "alpha", values["alpha"], 0.0, 0.5, "in (0, 0.5)", high_open=True)
        return cls(**out)

    @property
    def predict_samples(self) -> int:
        """Samples of the prediction: ``n_predict``, else ``n``."""
        return self.n_predict if self.n_predict is not None else self.n

    def entry(self) -> dict[str, Any]:
        """The resolved entry, as ``defenses.smoothing.NAME`` takes it (the command's ``--setting``)."""
        return {
            "model": self.model, "sigma": self.sigma, "n0": self.n0, "n": self.n, "alpha": self.alpha,
            "n_predict": self.predict_samples, "eval_size": self.eval_size, "batch_size": self.batch_size,
        }  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings and the name (what smoothing.json records)."""
        return {"name": self.name, **self.entry()}


def smoothing_problems(entries: Any, models: Any = None) -> list[str]:
    """Every problem of ``defenses.smoothing`` (one message per bad entry)."""
    problems = []
    for name, values in (entries or {}).items():
        try:
            SmoothingConfig.from_dict(name, values, models)
        except DefenseConfigError as exc:
            problems.append(str(exc))
    return problems


def _number(
    section: str, key: str, value: Any, low: float, high: float, allowed: str, high_open: bool = False
) -> float:
    """``value`` as a float in (low, high] ((low, high) with ``high_open``), else a DefenseConfigError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        ok = low < value < high if high_open else low < value <= high
    if not ok:
        raise DefenseConfigError(f"{section}: key {key!r} must be a number {allowed}, got {value!r}")
    return float(value)


def _integer(section: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DefenseConfigError(f"{section}: key {key!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# -- adversarial-example detection ---------------------------------------------------------------------

DETECTION_SECTION = "defenses.detection"
#: the detection stage's own detectors: feature squeezing, the anomaly stage's stacked ensemble
#: retrained on clean vs adversarial clips, and a small detector network on the log-mel
DETECTION_OWN = ("squeeze", "stack", "logmel_net")
#: the anomaly stage's detectors that cannot judge a clip alone, as a deployed detector must
DETECTION_EXCLUDED = {
    "pitch": "it reads the clip's true pitch label",
    "label_errors": "it scores the clip's true label, which a deployed detector does not know",
    "duplicates": "it scores a clip against the rest of its set",
    "autoencoder": "it needs the anomaly stage's autoencoder checkpoint",
    "multitask": "it needs the anomaly stage's multi-task checkpoint and the true label",
}
#: detectors whose score has a gradient (BPDA through a codec or rounding squeezer): the adaptive
#: attacker runs a gradient attack on them, on the others a query-only one
DIFFERENTIABLE_DETECTORS = ("squeeze", "logmel_net", "max_softmax", "energy")
#: the attack stage's algorithms that can run on the combined loss (advmir.defenses.detection)
ADAPTIVE_GRADIENT = ("pgd", "bim", "mifgsm")
ADAPTIVE_QUERY = ("square",)
#: squeezer kinds (advmir.defenses.transforms): deterministic ones, as Xu et al.'s
SQUEEZER_KINDS = ("mp3", "aac", "vorbis", "opus", "quantize", "resample", "lowpass")
DETECTION_KEYS = (
    "enabled", "models", "budgets_db", "attacks", "detectors", "squeezers", "fpr", "eval_size",
    "train_size", "calibration_size", "reference_size", "batch_size", "threads", "net", "adaptive",
)  # fmt: skip
NET_KEYS = ("epochs", "width", "top_db", "batch_size", "learning_rate")
ADAPTIVE_KEYS = ("detectors", "gradient", "query", "weights")


def detection_detectors() -> tuple[str, ...]:
    """Every detector name ``defenses.detection.detectors`` may list: this stage's own, then the
    anomaly stage's that judge a clip alone (:data:`DETECTION_EXCLUDED` says why the others do not)."""
    from advmir.anomaly.detectors import DETECTORS

    return (*DETECTION_OWN, *(d for d in DETECTORS if d not in DETECTION_EXCLUDED))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _attack_spec_problems(where: str, spec: Any, allowed: tuple[str, ...] | None = None) -> list[str]:
    """The shape of one ``{name, params}`` attack entry (its parameters are checked by building it,
    :func:`advmir.defenses.robust.ensemble_problems`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return [f"{where}: must be a mapping with a 'name' (an attack algorithm), got {spec!r}"]
    problems = []
    if allowed is not None and spec["name"] not in allowed:
        problems.append(f"{where}: key 'name' must be one of {list(allowed)}, got {spec['name']!r}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        problems.append(f"{where}.params: must be a mapping, got {params!r}")
    elif any(k in params for k in ("eps", "snr_db", "envelope")):
        problems.append(f"{where}.params: remove the budget keys: the budget comes from budgets_db")
    return problems


@dataclass(frozen=True)
class DetectionConfig:
    """``defenses.detection``, checked (advmir.defenses.detection runs it).

    Attributes:
        models: classifiers whose adversarial examples are detected (zoo or defended models).
        budgets_db: SNR budgets (dB) of every attack, adaptive or not.
        attacks: the detected attacks, name -> {name: algorithm, params} (no budget in params).
        detectors: detector names (:func:`detection_detectors`).
        squeezers: feature squeezing's transformations, name -> a defenses.transforms entry without
            ``model`` (deterministic kinds, :data:`SQUEEZER_KINDS`).
        fpr: the operating point: each detector's threshold flags this share of clean clips.
        eval_size: test clips (the attack stage's seeded subset; None: the attack stage's size).
        train_size: validation clips that, with their adversarial copies, train logmel_net and the stack.
        calibration_size: other validation clips, clean: each detector's threshold at ``fpr``.
        reference_size: clean train clips the anomaly detectors are fitted on.
        batch_size: clips per forward pass (None: the attack stage's). threads: torch threads.
        net: logmel_net's training (epochs, width, top_db, batch_size, learning_rate).
        adaptive: the adaptive attacker: ``detectors`` attacked (None: all), the ``gradient`` attack
            on a differentiable detector, the ``query`` attack (or None) on the others, and the
            ``weights`` c of the detector's hinge in the combined loss, tried from the smallest up
            on the clips fooled but still flagged (Carlini and Wagner search c per clip).
    """

    models: tuple[str, ...]
    budgets_db: tuple[float, ...]
    attacks: dict[str, dict[str, Any]]
    detectors: tuple[str, ...]
    squeezers: dict[str, dict[str, Any]]
    fpr: float
    eval_size: int | None
    train_size: int
    calibration_size: int
    reference_size: int
    batch_size: int | None
    threads: int
    net: dict[str, Any]
    adaptive: dict[str, Any]

    @staticmethod
    def problems(values: Any, models: Any = None, sample_rates: Any = (16000,)) -> list[str]:
        """Every problem of ``defenses.detection`` (a missing key takes the schema's default);
        ``models`` (names), when given, are the classifiers it may name; each squeezer is checked for
        every sample rate of ``sample_rates`` (the codec stage's checks and messages)."""
        where = DETECTION_SECTION
        if not isinstance(values, dict):
            return [f"{where} must be a mapping, got {values!r}"]
        unknown = sorted(set(values) - set(DETECTION_KEYS))
        if unknown:
            return [f"{where}: unknown key(s) {unknown}; allowed: {list(DETECTION_KEYS)}"]
        v = _detection_defaults(values)
        problems: list[str] = []
        chosen = v["models"]
        if not isinstance(chosen, list) or not chosen or not all(isinstance(m, str) for m in chosen):
            problems.append(f"{where}.models: must be a non-empty list of model names, got {chosen!r}")
        elif models is not None:
            bad = [m for m in chosen if m not in models]
            if bad:
                problems.append(
                    f"{where}.models: {bad} are not models of the zoo or of defenses.models; "
                    f"allowed: {sorted(models)}"
                )
        budgets = v["budgets_db"]
        if not isinstance(budgets, list) or not budgets:
            problems.append(f"{where}.budgets_db: must be a non-empty list of SNRs in dB, got {budgets!r}")
        else:
            for b in budgets:
                if not _is_number(b) or not 0 < float(b) <= 100:
                    problems.append(f"{where}.budgets_db: {b!r} is not a number in (0, 100] (an SNR in dB)")
        attacks = v["attacks"]
        if not isinstance(attacks, dict) or not attacks:
            problems.append(f"{where}.attacks: must be a non-empty mapping name -> {{name, params}}")
        else:
            for name, spec in attacks.items():
                problems += _attack_spec_problems(f"{where}.attacks.{name}", spec)
        allowed = detection_detectors()
        detectors = v["detectors"]
        if not isinstance(detectors, list) or not detectors:
            problems.append(f"{where}.detectors: must be a non-empty list; allowed: {list(allowed)}")
            detectors = []
        else:
            for d in detectors:
                if d not in allowed:
                    why = f" ({d}: {DETECTION_EXCLUDED[d]})" if d in DETECTION_EXCLUDED else ""
                    problems.append(
                        f"{where}.detectors: unknown detector {d!r}{why}; allowed: {list(allowed)}"
                    )
            if len(set(detectors)) != len(detectors):
                problems.append(f"{where}.detectors: {detectors} lists a detector twice")
            if "stack" in detectors and not stack_members(detectors):
                problems.append(
                    f"{where}.detectors: 'stack' combines the other detectors but logmel_net: list at "
                    "least one more (e.g. squeeze, isolation_forest)"
                )
        problems += _squeezer_problems(v["squeezers"], "squeeze" in detectors, sample_rates)
        if not _is_number(v["fpr"]) or not 0 < float(v["fpr"]) < 0.5:
            problems.append(f"{where}.fpr: must be a number in (0, 0.5), got {v['fpr']!r}")
        for key, minimum, optional in (
            ("eval_size", 1, True), ("train_size", 2, False), ("calibration_size", 20, False),
            ("reference_size", 10, False), ("batch_size", 1, True), ("threads", 1, False),
        ):  # fmt: skip
            value = v[key]
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                problems.append(f"{where}.{key}: must be an integer >= {minimum}, got {value!r}")
        problems += _net_problems(v["net"])
        problems += _adaptive_problems(v["adaptive"], detectors)
        return problems

    @classmethod
    def from_dict(cls, values: Any, models: Any = None, sample_rates: Any = (16000,)) -> DetectionConfig:
        """The checked section; raises :class:`DefenseConfigError` listing every problem."""
        problems = cls.problems(values, models, sample_rates)
        if problems:
            raise DefenseConfigError("; ".join(problems))
        v = _detection_defaults(values)
        return cls(
            models=tuple(v["models"]),
            budgets_db=tuple(float(b) for b in v["budgets_db"]),
            attacks={
                k: {"name": s["name"], "params": dict(s.get("params") or {})} for k, s in v["attacks"].items()
            },
            detectors=tuple(v["detectors"]),
            squeezers={k: dict(s) for k, s in (v["squeezers"] or {}).items()},
            fpr=float(v["fpr"]),
            eval_size=v["eval_size"],
            train_size=int(v["train_size"]),
            calibration_size=int(v["calibration_size"]),
            reference_size=int(v["reference_size"]),
            batch_size=v["batch_size"],
            threads=int(v["threads"]),
            net=dict(v["net"]),
            adaptive={
                **v["adaptive"],
                "detectors": (
                    None if v["adaptive"]["detectors"] is None else tuple(v["adaptive"]["detectors"])
                ),
            },
        )

    @property
    def adaptive_detectors(self) -> tuple[str, ...]:
        """The detectors the adaptive attacker attacks: ``adaptive.detectors``, else every detector
        that it has an attack for (a non-differentiable one only with a ``query`` attack)."""
        wanted = self.adaptive["detectors"]
        if wanted is not None:
            return tuple(wanted)
        query = self.adaptive.get("query") is not None
        return tuple(d for d in self.detectors if d in DIFFERENTIABLE_DETECTORS or query)

    def entry(self) -> dict[str, Any]:
        """The resolved section for one job (the command's ``--setting``), ``models`` left out."""
        out = {k: getattr(self, k) for k in DETECTION_KEYS if k not in ("enabled", "models")}
        out["budgets_db"] = list(self.budgets_db)
        out["detectors"] = list(self.detectors)
        adaptive = dict(self.adaptive)
        if adaptive["detectors"] is not None:
            adaptive["detectors"] = list(adaptive["detectors"])
        out["adaptive"] = adaptive
        return out


def stack_members(detectors: Any) -> list[str]:
    """The detectors the stacked ensemble combines: every other listed one but the trained network."""
    return [d for d in detectors if d not in ("stack", "logmel_net")]


def _detection_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """The section with the schema's defaults filled in, also inside ``net`` and ``adaptive``."""
    from advmir.config import schema_defaults

    out = {**schema_defaults("defenses.schema.yaml", "detection"), **values}
    for key in ("net", "adaptive"):
        given = out.get(key)
        if given is None or isinstance(given, dict):
            out[key] = {**schema_defaults("defenses.schema.yaml", "detection", key), **(given or {})}
    return out


def _squeezer_problems(squeezers: Any, needed: bool, sample_rates: Any) -> list[str]:
    where = f"{DETECTION_SECTION}.squeezers"
    if not isinstance(squeezers, dict):
        return [f"{where}: must be a mapping name -> transformation, got {squeezers!r}"]
    if needed and not squeezers:
        return [f"{where}: detector 'squeeze' needs at least one squeezer (e.g. quantize, lowpass, mp3)"]
    from advmir.defenses.transforms import parse_transform

    problems = []
    for name, spec in squeezers.items():
        if not isinstance(spec, dict):
            problems.append(f"{where}.{name}: must be a mapping with 'kind', got {spec!r}")
            continue
        if spec.get("kind") not in SQUEEZER_KINDS:
            problems.append(
                f"{where}.{name}: key 'kind' must be one of {list(SQUEEZER_KINDS)} (deterministic), "
                f"got {spec.get('kind')!r}"
            )
            continue
        for rate in dict.fromkeys(sample_rates):
            try:
                parse_transform(name, {**spec, "model": "-"}, int(rate))
            except (InputError, ValueError) as exc:
                problems.append(f"{where}: {str(exc).replace('defenses.transforms.', '')}")
                break
    return problems


def _net_problems(net: Any) -> list[str]:
    where = f"{DETECTION_SECTION}.net"
    if not isinstance(net, dict):
        return [f"{where}: must be a mapping with {list(NET_KEYS)}, got {net!r}"]
    unknown = sorted(set(net) - set(NET_KEYS))
    if unknown:
        return [f"{where}: unknown key(s) {unknown}; allowed: {list(NET_KEYS)}"]
    problems = []
    for key, minimum in (("epochs", 1), ("width", 2), ("batch_size", 2)):
        value = net.get(key)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            problems.append(f"{where}.{key}: must be an integer >= {minimum}, got {value!r}")
    if net.get("top_db") is not None and (not _is_number(net["top_db"]) or not net["top_db"] > 0):
        problems.append(f"{where}.top_db: must be a number > 0 (dB) or null, got {net['top_db']!r}")
    if not _is_number(net.get("learning_rate")) or not net["learning_rate"] > 0:
        problems.append(f"{where}.learning_rate: must be a number > 0, got {net.get('learning_rate')!r}")
    return problems


def _adaptive_problems(adaptive: Any, detectors: list[str]) -> list[str]:
    where = f"{DETECTION_SECTION}.adaptive"
    if not isinstance(adaptive, dict):
        return [f"{where}: must be a mapping with {list(ADAPTIVE_KEYS)}, got {adaptive!r}"]
    unknown = sorted(set(adaptive) - set(ADAPTIVE_KEYS))
    if unknown:
        return [f"{where}: unknown key(s) {unknown}; allowed: {list(ADAPTIVE_KEYS)}"]
    problems = []
    attacked = adaptive.get("detectors")
    if attacked is not None:
        if not isinstance(attacked, list):
            problems.append(f"{where}.detectors: must be a list of detectors or null, got {attacked!r}")
        else:
            bad = [d for d in attacked if d not in detectors]
            if bad:
                problems.append(
                    f"{where}.detectors: {bad} are not among defenses.detection.detectors {detectors}"
                )
            query = adaptive.get("query") is not None
            blind = [d for d in attacked if d in detectors and d not in DIFFERENTIABLE_DETECTORS]
            if blind and not query:
                problems.append(
                    f"{where}.detectors: {blind} have no gradient and adaptive.query is null: give a query "
                    f"attack ({list(ADAPTIVE_QUERY)}) or leave them out"
                )
    problems += _attack_spec_problems(f"{where}.gradient", adaptive.get("gradient"), ADAPTIVE_GRADIENT)
    gradient = adaptive.get("gradient")
    if isinstance(gradient, dict) and (gradient.get("params") or {}).get("loss", "margin") != "margin":
        problems.append(
            f"{where}.gradient.params: key 'loss' must be 'margin' (the combined loss is a margin), "
            f"got {gradient['params']['loss']!r}"
        )
    if adaptive.get("query") is not None:
        problems += _attack_spec_problems(f"{where}.query", adaptive["query"], ADAPTIVE_QUERY)
    weights = adaptive.get("weights")
    if not isinstance(weights, list) or not weights or not all(_is_number(w) and w > 0 for w in weights):
        problems.append(f"{where}.weights: must be a non-empty list of numbers > 0, got {weights!r}")
    return problems
