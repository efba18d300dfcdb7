import re
from pathlib import Path

import pytest

from asagi_dagster.config import DEFAULT_PROFILE, load_config
from asagi_dagster.settings import ConfigError
from tests.conftest import write_profile

REPO = Path(__file__).resolve().parent.parent


def test_embedded_default_loads_with_paths_relative_to_the_profile():
    config = load_config(DEFAULT_PROFILE)
    assert config.profile == "local"
    assert config.storage.root == str(REPO / ".asagi" / "data")
    assert config.sources.web.inbox == str(REPO / ".asagi" / "inbox")


def _local_path_values(model) -> list[tuple[str, str]]:
    """(key, value) of every LocalPath-typed setting in a loaded profile, found from the
    models' own annotations (so a new path setting is covered without naming it here)."""
    from typing import get_args

    from pydantic import BaseModel

    from asagi_dagster.settings import LocalPath

    marker = LocalPath.__metadata__[0]
    found = []

    def walk(value, key):
        if isinstance(value, BaseModel):
            for name, field in type(value).model_fields.items():
                inner = getattr(value, name)
                optional = [arg for arg in get_args(field.annotation) if marker in getattr(arg, "__metadata__", ())]
                if (marker in field.metadata or optional) and isinstance(inner, str):
                    found.append((f"{key}{name}", inner))
                walk(inner, f"{key}{name}.")
        elif isinstance(value, dict):
            for name, inner in value.items():
                walk(inner, f"{key}{name}.")

    walk(model, "")
    return found


def test_every_path_setting_is_resolved_against_the_profile_folder():
    values = _local_path_values(load_config(DEFAULT_PROFILE))
    keys = {key for key, _ in values}
    assert {"storage.root", "sources.web.inbox", "dagster.home", "evaluation.benchmarks.ja-vg-vqa-500.path"} <= keys
    assert all(Path(value).is_absolute() or "://" in value for _, value in values), values


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
    with pytest.raises(ConfigError, match="HF_TOKEN: not a 'secret-name/key' reference") as err:
        load_config(write_profile(tmp_path, gpu_jobs={"runner": "k8s", "pods": pods}))
    assert "hf_abcdefghijklmnop" not in str(err.value)  # the token itself stays out of logs and the UI


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
    assert "sources.web.downloader.workers: Input should be a valid integer" in str(err.value)
    assert "(got a string)" in str(err.value) and "many" not in str(err.value)


def test_a_secret_in_a_key_of_another_type_is_named_by_key_and_type_never_by_value(tmp_path):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    path = write_profile(tmp_path, storage={"s3": secret}, sources={"web": {"downloader": {"max_bytes": secret, "allow_networks": secret}}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "storage.s3: Input should be a valid dictionary or instance of S3Settings (got a string)" in message
    assert "sources.web.downloader.max_bytes: Input should be a valid integer" in message
    assert "sources.web.downloader.allow_networks: Input should be a valid list (got a string)" in message
    assert secret not in message and secret[:8] not in message


def test_a_profile_that_is_not_utf8_is_a_one_line_error_saying_where(tmp_path):
    path = write_profile(tmp_path, profile="café")
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    line = next(n for n, text in enumerate(path.read_bytes().splitlines(), 1) if b"caf" in text)
    assert str(err.value) == f"profile {path} is not UTF-8 text (byte 0xe9 at line {line}, column 13); save it as UTF-8"


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
profile: *g
"""


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS + "storage: {root: /tmp/x}\n")  # 4.8 million strings once expanded
    assert path.stat().st_size < 800
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"invalid profile {path}: its aliases expand it past 10000 values (a profile has a few hundred)"
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("profile: &a [*a]\n")  # expands forever
    with pytest.raises(ConfigError, match="its aliases expand it past"):
        load_config(recursive)


def test_a_profile_with_a_few_aliases_still_loads(tmp_path):
    common = {"format": "jsonl", "path": "d.jsonl", "text_column": "caption", "language": "ja", "licence": "CC BY 4.0"}
    path = write_profile(tmp_path, sources={"datasets": {"first": common, "second": common}})
    assert "&id001" in path.read_text() and "*id001" in path.read_text()  # safe_dump shares the repeated mapping
    datasets = load_config(path).sources.datasets
    assert datasets["first"] == datasets["second"] and datasets["second"].text_column == "caption"


def test_error_messages_are_bounded_in_lines_and_length(tmp_path):
    long_key = "k" * 5000
    path = write_profile(tmp_path, storage={long_key: 1}, sources={"web": {"downloader": {"allowed_content_types": [[i] for i in range(500)]}}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert len(message) < 4000 and message.count("\n") == 21
    assert "storage." + "k" * 79 + "…: unknown key" in message and "... and 481 more" in message


def test_missing_required_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("profile: x\nstorage: {root: /tmp/x}\ndagster: {home: /tmp/h}\n")
    with pytest.raises(ConfigError, match="sources: Field required"):
        load_config(path)


def test_bad_network_in_allow_list(tmp_path):
    path = write_profile(tmp_path, sources={"web": {"downloader": {"allow_networks": ["not-a-net"]}}})
    with pytest.raises(ConfigError, match="allow_networks: Value error, entry 0 is not an IP network") as err:
        load_config(path)
    assert "not-a-net" not in str(err.value)


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
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text('profile: test\nstorage: {root: "hunter2-not-closed\n')
    with pytest.raises(ConfigError) as err:  # where, not PyYAML's quoted copy of the line
        load_config(quoted)
    assert str(err.value) == f"invalid YAML in profile {quoted}, line 3, column 1: while scanning a quoted scalar: found unexpected end of stream"
    control = tmp_path / "control.yaml"
    control.write_text("profile: a\x00b\n")
    with pytest.raises(ConfigError, match=r"control.yaml, character 11: unacceptable character #x0000"):
        load_config(control)
    deep = tmp_path / "deep.yaml"
    deep.write_text("profile: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(deep)


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
            assert not re.search(r"(^|_)(secret|password|token|api_key|access_key)$", key), f"{path.name} has key {key}: secrets come from the environment"
