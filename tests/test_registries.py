"""Every name list lives in code; the config schema only repeats it for readable errors, and must
repeat it exactly: a name added to a registry but not to the schema (or the reverse) fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from advmir.anomaly.detectors import DETECTORS
from advmir.attacks import ATTACKS
from advmir.codecs.registry import CODECS
from advmir.datasets import LOCAL_DATASETS, REAL_DATASETS
from advmir.models.architectures import ARCHS
from advmir.models.external import SOURCES
from advmir.models.frontends import FRONTENDS

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow" / "schemas"


def schema(name: str) -> dict[str, Any]:
    return yaml.safe_load((SCHEMAS / f"{name}.schema.yaml").read_text())


def test_attack_names_match_the_registry() -> None:
    definitions = schema("attacks")["definitions"]
    assert set(definitions["attack"]["properties"]["name"]["enum"]) == set(ATTACKS)
    for rule in definitions["attack"]["allOf"]:  # the per-algorithm conditions name real attacks
        names = rule["if"]["properties"].get("name", {}).get("enum", [])
        assert set(names) <= set(ATTACKS), names


def test_codec_names_match_the_registry() -> None:
    setting = schema("codecs")["definitions"]["codec_setting"]
    assert set(setting["properties"]["codec"]["enum"]) == set(CODECS)


def test_detector_names_match_the_registry() -> None:
    anomaly = schema("anomaly")
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "detectors" in node and isinstance(node["detectors"], dict):
                found.append(set(node["detectors"]["items"]["enum"]))
            for value in node.values():
                walk(value)

    walk(anomaly)
    assert found, "no detectors list in anomaly.schema.yaml"
    # the multi-task net always runs beside the configured detectors, so it is not a config choice
    assert found[0] == set(DETECTORS) - {"multitask"}


def test_model_and_dataset_names_match_the_code() -> None:
    config = schema("config")
    props = config["properties"]
    model = config["definitions"]["zoo_model"]["properties"]
    assert set(model["frontend"]["enum"]) == set(FRONTENDS)
    assert set(model["arch"]["enum"]) == set(ARCHS)
    own = config["definitions"]["external_model"]["properties"]
    assert set(own["source"]["enum"]) == set(SOURCES)
    assert set(props["datasets"]["items"]["enum"]) == {*LOCAL_DATASETS, *REAL_DATASETS}
