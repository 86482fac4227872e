"""The config checks the workflow runs after the schema (instag.config): each names its key; warnings are returned."""

from __future__ import annotations

import pytest

from instag.config import (
    check_analysis_scores,
    check_api_keys,
    check_inputs_exist,
    dataset_path,
    enabled_datasets,
    openai_specs,
    sampling_pool,
)
from instag.errors import ConfigError


def make_config(enabled=("a", "b", "c"), pool=("a", "b"), scores=None, data_root="data") -> dict:
    return {
        "data_root": data_root,
        "datasets": {name: {"path": f"{name}.jsonl", "enabled": name in enabled} for name in ("a", "b", "c")},
        "analysis": {"scores": dict(scores or {})},
        "sampling": {"pool": list(pool)},
    }


def test_enabled_datasets_keeps_config_order_and_needs_one():
    assert enabled_datasets(make_config(enabled=("c", "a"))) == ["a", "c"]
    with pytest.raises(ConfigError, match=r"^config key 'datasets': every dataset has enabled: false$"):
        enabled_datasets(make_config(enabled=()))


def test_dataset_path_relative_to_data_root_then_basedir(tmp_path):
    cfg = make_config()
    assert dataset_path(cfg, "a", tmp_path) == tmp_path / "data" / "a.jsonl"
    cfg["data_root"] = str(tmp_path / "elsewhere")
    assert dataset_path(cfg, "a", "/repo") == tmp_path / "elsewhere" / "a.jsonl"
    cfg["datasets"]["a"]["path"] = "/abs/a.jsonl"
    assert str(dataset_path(cfg, "a", "/repo")) == "/abs/a.jsonl"


def test_missing_input_names_its_key(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("{}\n")
    cfg = make_config()
    check_inputs_exist(cfg, ["a"], tmp_path)
    with pytest.raises(ConfigError, match=r"^config key 'datasets.b.path': file not found: .*b\.jsonl") as err:
        check_inputs_exist(cfg, ["a", "b"], tmp_path)
    assert f"(data_root is 'data', resolved from {tmp_path})" in str(err.value)


def test_analysis_scores_name_configured_datasets():
    check_analysis_scores(make_config(scores={"c": 1.0}))  # a disabled but configured dataset is fine
    with pytest.raises(ConfigError) as err:
        check_analysis_scores(make_config(scores={"zz": 1.0}))
    assert str(err.value) == "config key 'analysis.scores.zz': not a configured dataset (datasets: a, b, c)"


def test_sampling_pool_leaves_out_disabled_datasets_with_a_warning():
    assert sampling_pool(make_config(pool=("b", "a"))) == (["b", "a"], [])
    pool, warnings = sampling_pool(make_config(enabled=("a",), pool=("c", "a", "b")))
    assert pool == ["a"]
    assert warnings == ["sampling.pool datasets disabled and left out of the pool: b, c"]


def test_sampling_pool_errors_name_the_key():
    with pytest.raises(ConfigError) as err:
        sampling_pool(make_config(pool=("a", "zz")))
    assert str(err.value) == "config key 'sampling.pool': 'zz' is not a configured dataset (datasets: a, b, c)"
    with pytest.raises(ConfigError) as err:
        sampling_pool(make_config(enabled=("a",), pool=("b", "c")))
    assert str(err.value) == "config key 'sampling.pool': every pool dataset is disabled"


API = {
    "tagging": {"backend": {"backend": "openai", "model": "gpt-4"}},
    "quality": {"enabled": False, "judge": {"backend": "openai"}},
    "mtbench": {"judge": {"backend": {"backend": "openai", "api_key_env": "JUDGE_KEY"}}},
    "instagger": {"teacher": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
}


def test_openai_specs_skip_disabled_sections():
    assert [key for key, _ in openai_specs(API)] == ["tagging.backend", "mtbench.judge.backend", "instagger.teacher"]


def test_missing_api_key_is_named_for_the_stages_that_run():
    check_api_keys(API, None, {"OPENAI_API_KEY": "k", "JUDGE_KEY": "k"})  # the loopback server needs none
    check_api_keys(API, {"mtbench"}, {"JUDGE_KEY": "k"})  # tagging does not run
    with pytest.raises(ConfigError) as err:
        check_api_keys(API, {"tagging", "mtbench"}, {"OPENAI_API_KEY": "k"})
    assert str(err.value) == (
        "config key 'mtbench.judge.backend': the openai backend reads its API key from the environment variable "
        "JUDGE_KEY, which is not set (export it, or set `api_key_env` to the variable that holds it)"
    )
