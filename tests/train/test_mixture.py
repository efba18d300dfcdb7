"""Stage mixtures: one text per image, drawn by the source weights from the seed alone,
every candidate text accounted for (kept or rejected with a reason)."""

from collections import Counter

from asagi_dagster.datasets import DATASET_PAIRS, DATASET_PAIRS_VERSION
from asagi_dagster.filters import schemas as filter_schemas
from asagi_dagster.reference import REFERENCE_TEXTS, REFERENCE_TEXTS_VERSION
from asagi_dagster.storage import StageWriter
from asagi_dagster.synth.corpora import CORPORA
from asagi_dagster.synth.corpora import VERSION as CORPUS_VERSION
from asagi_dagster.train import mixture
from asagi_dagster.train.template import CAPTION_INSTRUCTIONS
from asagi_dagster.web.schemas import PAIR_IMAGES, PAIR_IMAGES_VERSION
from tests.train.helpers import png

SHARD = "s-00000.warc.gz"
SPREAD = 0x1111111111111  # image i's perceptual hash is i x SPREAD: a dozen bits or more apart


def _commit(storage, asset, partition, schema, version, rows):
    with StageWriter(storage, asset, partition, schema, version) as out:
        for row in rows:
            out.count_in()
            out.write(row)
    storage.write_manifest(out.manifest)


def _web_shard(storage, images: int, synthesized: bool = True, missing_bytes: set[int] = frozenset()):
    pairs = [f"doc#img{i}" for i in range(images)]
    _commit(
        storage,
        "filtered_pairs",
        SHARD,
        filter_schemas.FILTERED_PAIRS,
        filter_schemas.FILTERED_PAIRS_VERSION,
        [{"pair_id": p, "caption": f"代替テキスト{i}", "image_sha256": f"sha{i}", "image_phash": i * SPREAD, "vg_image_id": None} for i, p in enumerate(pairs)],
    )
    _commit(
        storage,
        "pair_images",
        SHARD,
        PAIR_IMAGES,
        PAIR_IMAGES_VERSION,
        [{"pair_id": p, "bytes": png(i)} for i, p in enumerate(pairs) if i not in missing_bytes],
    )
    _commit(
        storage,
        "reference_texts",
        SHARD,
        REFERENCE_TEXTS,
        REFERENCE_TEXTS_VERSION,
        [{"pair_id": p, "reference_text": f"本文の一文{i}", "reference_source": "sentence" if i % 2 else "caption"} for i, p in enumerate(pairs)],
    )
    if synthesized:
        captions = [
            {"item_id": f"{p}/{length}", "pair_id": p, "text": f"{length}の説明{i}", "length": length}
            for i, p in enumerate(pairs)
            for length in ("long", "short")
        ]
        captions.append({"item_id": "gone/long", "pair_id": "gone#img9", "text": "消えたペア", "length": "long"})
        _commit(storage, "ja_captions", SHARD, CORPORA["ja_captions"].schema, CORPUS_VERSION, captions)
        _commit(
            storage,
            "synthetic_vqa",
            SHARD,
            CORPORA["synthetic_vqa"].schema,
            CORPUS_VERSION,
            [{"item_id": f"{p}/vqa", "pair_id": p, "question": "何色?", "text": "" if i == 0 else "赤"} for i, p in enumerate(pairs)],
        )
    return pairs


