"""The path where synthesized text is accepted, which the tiny random models never reach:
the scripted backend (asagi_dagster/engines.py) answers each prompt from a script, so
the captions, VQA and multiple-choice corpora are made from known, valid answers through
the real runner, validation, parsing and Pipes program, with their provenance."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow.parquet as pq

from asagi_dagster.config import load_config
from asagi_dagster.storage import Storage
from tests.conftest import write_profile
from tests.synth.helpers import failures, materialize, synthesis_section, write_caption_inputs

LONG = [
    "木のテーブルの上に白いコーヒーカップが置かれ、そばに小さなスプーンがあり、奥には明るい窓が見えます。",
    "緑の草原を茶色の馬が駆け抜けていて、その上には雲ひとつない青い空が広がっています。",
    "発射台から白い煙を上げてロケットが打ち上げられ、周りには見守る人々の姿があります。",
    "赤いクッションの上で灰色の猫が丸くなって眠っていて、隣には鉢植えの植物があります。",
]
SHORT = ["テーブルの上の白いコーヒーカップ。", "草原を駆ける茶色の馬。", "打ち上げられるロケット。", "クッションで眠る灰色の猫。"]
VQA = [
    "質問対象: カップ\n質問: カップは何色ですか？\n回答: 白です。",
    "質問対象: 馬\n質問: 馬は何をしていますか？\n回答: 草原を走っています。",
    "質問対象: 空\n質問: 空はどんな様子ですか？\n回答: 雲のない青空です。",
    "質問対象: 猫\n質問: 猫はどこで眠っていますか？\n回答: 赤いクッションの上です。",
]
DISTRACTORS = ["誤答1: 黒です。\n誤答2: 緑です。\n誤答3: 紫です。", "誤答1: 寝ています。\n誤答2: 泳いでいます。\n誤答3: 食べています。"]


def script(path) -> str:
    """A rule per task, keyed on a line only that task's prompt has."""
    rules = [
        {"when": "画像を詳しく説明する", "outputs": LONG},
        {"when": "画像を一文で簡潔に説明する", "outputs": SHORT},
        {"when": "質問と回答を一組作って", "outputs": VQA},
        {"when": "誤った選択肢を三つ作って", "outputs": DISTRACTORS},
    ]
    path.write_text(json.dumps({"rules": rules}, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_scripted_answers_become_accepted_rows_with_their_provenance(tmp_path):
    section = synthesis_section(chunk_rows=2)
    answers = script(tmp_path / "script.json")
    section["generators"]["japanese_llm"] = {"model": answers, "backend": "scripted", "licence": "test script (CC0)", "outputs_trainable": True}
    profile = write_profile(tmp_path, synthesis=section)
    storage = Storage(load_config(profile).storage)
    write_caption_inputs(storage, "s1", pairs=3)
    with dg.instance_for_test() as instance:
        for asset in ("ja_captions", "synthetic_vqa", "synthetic_mcvqa"):
            result, _ = materialize(profile, asset, "s1", instance)
            assert result.success, failures(result)
    captions = pq.read_table(storage.strip_protocol(storage.read_manifest("ja_captions", "s1").data_url)).to_pylist()
    assert len(captions) == 6  # a long and a short caption for each of the 3 pairs, every one accepted
    assert {r["text"] for r in captions if r["length"] == "long"} <= set(LONG) and {r["text"] for r in captions if r["length"] == "short"} <= set(SHORT)
    assert len({r["text"] for r in captions}) == 6  # a duplicate answer was retried under another seed
    assert {(r["generator"], r["model"], r["licence"]) for r in captions} == {("japanese_llm", answers, "test script (CC0)")}
    vqa = pq.read_table(storage.strip_protocol(storage.read_manifest("synthetic_vqa", "s1").data_url)).to_pylist()
    assert vqa and all(f"質問: {r['question']}\n回答: {r['text']}" in "\n".join(VQA) for r in vqa)
    mcvqa = pq.read_table(storage.strip_protocol(storage.read_manifest("synthetic_mcvqa", "s1").data_url)).to_pylist()
    assert mcvqa
    for row in mcvqa:  # the right answer sits at the letter given, among the three scripted wrong ones
        answer = row["options"]["ABCD".index(row["text"])]
        assert answer in {r["text"] for r in vqa} and len(set(row["options"])) == 4
