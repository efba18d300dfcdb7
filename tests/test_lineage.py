"""Lineage: the shipped profile's asset graph, walked from the leaderboard back to the
web archives and the open datasets. Every dataset, split, corpus, stage and score the
product names is an asset on that walk, so the UI's lineage view has no gaps."""

from pathlib import Path

import dagster as dg

from asagi_dagster.definitions import build_definitions

REPO = Path(__file__).resolve().parents[1]

# In the product's order: archives and datasets -> pairs and documents -> filtered splits
# -> reference texts -> synthesized corpora -> mixtures -> stages -> benchmark scores.
PRODUCT_CHAIN = [
    ("web archives", {"web_documents", "web_images"}),
    ("open datasets", {"dataset_pairs"}),
    ("image-text pairs", {"image_text_pairs", "pair_images"}),
    (
        "filtered splits",
        {
            "screened_pairs",
            "image_hash_index",
            "benchmark_image_index",
            "document_image_reference",
            "filtered_pairs",
            "screened_dataset_pairs",
            "filtered_dataset_pairs",
        },
    ),
    ("reference texts", {"reference_texts"}),
    ("synthesized corpora", {"english_captions", "ja_captions", "synthetic_vqa", "synthetic_mcvqa", "translated_pairs"}),
    ("stage mixtures", {"stage1_mixture", "stage2_mixture"}),
    ("training stages", {"vlm_stage1", "vlm_stage2"}),
    ("benchmark scores", {"benchmark_items", "benchmark_predictions", "benchmark_scores"}),
]
# Built for other users of the crawl (MMC4-style documents), not read by training.
SIDE_OUTPUTS = {"interleaved_documents"}


def upstream(graph, key: dg.AssetKey) -> set[str]:
    seen: set[dg.AssetKey] = set()
    stack = [key]
    while stack:
        for parent in graph.get(stack.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return {k.to_user_string() for k in seen}


def test_leaderboard_lineage_reaches_the_archives_and_datasets_with_no_gaps():
    graph = build_definitions(str(REPO / "configs" / "local.yaml")).resolve_asset_graph()
    everything = {k.to_user_string() for k in graph.get_all_asset_keys()}
    behind_leaderboard = upstream(graph, dg.AssetKey("leaderboard"))
    for stage, assets in PRODUCT_CHAIN:
        assert assets <= behind_leaderboard, f"{stage}: {assets - behind_leaderboard} not upstream of leaderboard"
    assert everything - behind_leaderboard == SIDE_OUTPUTS | {"leaderboard"}
    # Each step is fed by the step before it (the two roots feed the filtered splits).
    steps = dict(PRODUCT_CHAIN)
    feeders = {"image-text pairs": ["web archives"], "filtered splits": ["image-text pairs", "open datasets"]}
    for (before, _), (stage, assets) in zip(PRODUCT_CHAIN[2:], PRODUCT_CHAIN[3:]):
        feeders[stage] = [before]
    for stage, sources in feeders.items():
        fed = set().union(*(upstream(graph, dg.AssetKey(name)) for name in steps[stage]))
        for source in sources:
            assert fed & steps[source], f"{stage} is not fed by {source}"
    assert upstream(graph, dg.AssetKey("dataset_pairs")) == set() and upstream(graph, dg.AssetKey("web_documents")) == set()
