"""Training settings, the process-independent batch plan, and run planning (no model needed)."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from instag.errors import ConfigError
from instag.finetune import plan_runs
from instag.train import TrainSettings
from instag.train.batching import Collator, check_batch, plan_batches
from tests.conftest import REPO


def _schema_section():
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    return schema["properties"]["finetune"]["properties"]


def test_code_and_schema_defaults_agree():
    props = _schema_section()["training"]["properties"]
    code = TrainSettings()
    assert set(props) == {f.name for f in fields(TrainSettings)}
    for name, spec in props.items():
        assert spec["default"] == getattr(code, name), name
        assert spec.get("description"), name


def test_paper_recipe_in_paper_config():
    cfg = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["finetune"]
    t = {**TrainSettings().to_dict(), **cfg["training"]}
    assert (t["epochs"], t["global_batch"], t["learning_rate"]) == (5, 128, 2e-5)  # paper.md §6
    assert (t["max_length"], t["lr_scheduler"], t["warmup_ratio"], t["weight_decay"]) == (2048, "cosine", 0.03, 0)
    assert t["precision"] == "bf16" and "full_shard" in t["fsdp"] and t["lora"] is None
    assert t["template"] == "vicuna_v1.1"
    seeds = [s for spec, s in cfg["seeds_per_set"].items()]
    assert set(cfg["seeds_per_set"]) == {"size/main", "random/main"} and all(len(s) >= 2 for s in seeds)


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="finetune.training.precision"):
        TrainSettings(precision="int3")
    with pytest.raises(ConfigError, match="finetune.training.global_batch"):
        TrainSettings(global_batch=10, per_device_batch=4)
    with pytest.raises(ConfigError, match="finetune.training.learnin_rate"):
        TrainSettings.from_dict({"learnin_rate": 1})
    assert TrainSettings().hash() == TrainSettings().hash() != TrainSettings(learning_rate=1e-4).hash()


def _shard(plan, world):
    """What Accelerate's BatchSamplerShard hands each rank: micro-batch j goes to rank j mod world."""
    return [[mb for j, mb in enumerate(plan.micro_batches) if j % world == r] for r in range(world)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_step_sees_the_same_samples_for_any_world_size(world):
    lengths = [(i * 37) % 101 + 5 for i in range(50)]
    plan = plan_batches(lengths, global_batch=8, per_device_batch=2, epochs=2, seed=3)
    accum = check_batch(8, 2, world)
    assert accum * 2 * world == 8
    shards = _shard(plan, world)
    steps = []
    for s in range(plan.steps):
        got = [i for r in range(world) for mb in shards[r][s * accum : (s + 1) * accum] for i in mb]
        steps.append(sorted(got))
    reference = [sorted(i for mb in plan.micro_batches[s * 4 : (s + 1) * 4] for i in mb) for s in range(plan.steps)]
    assert steps == reference
    # 50 samples, global batch 8: 6 full steps + one of 2 samples (< 4 micro-batches: sits out) per epoch
    assert plan.steps == 12 and plan.steps_per_epoch == 6 and plan.skipped == 4
    assert all(len(set(r)) == 8 for r in reference)


def test_length_grouping_keeps_padding_small():
    import numpy as np

    lengths = np.random.default_rng(0).integers(20, 2000, 512).tolist()
    grouped = plan_batches(lengths, global_batch=128, per_device_batch=4, epochs=1, seed=0)
    naive_padded = sum(max(lengths[i : i + 4]) * 4 for i in range(0, 512, 4))
    assert grouped.padding_share < 0.05 < 1 - sum(lengths) / naive_padded
    assert sorted(i for mb in grouped.micro_batches for i in mb) == list(range(512))
    assert plan_batches(lengths, 128, 4, 1, seed=0).micro_batches == grouped.micro_batches
    assert plan_batches(lengths, 128, 4, 1, seed=1).micro_batches != grouped.micro_batches
    assert plan_batches(lengths, 128, 4, 3, seed=0, max_steps=5).steps == 5


def test_collator_pads_right_and_masks_padding():
    batch = Collator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


VARIANTS = {
    "complexity": ["tags1", "tags1.3", "tags1.6"],
    "diversity": ["cov0.3", "cov0.4", "cov0.5"],
    "size": ["n30", "n60", "n120"],
    "random": ["n30", "n60", "n120"],
}


def test_plan_runs_selects_sets_and_seeds():
    runs = plan_runs(
        VARIANTS,
        ["size/main", "random/main", "complexity/first", "complexity/last", "diversity/first", "diversity/last"],
        [42],
        {"size/main": [1, 2]},
        main_size=60,
    )
    assert runs == [
        ("complexity", "tags1", 42),
        ("complexity", "tags1.6", 42),
        ("diversity", "cov0.3", 42),
        ("diversity", "cov0.5", 42),
        ("size", "n60", 1),
        ("size", "n60", 2),
        ("random", "n60", 42),
    ]
    assert len(plan_runs(VARIANTS)) == 12  # default: every sampled set, one seed
    assert plan_runs(VARIANTS, ["size/n*"], [0, 1])[-2:] == [("size", "n120", 0), ("size", "n120", 1)]
    with pytest.raises(ConfigError, match="finetune.sets.*'size/n7'.*size: n30, n60, n120"):
        plan_runs(VARIANTS, ["size/n7"])
    with pytest.raises(ConfigError, match="finetune.sets"):
        plan_runs(VARIANTS, ["n60"])


def test_the_loss_probe_is_the_first_distinct_samples_trained_on():
    from instag.train.trainer import probe_indices

    plan = plan_batches([10, 20, 30, 40, 50, 60], global_batch=4, per_device_batch=2, epochs=2, seed=0, max_steps=2)
    trained = [i for b in plan.micro_batches[: plan.steps * plan.micro_per_step] for i in b]
    probe = probe_indices(plan, 16)
    assert len(probe) == len(set(probe)) == len(set(trained))  # every distinct sample trained on, once
    assert probe == list(dict.fromkeys(trained))  # in training order
    assert probe_indices(plan, 3) == probe[:3] and probe_indices(plan, 0) == []
    with pytest.raises(ConfigError, match="probe_samples"):
        TrainSettings(probe_samples=-1)
