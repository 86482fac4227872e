"""Length-grouped micro-batches whose grouping does not depend on the number of processes.

Every optimizer step takes one *global batch* of ``global_batch`` samples (the paper's batch size, 128). The
samples of an epoch are shuffled with the seed and cut into global batches; inside each, they are sorted by
length and cut into ``global_batch / per_device_batch`` micro-batches of neighbouring lengths, so a micro-batch
pads only to its own longest sample. The micro-batches of all epochs form one sequence; with ``W`` processes,
Accelerate hands micro-batch ``j`` to rank ``j mod W`` (``BatchSamplerShard``), and each rank accumulates
``global_batch / per_device_batch / W`` of them. The samples of step *s* are therefore the same for 1, 2 or 8
processes, and the loss (summed over the step's label tokens, divided by their count) is the same quantity.

An epoch's last global batch may be short: it is cut into the same number of micro-batches when it holds at
least that many samples; otherwise its samples sit that epoch out (counted in the plan).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .mask import IGNORE_INDEX


@dataclass
class BatchPlan:
    micro_batches: list[list[int]]  # sample indices, in the global order (all epochs)
    micro_per_step: int  # micro-batches per optimizer step (= global_batch / per_device_batch)
    steps: int
    steps_per_epoch: int
    skipped: int  # sample-epochs left out (short final global batches)
    tokens: int  # non-padding tokens over all steps
    padded_tokens: int  # tokens including padding (what the model computes)

    @property
    def padding_share(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


def check_batch(global_batch: int, per_device_batch: int, world_size: int) -> int:
    """Gradient accumulation steps so that per-device batch x accumulation x world size == global batch."""
    per_step = per_device_batch * world_size
    if global_batch % per_step:
        raise ValueError(
            f"global batch {global_batch} is not a multiple of per-device batch {per_device_batch} x "
            f"{world_size} processes"
        )
    return global_batch // per_step


def plan_batches(
    lengths: Sequence[int],
    global_batch: int,
    per_device_batch: int,
    epochs: int,
    seed: int,
    max_steps: int | None = None,
) -> BatchPlan:
    """The micro-batches of a run (see the module docstring); ``max_steps`` stops early."""
    n = len(lengths)
    micro = global_batch // per_device_batch
    if global_batch % per_device_batch:
        raise ValueError(f"global batch {global_batch} is not a multiple of per-device batch {per_device_batch}")
    lengths = np.asarray(lengths)
    batches: list[list[int]] = []
    steps = skipped = tokens = padded = 0
    steps_per_epoch = 0
    rng = np.random.default_rng(seed)
    for _epoch in range(epochs):
        order = rng.permutation(n)
        epoch_steps = 0
        for start in range(0, n, global_batch):
            if max_steps is not None and steps >= max_steps:
                break
            chunk = order[start : start + global_batch]
            if len(chunk) < micro:
                skipped += len(chunk)
                continue
            chunk = sorted(chunk.tolist(), key=lambda i: (int(lengths[i]), i))
            for part in np.array_split(np.arange(len(chunk)), micro):
                mb = [chunk[i] for i in part]
                batches.append(mb)
                tokens += int(lengths[mb].sum())
                padded += int(lengths[mb].max()) * len(mb)
            steps += 1
            epoch_steps += 1
        steps_per_epoch = max(steps_per_epoch, epoch_steps)
    return BatchPlan(batches, micro, steps, steps_per_epoch, skipped, tokens, padded)


class PlanSampler:
    """A batch sampler yielding a :class:`BatchPlan`'s micro-batches (all epochs in one pass)."""

    def __init__(self, plan: BatchPlan):
        self.plan = plan

    def __iter__(self):
        yield from self.plan.micro_batches

    def __len__(self):
        return len(self.plan.micro_batches)


class Collator:
    """Right-pads a micro-batch to its longest sample; labels are padded with -100."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to  # fixed length (the benchmark's naive baseline pads to max length)

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = self.pad_to or max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            k = len(f["input_ids"])
            ids[row, :k] = torch.tensor(f["input_ids"])
            labels[row, :k] = torch.tensor(f["labels"])
            attn[row, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attn}


def steps_for(n_samples: int, global_batch: int, epochs: float) -> int:
    return math.ceil(n_samples / global_batch) * int(math.ceil(epochs))
