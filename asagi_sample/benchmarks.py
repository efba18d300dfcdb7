"""Stand-ins for the three evaluation benchmarks, in the hub's Parquet layout, for the
embedded default and the tests (the cluster profile reads the real datasets):

- japanese-heron-bench: the real 103 questions, contexts and gpt-4-0125-preview-style
  references vendored in ``japanese_heron_bench/`` (Apache-2.0), with a placeholder
  image per image file name, since the real images are not ours to ship;
- ja-vlm-bench-in-the-wild and ja-vg-vqa-500: a few questions written for this project
  about scikit-image's sample photos, in each dataset's own columns (VG-VQA: several QAs
  per image, under Visual Genome ids).

The photos are ones the sample's pages and datasets do not show, but for the rocket,
which the web sample also serves (re-encoded and resized, as a contaminated crawl would
have it): decontamination, which reads these images, removes exactly that pair. The same
images stand in for a benchmark a profile names by path (``filters.decontamination``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from asagi_dagster.benchmarks import BENCHMARKS
from asagi_dagster.benchmarks.japanese_heron_bench import JapaneseHeronBench
from asagi_dagster.eval.settings import BenchmarkSource
from asagi_dagster.filters.settings import BenchmarkImages
from asagi_sample.files import png_bytes, skimage_photo, write_if_changed

HERON_TEXT = Path(__file__).resolve().parent / "japanese_heron_bench"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the datasets library's Image feature

ITW_QUESTIONS = [  # (photo, question, answer)
    ("rocket.jpg", "この写真には何が写っていますか？", "発射台に立つロケットが写っています。"),
    ("brick.png", "この壁は何でできていますか？", "レンガでできています。"),
    ("moon.png", "この写真には何が写っていますか？", "クレーターのある月の表面が写っています。"),
    ("moon.png", "この写真はカラーですか？", "いいえ、白黒の写真です。"),
    ("gravel.png", "地面は何で覆われていますか？", "灰色の小石や砂利で覆われています。"),
    ("grass.png", "この写真の植物は何ですか？", "細い葉の草です。"),
]
VG_QAS = [  # (Visual Genome id, photo, [(question, answer)])
    (2317, "text.png", [("何が書かれていますか？", "文字"), ("背景は何色ですか？", "灰色")]),
    (2386, "cell.png", [("何の写真ですか？", "細胞"), ("何で撮られましたか？", "顕微鏡")]),
    (107899, "page.png", [("何が写っていますか？", "本のページ"), ("文字は何色ですか？", "黒")]),
]


def write_benchmark_sample(benchmarks: dict[str, BenchmarkSource]) -> list[Path]:
    """Write the stand-in of each benchmark the profile reads from a local path; returns
    the files written (unchanged files are left alone)."""
    written = []
    for name, source in benchmarks.items():
        if source.path is None:
            continue
        path = Path(source.path) / "data" / f"{BENCHMARKS[name].split}-00000-of-00001.parquet"
        if write_if_changed(path, _parquet(TABLES[name]())):
            written.append(path)
    return written


def write_decontamination_sample(benchmarks: dict[str, BenchmarkImages]) -> list[Path]:
    """Fill the paths of the benchmarks a profile names for decontamination with the same
    stand-ins: an image folder (one file per distinct image), a Parquet file with their
    image column, Visual Genome ids; returns the files written."""
    written = []
    for name, paths in benchmarks.items():
        if name not in TABLES:
            continue
        table = TABLES[name]()
        if paths.images and paths.images.endswith(".parquet"):
            if write_if_changed(Path(paths.images), _parquet(table.select(["image"]))):
                written.append(Path(paths.images))
        elif paths.images:
            for image in table.column("image").to_pylist():
                file = Path(paths.images) / (image["path"] or f"{hashlib.sha256(image['bytes']).hexdigest()[:12]}.png")
                if write_if_changed(file, image["bytes"]):
                    written.append(file)
        if paths.vg_image_ids and "image_id" in table.column_names:
            ids = "".join(f"{i}\n" for i in table.column("image_id").to_pylist()).encode()
            if write_if_changed(Path(paths.vg_image_ids), ids):
                written.append(Path(paths.vg_image_ids))
    return written


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERON_TEXT / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def heron_table() -> pa.Table:
    references = {row["question_id"]: row["text"] for row in _jsonl("answers_gpt4.jsonl")}
    rows = []
    for q in _jsonl("questions_ja.jsonl"):
        rows.append(
            {
                "question_id": q["question_id"],
                "image": {"bytes": placeholder(q["image"]), "path": q["image"]},
                "category": q["category"],
                "image_category": q["image_category"],
                "context": q["context"],
                "text": q["text"],
                "answer": {JapaneseHeronBench.reference_model: references[q["question_id"]]},
            }
        )
    schema = pa.schema(
        [
            ("question_id", pa.int64()),
            ("image", IMAGE),
            ("category", pa.string()),
            ("image_category", pa.string()),
            ("context", pa.string()),
            ("text", pa.string()),
            ("answer", pa.struct([(JapaneseHeronBench.reference_model, pa.string())])),
        ]
    )
    return pa.Table.from_pylist(rows, schema)


def itw_table() -> pa.Table:
    rows = [{"image": {"bytes": photo(p), "path": p}, "question": q, "answer": a} for p, q, a in ITW_QUESTIONS]
    return pa.Table.from_pylist(rows, pa.schema([("image", IMAGE), ("question", pa.string()), ("answer", pa.string())]))


def vg_table() -> pa.Table:
    qa = pa.struct([("qa_id", pa.int64()), ("question", pa.string()), ("answer", pa.string())])
    rows = []
    for image_id, p, qas in VG_QAS:
        rows.append(
            {
                "image_id": image_id,
                "image": {"bytes": photo(p), "path": None},
                "qas": [{"qa_id": image_id * 10 + i, "question": q, "answer": a} for i, (q, a) in enumerate(qas)],
            }
        )
    return pa.Table.from_pylist(rows, pa.schema([("image_id", pa.int64()), ("image", IMAGE), ("qas", pa.list_(qa))]))


def placeholder(name: str, side: int = 384) -> bytes:
    """A PNG standing in for a benchmark image: a colour and a few shapes fixed by the name."""
    seed = hashlib.sha256(name.encode()).digest()
    image = Image.new("RGB", (side, side), tuple(seed[:3]))
    draw = ImageDraw.Draw(image)
    for i in range(4):
        x, y, r = seed[3 + 3 * i] * side // 256, seed[4 + 3 * i] * side // 256, 20 + seed[5 + 3 * i] % 60
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(seed[16 + i : 19 + i]))
    draw.text((8, 8), name, fill=(255, 255, 255))
    return png_bytes(image)


def photo(name: str, side: int = 400) -> bytes:
    return png_bytes(skimage_photo(name, side))


TABLES: dict[str, Callable[[], pa.Table]] = {"japanese-heron-bench": heron_table, "ja-vlm-bench-in-the-wild": itw_table, "ja-vg-vqa-500": vg_table}
