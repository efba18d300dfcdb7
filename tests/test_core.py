"""The shared helpers: a registry refuses a name given twice."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from asagi_dagster.core import by_name


@dataclass(frozen=True)
class Entry:
    name: str
    value: int = 0


def test_a_registry_keeps_order_and_refuses_a_name_given_twice():
    assert list(by_name(Entry("b"), Entry("a"))) == ["b", "a"]
    with pytest.raises(ValueError, match="'a' is registered twice"):
        by_name(Entry("a", 1), Entry("b"), Entry("a", 2))
