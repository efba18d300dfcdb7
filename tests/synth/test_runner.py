"""Generation through the real transformers backend with the tiny local models, and the
chunked runner: retries under new seeds, provenance, and resume after a kill."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from asagi_dagster.config import load_config
from asagi_dagster.engines import Request, SamplingSettings, open_generator
from asagi_dagster.storage import Storage
from asagi_dagster.synth.corpora import PROMPTS
from asagi_dagster.synth.generate import run_corpus
from asagi_dagster.synth.settings import GeneratorSettings
from tests.conftest import write_profile
from tests.synth.helpers import GENERATORS, synthesis_section, write_caption_inputs

SAMPLING = SamplingSettings(max_tokens=12)


def test_transformers_text_generation_is_fixed_by_the_seed():
    generator = open_generator(GeneratorSettings(**GENERATORS["japanese_llm"]))
    messages = PROMPTS["ja_caption_short"].messages({"english_caption": "a cat", "reference_text": "タマ"})
    first, again, other = generator.generate([Request(messages, SAMPLING, seed=1), Request(messages, SAMPLING, seed=1), Request(messages, SAMPLING, seed=2)])
    assert first.text and first.tokens > 0
    assert first == again and other.text != first.text


def test_transformers_image_generation_reads_the_image():
    generator = open_generator(GeneratorSettings(**GENERATORS["caption_vlm"]))
    messages = PROMPTS["english_caption"].messages({}, image=True)
    red, blue = (Request(messages, SamplingSettings(temperature=0, max_tokens=8), seed=0, image=Image.new("RGB", (64, 48), c)) for c in ("red", "blue"))
    outputs = generator.generate([red, blue])
    assert all(o.text is not None and o.tokens > 0 for o in outputs)
    # Greedy decoding from different pixels: the image reaches the model (random weights, so only "different" is testable).
    assert outputs[0].text != outputs[1].text


def test_a_request_batched_gives_what_it_gives_alone_greedy_and_sampled():
    """Batched generation (left padding, a generator per sampled request) changes nothing
    a request writes: token for token what it writes in a batch of one."""
    subjects = ["a cat", "a very long and winding description of a red motorcycle parked by a canal at dusk", "ramen", "a temple gate in deep snow, photo 4"]
    greedy = SamplingSettings(temperature=0, max_tokens=12, repetition_penalty=1.0)
    text = [
        Request(PROMPTS["ja_caption_short"].messages({"english_caption": subject, "reference_text": "タマ" * (i + 1)}), sampling, seed=i)
        for sampling in (greedy, SAMPLING)
        for i, subject in enumerate(subjects)
    ]
    image = [
        Request(PROMPTS["english_caption"].messages({}, image=True), sampling, seed=i, image=Image.new("RGB", (40 + 16 * i, 48), colour))
        for sampling in (greedy, SAMPLING)
        for i, colour in enumerate(("red", "blue", "green"))
    ]
    for name, requests in (("japanese_llm", text), ("caption_vlm", image)):
        batched = open_generator(GeneratorSettings(**GENERATORS[name], batch_size=8)).generate(requests)
        alone = open_generator(GeneratorSettings(**GENERATORS[name], batch_size=1)).generate(requests)
        assert batched == alone, name
        assert all(g.text is not None and g.tokens > 0 for g in batched)
        assert len({g.text for g in batched}) > 1  # the requests differ, so does what they write


def _config(tmp_path: Path, **synthesis):
    return load_config(write_profile(tmp_path, synthesis=synthesis_section(**synthesis)))


def test_invalid_outputs_are_retried_then_rejected_with_reason_and_provenance_kept(tmp_path):
    config = _config(tmp_path, max_tokens=24)
    storage = Storage(config.storage)
    urls = write_caption_inputs(storage, "s1", pairs=3)
    captions = run_corpus(
        config.synthesis, storage, "ja_captions", "s1", {k: urls[k] for k in ("english_captions", "reference_texts", "filtered_pairs")}, log=lambda m: None
    )
    assert captions.rows_in == 6 and captions.rows_out + captions.rows_rejected == 6
    rows = pq.read_table(storage.strip_protocol(captions.data_url)).to_pylist()
    for row in rows:  # random weights, but kana/kanji noise of the right length can pass: then it carries its provenance
        assert row["model"] == "builtin:tiny-llama-ja" and row["licence"] == "Apache-2.0" and row["prompt_id"].startswith("ja_caption_")
        assert row["prompt_version"] == 1 and '"max_tokens": 24' in row["sampling"] and 1 <= row["attempt"] <= 3
    # VQA needs three labelled lines: random text never has them, so every item is tried 3 times and rejected.
    vqa = run_corpus(config.synthesis, storage, "synthetic_vqa", "s1", {"ja_captions": captions.data_url}, log=lambda m: None)
    long_rows = sum(1 for row in rows if row["length"] == "long")
    assert vqa.rows_in == long_rows and vqa.rows_out == 0
    if long_rows:
        rejections = pq.read_table(storage.strip_protocol(vqa.rejections_url)).to_pylist()
        assert {r["reason"] for r in rejections} <= {"bad_format", "prompt_echo", "too_short", "not_japanese", "empty"}
        assert all(r["detail"].startswith("after 3 attempts") for r in rejections)
    assert not storage.exists(storage.path("_work", "ja_captions", "s1"))  # work folder gone once committed


def test_a_partition_committed_from_the_same_inputs_and_settings_is_not_generated_again(tmp_path):
    """What lets a retried batch skip its finished shards: the manifest records what it was
    made from; the same inputs and settings return it, a changed input makes it again."""
    config = _config(tmp_path, max_tokens=16)
    storage = Storage(config.storage)
    urls = write_caption_inputs(storage, "s1", pairs=2)
    inputs = {k: urls[k] for k in ("english_captions", "reference_texts", "filtered_pairs")}
    first_logs, again_logs, changed_logs = [], [], []
    first = run_corpus(config.synthesis, storage, "ja_captions", "s1", inputs, log=first_logs.append)
    assert storage.read_manifest("ja_captions", "s1") == first  # committed by the program itself
    again = run_corpus(config.synthesis, storage, "ja_captions", "s1", inputs, log=again_logs.append)
    assert again == first and any("not generated again" in m for m in again_logs)
    assert not any("loading generator" in m for m in again_logs)  # no model loaded for it
    urls = write_caption_inputs(storage, "s1", pairs=3)  # the shard's inputs change
    changed = run_corpus(config.synthesis, storage, "ja_captions", "s1", {k: urls[k] for k in inputs}, log=changed_logs.append)
    assert changed.rows_in == 6 and any("loading generator" in m for m in changed_logs)


RUN = """
import sys
from asagi_dagster.config import load_config
from asagi_dagster.storage import Storage
from asagi_dagster.synth.generate import run_corpus
config = load_config(sys.argv[1])
storage = Storage(config.storage)
inputs = dict(arg.split("=", 1) for arg in sys.argv[2:])
run_corpus(config.synthesis, storage, "ja_captions", "s1", inputs, log=lambda m: print(m, flush=True))
"""


def _run(profile: Path, urls: dict) -> subprocess.Popen:
    args = [f"{k}={urls[k]}" for k in ("english_captions", "reference_texts", "filtered_pairs")]
    return subprocess.Popen([sys.executable, "-c", RUN, str(profile), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())


def test_a_killed_run_resumes_with_nothing_lost_or_repeated(tmp_path):
    results = {}
    for name in ("killed", "whole"):
        (tmp_path / name).mkdir()
        profile = write_profile(tmp_path / name, synthesis=synthesis_section(chunk_rows=2, max_tokens=16))
        storage = Storage(load_config(profile).storage)
        urls = write_caption_inputs(storage, "s1", pairs=10)  # 20 items, 10 chunks
        if name == "killed":
            process = _run(profile, urls)
            work = Path(storage.path("_work", "ja_captions", "s1"))
            deadline = time.time() + 300
            while not list(work.glob("*/chunk-000002.json")) and time.time() < deadline and process.poll() is None:
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.wait()
            done = len(list(work.glob("*/chunk-*.json")))
            assert 3 <= done < 10, f"the kill should land mid-partition ({done} chunks done)"
            assert not storage.exists(storage.manifest_path("ja_captions", "s1"))
            assert not Path(storage.asset_dir("ja_captions", "s1"), "data.parquet").exists()
        process = _run(profile, urls)
        log = process.communicate(timeout=600)[0].decode()
        assert process.returncode == 0, log
        if name == "killed":
            resumed = [line for line in log.splitlines() if "not generated again" in line]
            assert [re.search(r"chunk \d+", line).group() for line in resumed] == [f"chunk {i}" for i in range(done)]
        table = pq.read_table(Path(storage.asset_dir("ja_captions", "s1"), "data.parquet")).to_pylist()
        rejected = pq.read_table(Path(storage.rejections_dir("ja_captions", "s1"), "data.parquet")).to_pylist()
        results[name] = (table, rejected)
    killed, whole = results["killed"], results["whole"]
    ids = [r["item_id"] for r in killed[0]] + [r["record_id"] for r in killed[1]]
    assert sorted(ids) == sorted(f"p{i}#{length}" for i in range(10) for length in ("long", "short"))  # each item once
    assert [(r["item_id"], r["text"], r["seed"]) for r in killed[0]] == [(r["item_id"], r["text"], r["seed"]) for r in whole[0]]
    assert killed[1] == whole[1]


def test_nothing_to_generate_loads_no_model(tmp_path):
    config = _config(tmp_path)
    storage = Storage(config.storage)
    urls = write_caption_inputs(storage, "s1", pairs=0)  # an upstream partition that kept nothing
    logs = []
    manifest = run_corpus(
        config.synthesis, storage, "ja_captions", "s1", {k: urls[k] for k in ("english_captions", "reference_texts", "filtered_pairs")}, log=logs.append
    )
    assert manifest.rows_in == 0 and not any("loading generator" in line for line in logs)
