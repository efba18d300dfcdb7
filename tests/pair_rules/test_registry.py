"""The pair rule registry is whole: every rule has its module, settings with defaults, a
phase, a place in the run order (text, header, pixels), a check that passes a good pair
and names a bad one, and its row in docs/assets.md; the profile takes registered rules
only."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from asagi_dagster.filters.rules import RULE_ORDER
from asagi_dagster.filters.settings import FilterSettings
from asagi_dagster.pair_rules import PAIR_RULES, PHASES, ImageHeader, Pixels, RuleSettings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "assets.md"
GOOD = {"text": "白い猫がソファで眠っている写真", "header": ImageHeader("JPEG", 640, 480, "RGB", False), "pixels": Pixels(colour_spread=40.0)}
# One value per rule that it must reject with its default settings.
BAD = {
    "text_length": "猫",
    "ascii_only": "a cat on a sofa",
    "harmful_keywords": "殺人事件の現場",
    "image_size": ImageHeader("PNG", 64, 480, "RGB", False),
    "aspect_ratio": ImageHeader("PNG", 1800, 300, "RGB", False),
    "monochrome": Pixels(colour_spread=0.5),
}


@pytest.mark.parametrize("name", list(PAIR_RULES))
def test_each_rule_is_whole(name):
    rule = PAIR_RULES[name]
    module = importlib.import_module(rule.settings.__module__)
    assert rule.name == name and module.__name__.endswith(f".pair_rules.{name}"), "one module per rule, named after it"
    assert module.__doc__ and module.__doc__.startswith(f"{name}:") and rule.description
    assert issubclass(rule.settings, RuleSettings) and rule.settings().enabled, "default settings, on by default"
    assert rule.phase in PHASES
    check = rule.make(rule.settings())
    assert check(GOOD[rule.phase]) is None, f"{name} rejects a good pair"
    assert name in BAD, f"{name}: add a value it rejects to BAD"
    assert isinstance(check(BAD[name]), str) and check(BAD[name])


def test_rules_run_in_phase_order():
    phases = [PHASES.index(rule.phase) for rule in PAIR_RULES.values()]
    assert phases == sorted(phases) and RULE_ORDER == tuple(PAIR_RULES)


def test_docs_name_every_rule_as_a_rejection_of_screened_pairs():
    row = next(line for line in DOCS.read_text(encoding="utf-8").splitlines() if line.startswith("| `screened_pairs`"))
    assert [name for name in PAIR_RULES if f"`{name}`" not in row] == []


def test_the_profile_lays_entries_over_defaults_and_refuses_unknown_rules():
    settings = FilterSettings.model_validate({"rules": {"text_length": {"min_chars": 5}}})
    assert settings.rules["text_length"].min_chars == 5 and settings.rules["text_length"].max_chars == 1000
    assert set(settings.rules) == set(PAIR_RULES)
    assert FilterSettings.model_validate(settings.model_dump(mode="json")) == settings, "the profile survives its JSON (the pods read it)"
    with pytest.raises(ValueError, match="unknown rule 'blur'"):
        FilterSettings.model_validate({"rules": {"blur": {}}})
    with pytest.raises(ValueError, match="unknown rule 'blur'"):
        settings.with_rule_overrides({"blur": {"enabled": False}})
    assert settings.with_rule_overrides({"ascii_only": {"enabled": False}}).rules["ascii_only"].enabled is False