def _dataset(storage, name: str, language: str, rows: int, translated: bool = False):
    pairs = [f"{name}/row{i}" for i in range(rows)]
    _commit(
        storage,
        "filtered_dataset_pairs",
        name,
        filter_schemas.FILTERED_PAIRS,
        filter_schemas.FILTERED_PAIRS_VERSION,
        [{"pair_id": p, "image_sha256": f"{name}-sha{i // 2}", "image_phash": 1000 + i, "vg_image_id": None} for i, p in enumerate(pairs)],
    )
    _commit(
        storage,
        "dataset_pairs",
        name,
        DATASET_PAIRS,
        DATASET_PAIRS_VERSION,
        [
            {"pair_id": p, "text": None, "question": f"question {i}", "answer": f"answer {i}", "language": language, "bytes": png(100 + i // 2)}
            for i, p in enumerate(pairs)
        ],
    )
    if translated:
        _commit(
            storage,
            "translated_pairs",
            name,
            CORPORA["translated_pairs"].schema,
            CORPUS_VERSION,
            [{"item_id": p, "pair_id": p, "kind": "qa", "question": f"質問{i}", "text": f"答え{i}"} for i, p in enumerate(pairs)],
        )


def _build(storage, weights, seed=0, shards=(SHARD,), datasets=None, translated=()):
    partitions, missing = mixture.mixture_inputs(storage, list(shards), datasets or {}, list(translated), weights)
    with StageWriter(storage, "stage1_mixture", None, mixture.MIXTURE, mixture.VERSION) as out:
        per_source = mixture.build_mixture(storage, out, partitions, weights, seed)
    rows = list(
        storage.iter_rows(
            storage.strip_protocol(out.manifest.data_url), ["example_id", "source", "pair_id", "image_sha256", "instruction", "response", "candidates", "bytes"]
        )
    )
    return out.manifest, rows, per_source, missing


class _Source:
    def __init__(self, language):
        self.language = language


ALL_WEB = {"web_alt_texts": 1.0, "reference_texts": 1.0, "ja_captions": 1.0, "synthetic_vqa": 1.0, "synthetic_mcvqa": 1.0}


def test_one_text_per_image_with_every_other_text_accounted(storage):
    pairs = _web_shard(storage, images=6, missing_bytes={5})
    manifest, rows, per_source, missing = _build(storage, ALL_WEB)
    assert missing == ["synthetic_mcvqa/" + SHARD]  # weighted but never materialized: said, not silently skipped
    assert sorted(r["pair_id"] for r in rows) == sorted(pairs[:5])  # one per image; image 5 has no bytes
    assert len({r["image_sha256"] for r in rows}) == len(rows)
    assert all(r["bytes"] and r["instruction"].strip() and r["response"].strip() for r in rows)
    # alt + reference (odd images only) + long + short + vqa (image 0's is empty) + a caption of a filtered-out pair
    candidates = 6 + 3 + 12 + 6 + 1
    assert manifest.rows_in == candidates == manifest.rows_out + manifest.rows_rejected
    reasons = manifest.rejected_by_reason
    assert reasons["pair_not_in_filtered_split"] == 1 and reasons["empty_text"] == 1
    assert reasons["image_missing"] == 1
    assert reasons["other_text_drawn"] == candidates - 2 - 6  # every usable text but one per image
    assert sum(per_source.values()) == len(rows) == 5
    assert {r["candidates"] for r in rows if r["pair_id"] == pairs[1]} == {5}  # alt, reference, long, short, vqa


def test_the_manifest_counts_missing_inputs_without_growing_with_them(storage):
    """Mid-crawl most registered shards are not filtered yet: the manifest names the first
    few and counts the rest, so its size does not follow the number of partitions."""
    _web_shard(storage, images=6)
    sizes = {}
    for waiting in (100, 5_000):
        shards = [SHARD, *(f"w-{i:05d}.warc.gz" for i in range(waiting))]
        made = mixture.write_stage_mixture(storage, "stage1", {"web_alt_texts": 1.0}, 0, shards, {}, [])
        assert len(made.missing) == waiting and made.manifest.source["missing_inputs"] == str(waiting)
        assert made.manifest.source["missing_inputs_first"].split(",") == made.missing[: mixture.MISSING_SHOWN]
        sizes[waiting] = len(made.manifest.model_dump_json())
    assert sizes[5_000] - sizes[100] <= 2  # the count's digits, not 4,900 more names


def test_the_draw_follows_the_seed_alone_and_the_weights(storage):
    _web_shard(storage, images=200)
    weights = {"web_alt_texts": 3.0, "ja_captions": 1.0}  # alt: 3 of 3+1+1 (long, short) = 60%
    _, first, _, _ = _build(storage, weights, seed=1)
    _, again, _, _ = _build(storage, weights, seed=1)
    _, other, _, _ = _build(storage, weights, seed=2)
    assert [r["example_id"] for r in first] == [r["example_id"] for r in again]
    assert {r["example_id"] for r in first} != {r["example_id"] for r in other}
    share = Counter(r["source"] for r in first)["web_alt_texts"] / len(first)
    assert 0.5 < share < 0.7, share
    short = [r for r in first if r["example_id"].endswith("/short")]
    assert short and all(r["instruction"] in CAPTION_INSTRUCTIONS["short"] for r in short)


def test_datasets_japanese_directly_english_only_through_translation(storage):
    _dataset(storage, "ja-vqa", "ja", rows=4)
    _dataset(storage, "en-vqa", "en", rows=4, translated=True)
    datasets = {"ja-vqa": _Source("ja"), "en-vqa": _Source("en")}
    manifest, rows, per_source, missing = _build(storage, {"dataset_pairs": 1.0, "translated_pairs": 1.0}, shards=(), datasets=datasets, translated=["en-vqa"])
    assert not missing
    # Two questions share each image (image ids): one kept per image.
    assert len(rows) == 4 and manifest.rejected_by_reason == {"other_text_drawn": 4}
    assert per_source == {"dataset_pairs": 2, "translated_pairs": 2}
    english = [r for r in rows if r["pair_id"].startswith("en-vqa/")]
    assert all(r["source"] == "translated_pairs" and r["response"].startswith("答え") for r in english)


def test_the_mixture_asset_audits_itself_against_the_benchmarks(tmp_path):
    """Through Dagster: the mixture of a shard whose filters let a benchmark image through
    (here: written by hand, as a stale filter would) fails its decontamination check,
    which blocks training in the same run; its accounting holds and its metadata counts
    examples per source."""
    import dagster as dg

    from asagi_dagster.config import load_config
    from asagi_dagster.definitions import build_definitions
    from asagi_dagster.filters.decontam import BENCHMARK_INDEX, BENCHMARK_INDEX_VERSION
    from asagi_dagster.storage import Storage
    from tests.conftest import write_profile

    stage = {"mixture": {"web_alt_texts": 1.0, "reference_texts": 1.0}, "global_batch": 4, "lr": 1e-3}
    profile = write_profile(
        tmp_path,
        models={"vision_encoder": {"id": "builtin:tiny-siglip"}, "llm": {"id": "builtin:tiny-llama-ja"}},
        training={"stage1": stage, "stage2": stage},
    )
    storage = Storage(load_config(profile).storage)
    _web_shard(storage, images=4, synthesized=False)
    # Image 2's perceptual hash is a benchmark image's, one bit apart.
    _commit(
        storage,
        "benchmark_image_index",
        None,
        BENCHMARK_INDEX,
        BENCHMARK_INDEX_VERSION,
        [{"record_id": "japanese-heron-bench/001.jpg", "benchmark": "japanese-heron-bench", "image_phash": (2 * SPREAD) ^ 1, "vg_image_id": None}],
    )
    defs = build_definitions(str(profile))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("warc_shards", [SHARD])
        result = defs.resolve_job_def("vlm_training").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("stage1_mixture"), dg.AssetKey("vlm_stage1")], raise_on_error=False
        )
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["rows_accounted"].passed
    audit = checks["no_benchmark_overlap"]
    assert not audit.passed and audit.metadata["overlapping_pairs"].value == 1
    assert audit.metadata["examples"].value[0]["pair_id"] == "doc#img2"
    (materialization,) = result.asset_materializations_for_node("stage1_mixture")
    per_source = materialization.metadata["examples_per_source"].value
    assert sum(per_source.values()) == 4 and set(per_source) == {"web_alt_texts", "reference_texts"}
    assert (materialization.metadata["missing_inputs"].value, materialization.metadata["missing_inputs_first"].value) == (0, [])
    assert not result.success and not result.asset_materializations_for_node("vlm_stage1")  # blocked, never started
