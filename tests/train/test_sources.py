"""The mixture source registry is whole: every source reads columns its asset really
has, its asset is a dependency of the mixtures, it is named in docs/assets.md, and a
stage naming anything else is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from asagi_dagster.datasets import DATASET_PAIRS
from asagi_dagster.filters.schemas import FILTERED_PAIRS
from asagi_dagster.reference import REFERENCE_TEXTS
from asagi_dagster.settings import ConfigError
from asagi_dagster.synth.corpora import CORPORA
from asagi_dagster.train.mixture import MIXTURE_INPUTS
from asagi_dagster.train.sources import MIXTURE_SOURCES, check_mixture

DOCS = Path(__file__).resolve().parents[2] / "docs" / "assets.md"
SCHEMAS = {"filtered_pairs": FILTERED_PAIRS, "reference_texts": REFERENCE_TEXTS, "dataset_pairs": DATASET_PAIRS} | {
    name: corpus.schema for name, corpus in CORPORA.items()
}


@pytest.mark.parametrize("name", list(MIXTURE_SOURCES))
def test_each_source_reads_columns_its_asset_has(name):
    source = MIXTURE_SOURCES[name]
    assert source.name == name and source.description
    assert set(source.columns) <= set(SCHEMAS[source.asset].names), f"{name}: {source.asset} has no {set(source.columns) - set(SCHEMAS[source.asset].names)}"
    assert source.asset in MIXTURE_INPUTS
    if source.asset in CORPORA:
        assert CORPORA[source.asset].partitions == source.partitions, f"{name}: partitioned like its corpus"


@pytest.mark.parametrize("name", list(MIXTURE_SOURCES))
def test_a_row_becomes_a_candidate_of_its_source(name):
    source = MIXTURE_SOURCES[name]
    row = {column: f"{column}-value" for column in source.columns} | {"reference_source": "sentence", "length": "long", "kind": "caption"}
    candidate = source.candidate(row)
    assert candidate is not None and candidate.source == name and candidate.example_id.startswith(f"{name}:")
    assert candidate.instruction and candidate.response


def test_docs_name_every_source():
    docs = DOCS.read_text(encoding="utf-8")
    missing = [name for name in MIXTURE_SOURCES if f"`{name}`" not in docs.split("- **Mixtures.**")[1].split("- **")[0]]
    assert not missing, f"not in the Mixtures paragraph of docs/assets.md: {missing}"


def test_an_unknown_source_is_refused():
    check_mixture("stage1", ["ja_captions", "web_alt_texts"])
    with pytest.raises(ConfigError, match="training.stage2.mixture: ocr_texts: not a mixture source"):
        check_mixture("stage2", ["ja_captions", "ocr_texts"])
