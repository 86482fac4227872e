"""The finetune stage's data join and summary (no model): sampled ids -> conversations, run folders -> tables."""

from __future__ import annotations

import json

import pytest

from instag.errors import InputError
from instag.finetune import SPEED_COLUMNS, TABLE_COLUMNS, load_conversations, loss_drop, summarize
from instag.io import read_tsv


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_conversations_follow_the_sample_and_name_missing_ids(tmp_path):
    recs = tmp_path / "a.jsonl"
    _write(recs, [{"id": f"a:{i}", "dataset": "a", "turns": [{"role": "user", "content": str(i)}]} for i in range(4)])
    sample = tmp_path / "n2.jsonl"
    _write(sample, [{"id": "a:3", "dataset": "a", "tags": []}, {"id": "a:1", "dataset": "a", "tags": ["x"]}])
    convs = load_conversations(sample, [recs])
    assert [c["id"] for c in convs] == ["a:3", "a:1"] and convs[0]["turns"][0]["content"] == "3"
    _write(sample, [{"id": "a:1"}, {"id": "a:9"}])
    with pytest.raises(InputError, match=r"n2.jsonl:2: 1 sampled ids are in none of the record files"):
        load_conversations(sample, [recs])
    _write(sample, [{"id": "a:1"}, {"id": "a:1"}])
    with pytest.raises(InputError, match=r"n2.jsonl:2: duplicate id"):
        load_conversations(sample, [recs])


def test_summary_table_speed_table_and_figure(tmp_path):
    runs, timings = [], []
    for variant, losses in (("n60", [2.0, 1.5, 1.2]), ("n30", [2.2, 2.0, 1.9])):
        d = tmp_path / "random" / variant / "seed42"
        d.mkdir(parents=True)
        (d / "loss.tsv").write_text(
            "step\tepoch\tloss\tlearning_rate\tgrad_norm\ttokens\n"
            + "".join(f"{i + 1}\t{i / 3:.4f}\t{v}\t1e-4\t1.0\t100\n" for i, v in enumerate(losses))
        )
        run = {
            "seed": 42,
            "steps": 3,
            "settings": {"epochs": 1, "learning_rate": 1e-4},
            "sample": {"ablation": "random", "variant": variant, "records": 10},
            "mask_audit": {"kept": 9, "lost": 1, "truncated_kept": 2, "trainable_tokens": 120},
            "batch": {"tokens": 300, "padding_share": 0.05, "global_batch": 4},
        }
        (d / "run.json").write_text(json.dumps(run))
        runs.append(d / "run.json")
        t = tmp_path / f"{variant}.steps.tsv"
        t.write_text("step\tseconds\ttokens\ttokens_per_s\n1\t2.0\t100\t50\n2\t2.0\t100\t50\n3\t1.0\t100\t100\n")
        timings.append(t)
    out = tmp_path / "out"
    rows = summarize(runs, out / "finetune.tsv", out / "f.png", out / "f.pdf", speed=out / "speed.tsv", timings=timings)
    table = read_tsv(out / "finetune.tsv")
    assert list(table[0]) == TABLE_COLUMNS and len(rows) == 2
    assert table[0]["final_loss"] == "1.2" and table[0]["loss_drop"] == "0.8" and table[0]["samples"] == "9"
    speed = read_tsv(out / "speed.tsv")
    assert (
        list(speed[0]) == SPEED_COLUMNS
        and float(speed[0]["seconds"]) == 5.0
        and float(speed[0]["tokens_per_s"]) == 60.0
    )
    assert (out / "f.png").stat().st_size > 1000 and (out / "f.pdf").read_bytes().startswith(b"%PDF")
    assert loss_drop([3, 3, 2, 2, 1, 1]) == 2.0 and loss_drop([1.0]) is None


def test_train_command_line_and_its_torchrun_relaunch(tmp_path, monkeypatch):
    """The rule's flags parse into train()'s arguments; with --nproc 2 the same arguments reach each process."""
    from instag import cli, finetune
    from tests.support.relaunch import check_torchrun_relaunch

    parser = cli.build_parser("finetune")
    out = tmp_path / "run"
    argv = ["-v", "finetune", "train", "--sample", "s.jsonl", "--records", "a.jsonl", "b.jsonl"]
    argv += ["--settings", '{"epochs": 2}', "--seed", "7", "--out-dir", str(out), "--threads", "4", "--nproc", "2"]
    argv += ["--timing", "t.tsv", "--ablation", "random", "--variant", "n60", "--no-progress"]
    args, _ = check_torchrun_relaunch(monkeypatch, parser, argv, out, finetune.train, finetune.log)
    assert args.settings == {"epochs": 2} and args.show_progress is False and args.records == ["a.jsonl", "b.jsonl"]

    bare = parser.parse_args(["finetune", "train", "--sample", "s", "--records", "r", "--out-dir", "o"])
    assert (bare.seed, bare.threads, bare.nproc, bare.settings, bare.show_progress) == (42, 1, 1, None, True)
