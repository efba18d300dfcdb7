import re
from pathlib import Path

import pytest

from asagi_dagster.config import DEFAULT_PROFILE, ConfigError, load_config
from tests.conftest import write_profile

REPO = Path(__file__).resolve().parent.parent


def test_embedded_default_loads_with_paths_relative_to_the_profile():
    config = load_config(DEFAULT_PROFILE)
    assert config.profile == "local"
    assert config.storage.root == str(REPO / ".asagi" / "data")
    assert config.sources.web.inbox == str(REPO / ".asagi" / "inbox")


def test_cluster_example_loads_with_s3_root_and_real_model_ids():
    config = load_config(REPO / "configs" / "cluster.example.yaml")
    assert config.storage.root.startswith("s3://")
    assert config.models["vision_encoder"].id == "google/siglip-so400m-patch14-384"
    assert config.models["llm"].id.startswith("llm-jp/llm-jp-3-")
    generators = config.synthesis.generators
    assert generators["caption_vlm"].model == "microsoft/Phi-3.5-vision-instruct" and generators["caption_vlm"].licence == "MIT"
    assert generators["japanese_llm"].model == "cyberagent/calm3-22b-chat" and generators["japanese_llm"].licence == "Apache-2.0"
    assert all(len(g.revision) == 40 and g.outputs_trainable for g in generators.values())  # pinned, licence-clean
    assert config.gpu_jobs.runner == "k8s" and config.gpu_jobs.pods["synthesis"].gpus >= 1


def test_translations_must_name_english_datasets_of_the_profile(tmp_path):
    from tests.synth.helpers import synthesis_section

    ja = {"format": "jsonl", "path": "d.jsonl", "text_column": "caption", "language": "ja", "licence": "CC BY 4.0"}
    for names, message in ((["nowhere"], "'nowhere' is not in sources.datasets"), (["ja-set"], "'ja-set' is language 'ja'")):
        path = write_profile(tmp_path, sources={"datasets": {"ja-set": ja}}, synthesis={**synthesis_section(), "translate_datasets": names})
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_pod_secret_env_takes_references_not_values(tmp_path):
    pods = {"synthesis": {"image": "x", "secret_env": {"HF_TOKEN": "hf_abcdefghijklmnop"}}}
    with pytest.raises(ConfigError, match="HF_TOKEN: 'hf_abcdefghijklmnop' is not a 'secret-name/key' reference"):
        load_config(write_profile(tmp_path, gpu_jobs={"runner": "k8s", "pods": pods}))


def test_a_task_entry_keeps_the_task_defaults_it_does_not_name(tmp_path):
    from tests.synth.helpers import synthesis_section

    section = synthesis_section()
    section["tasks"]["english_caption"] = {"generator": "caption_vlm", "sampling": {"max_tokens": 512}}
    tasks = load_config(write_profile(tmp_path, synthesis=section)).synthesis.tasks
    assert (tasks.english_caption.min_chars, tasks.english_caption.max_chars, tasks.english_caption.sampling.max_tokens) == (40, 2000, 512)
    assert (tasks.mcvqa.min_chars, tasks.mcvqa.max_chars) == (1, 80)


def test_gpu_job_python_is_made_absolute_without_leaving_a_venv(tmp_path):
    import sys

    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)  # as a venv has it: resolving it would leave the venv
    path = write_profile(tmp_path, gpu_jobs={"python": "venv/bin/python"})
    assert load_config(path).gpu_jobs.python == str(tmp_path / "venv" / "bin" / "python")
    assert load_config(write_profile(tmp_path, gpu_jobs={"python": "python3"})).gpu_jobs.python == "python3"  # looked up on PATH


def test_env_var_chooses_the_profile(tmp_path, monkeypatch):
    path = write_profile(tmp_path)
    monkeypatch.setenv("ASAGI_CONFIG", str(path))
    assert load_config().profile == "test"


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    path = write_profile(tmp_path, sources={"web": {"downloader": {"max_byts": 10}}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "sources.web.downloader.max_byts: unknown key" in message


def test_wrong_type_names_key_and_expectation(tmp_path):
    path = write_profile(tmp_path, sources={"web": {"downloader": {"workers": "many"}}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "sources.web.downloader.workers" in str(err.value)
    assert "valid integer" in str(err.value)
    assert "'many'" in str(err.value)


def test_missing_required_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("profile: x\nstorage: {root: /tmp/x}\ndagster: {home: /tmp/h}\n")
    with pytest.raises(ConfigError, match="sources: Field required"):
        load_config(path)


def test_bad_network_in_allow_list(tmp_path):
    path = write_profile(tmp_path, sources={"web": {"downloader": {"allow_networks": ["not-a-net"]}}})
    with pytest.raises(ConfigError, match="allow_networks"):
        load_config(path)


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read profile"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("profile: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(broken)


def _keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key).lower()
            if key != "secret_env":  # variable names -> Secret references (checked by the profile model)
                yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def test_no_secret_keys_in_shipped_profiles():
    import yaml

    for path in (REPO / "configs").glob("*.yaml"):
        for key in _keys(yaml.safe_load(path.read_text())):
            # A key that *is* a secret (hf_token, api_key); naming one (api_key_env) or counting tokens is fine.
            assert not re.search(r"(^|_)(secret|password|token|api_key|access_key)$", key), (
                f"{path.name} has key {key}: secrets come from the environment"
            )
