"""Benchmark: fine-tuning the embedded SmolLM2-135M on CPU, the first-draft way against the stage's trainer.

    .venv/bin/python benchmarks/finetune.py [--steps 3] [--global-batch 4] [--max-length 512] [--threads 2]

Both train the same samples (real Alpaca and Dolly records from ../shared/data, in FastChat's Vicuna v1.1
template) for the same optimizer steps at the same global batch, each in its own process:

(a) what a user writes first: the HF Trainer in fp32, batch 1 (gradient accumulation makes up the global batch),
    no packing or grouping, every sample padded to the max length;
(b) the stage's trainer (instag.train.train_conversations) as the demo config sets it: precision auto (bf16 only
    where the CPU has native bf16, else fp32), micro-batches of `--per-device-batch` length-grouped samples
    padded to their own longest, assistant-only loss.

Printed: non-padding tokens/s of the training loop, padding share, peak resident memory, the (b)/(a) ratio
(target >= 3x), the measured fp32 and bf16 matmul rates on the same threads, and how far (b) is from the
compute limit, taken as 6 x parameters FLOP per token at the faster of the two rates. Run it on a quiet machine
and quote `uptime` beside the figures; no assertion here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def conversations(n: int) -> list[dict]:
    """n real instruction/response pairs, alternating Alpaca and Dolly records (varied lengths)."""
    out = []
    alpaca = json.loads((DATA / "alpaca-random-9k.json").read_text())
    dolly = json.loads((DATA / "dolly-3k.json").read_text())
    for i in range(n):
        row = (alpaca if i % 2 == 0 else dolly)[i // 2]
        query = row["instruction"] + (("\n\n" + row["input"]) if row.get("input") else "")
        out.append(
            {
                "id": f"b{i}",
                "turns": [{"role": "user", "content": query}, {"role": "assistant", "content": row["output"]}],
            }
        )
    return out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_naive(args) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    from instag.train import template_params
    from instag.train.model import load_model, load_tokenizer, resolve
    from instag.train.template import render

    torch.set_num_threads(args.threads)
    src = resolve("embedded:SmolLM2-135M-Instruct")
    tok = load_tokenizer(src)
    params = template_params("vicuna_v1.1", end_of_turn=tok.eos_token)
    convs = conversations(args.steps * args.global_batch)
    items, real = [], 0
    for c in convs:
        text, _ = render(c, params)
        enc = tok(text, truncation=True, max_length=args.max_length, padding="max_length")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        real += sum(mask)
        items.append(
            {
                "input_ids": ids,
                "attention_mask": mask,
                "labels": [t if m else -100 for t, m in zip(ids, mask, strict=True)],
            }
        )
    model = load_model(src)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return {k: torch.tensor(v) for k, v in items[i].items()}

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=args.global_batch,
            max_steps=args.steps,
            learning_rate=1e-4,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            logging_steps=1,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=DS())
        t0 = time.perf_counter()
        trainer.train()
        secs = time.perf_counter() - t0
    total = len(items) * args.max_length
    return {
        "seconds": secs,
        "tokens": real,
        "padding_share": 1 - real / total,
        "peak_mib": peak_mib(),
        "precision": "fp32",
        "per_device_batch": 1,
    }


def run_stage(args) -> dict:
    from instag.train import TrainSettings, train_conversations
    from instag.train.trainer import resolve_precision

    settings = TrainSettings(
        max_length=args.max_length,
        epochs=1,
        max_steps=args.steps,
        global_batch=args.global_batch,
        per_device_batch=args.per_device_batch,
        learning_rate=1e-4,
        warmup_ratio=0.0,
        precision="auto",
        save_steps=10_000,
        max_lost_share=1.0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = train_conversations(
            conversations(args.steps * args.global_batch),
            settings,
            tmp,
            threads=args.threads,
            seed=0,
            show_progress=False,
        )
    b = summary["batch"]
    return {
        "seconds": summary["seconds"],
        "tokens": b["tokens"],
        "padding_share": b["padding_share"],
        "peak_mib": peak_mib(),
        "precision": resolve_precision("auto"),
        "per_device_batch": args.per_device_batch,
    }


def matmul_rates(threads: int, n: int = 1024) -> dict:
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            a @ b
            reps += 1
        out[name] = 2 * n**3 * reps / (time.perf_counter() - t0)
    return out


def child(mode: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--steps",
        str(args.steps),
        "--global-batch",
        str(args.global_batch),
        "--max-length",
        str(args.max_length),
        "--threads",
        str(args.threads),
        "--per-device-batch",
        str(args.per_device_batch),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        sys.stderr.write(res.stderr[-3000:])
        raise SystemExit(f"{mode} run failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--global-batch", type=int, default=4)
    ap.add_argument("--per-device-batch", type=int, default=2, help="(b)'s micro-batch (the demo config's)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=["naive", "stage"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_naive(args) if args.child == "naive" else run_stage(args)))
        return 0
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} CPUs, {args.threads} threads")
    a, b = child("naive", args), child("stage", args)
    rates = matmul_rates(args.threads)
    params = 134.5e6
    for name, r in (("(a) naive HF Trainer", a), ("(b) stage trainer", b)):
        r["tok_s"] = r["tokens"] / r["seconds"]
        print(
            f"{name:22s} {r['precision']} batch {r['per_device_batch']}: {r['tokens']:6d} tokens in "
            f"{r['seconds']:7.1f} s = {r['tok_s']:7.1f} non-padding tok/s, padding {100 * r['padding_share']:5.1f}%, "
            f"peak RSS {r['peak_mib']:7.0f} MiB"
        )
    print(f"ratio (b)/(a): {b['tok_s'] / a['tok_s']:.2f}x (target >= 3x)")
    best = max(rates.values())
    limit = best / (6 * params)
    print(
        f"matmul 2048^2 on {args.threads} threads: fp32 {rates['fp32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {rates['bf16'] / 1e9:.1f} GFLOP/s; compute limit at 6 x {params / 1e6:.1f}M FLOP/token: "
        f"{limit:.0f} tok/s; (b) reaches {100 * b['tok_s'] / limit:.1f}% of it"
    )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
