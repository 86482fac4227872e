"""One trainer for every fine-tuning in the workflow (TagLM in ``finetune``; the same code serves InsTagger).

:func:`train_conversations` renders conversations with FastChat's template, masks everything but the
assistant turns (:mod:`.mask`), audits the mask, plans length-grouped micro-batches that give the same
global batch for any number of processes (:mod:`.batching`), trains with the HF ``Trainer`` (AdamW, schedule,
clipping, mixed precision, DDP/FSDP, checkpoints and resume are all the Trainer's), and writes:

``out_dir/model/``        the model in HF format (a LoRA run is merged first), tokenizer and generation config
``out_dir/run.json``      the record: base model and its hash, sample hash, settings and their hash, seed,
                          template parameters, mask audit, batch plan, losses, package versions (no timings)
``out_dir/loss.tsv``      one row per optimizer step: step, epoch, loss, learning rate, grad norm, tokens
``out_dir/trainer_state.json``  the Trainer's log history without its timing fields
``out_dir/loss.png``      the loss curve
``out_dir/rejected.jsonl`` samples not trained on (or cut), each with its reason
``out_dir/model.gguf``    optional F16 GGUF (:mod:`.gguf_export`) for OpenVINO GenAI
``out_dir/checkpoints/``  Trainer checkpoints every ``save_steps``; a restarted run resumes from the last one

Timings never go into ``out_dir`` (they would break byte-identical reruns): per-step seconds and tokens/s go
to ``timing_path`` when given, and to the log.

Launching: one process, or ``torchrun`` (``WORLD_SIZE``/``RANK`` in the environment; see
:func:`instag.finetune.launch`). Each process uses ``threads // local processes`` torch threads.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from ..errors import InstagError
from ..io import atomic_write, write_json, write_jsonl
from .batching import BatchPlan, Collator, PlanSampler, check_batch, plan_batches
from .mask import BAD_ROLES, NO_ASSISTANT, NO_TRAINABLE, TRUNCATED, Audit, encode
from .model import ModelSource, file_sha256, load_model, load_tokenizer, resolve
from .settings import TrainSettings
from .template import TemplateError, TemplateParams, normalize_turns, render, template_params

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "accelerate", "peft", "fschat", "gguf", "instag-workflow")
LOSS_COLUMNS = ["step", "epoch", "loss", "learning_rate", "grad_norm", "tokens"]


class TrainError(InstagError):
    """A run that must not go on (too many samples lost to the mask, no step to take, ...)."""


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------------------ data preparation


def prepare(conversations: Sequence[dict], tokenizer, params: TemplateParams, settings: TrainSettings):
    """Encoded samples (``[{"id", "input_ids", "labels"}]``) and the mask :class:`~.mask.Audit`."""
    audit = Audit(samples=len(conversations))
    samples = []
    for conv in conversations:
        cid = str(conv.get("id"))
        try:
            _, turns = normalize_turns(conv)
        except TemplateError as exc:
            audit.reject(cid, BAD_ROLES, str(exc))
            continue
        if not any(role == "assistant" for role, _ in turns):
            audit.reject(cid, NO_ASSISTANT, "no assistant turn after a user turn")
            continue
        text, spans = render(conv, params)
        enc = encode(tokenizer, text, spans, settings.max_length)
        audit.straddling_tokens += enc.straddling
        if enc.full_length > settings.max_length:
            if settings.over_length == "drop":
                audit.reject(
                    cid,
                    TRUNCATED,
                    f"{enc.full_length} tokens > max_length {settings.max_length}",
                    tokens=enc.full_length,
                )
                continue
            if enc.trainable:
                audit.truncated_kept += 1
                audit.reject(
                    cid,
                    TRUNCATED,
                    f"cut from {enc.full_length} to {settings.max_length} tokens",
                    kept=True,
                    tokens=enc.full_length,
                )
        if not enc.trainable:
            audit.reject(
                cid,
                NO_TRAINABLE,
                f"no assistant token within the first {settings.max_length} tokens",
                tokens=enc.full_length,
            )
            continue
        audit.kept += 1
        audit.tokens += len(enc.input_ids)
        audit.trainable_tokens += enc.trainable
        samples.append({"id": cid, "input_ids": enc.input_ids, "labels": enc.labels})
    return samples, audit


# ------------------------------------------------------------------------------------------------ precision


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 where the device computes it natively (CUDA with bf16, or a CPU with AMX/AVX512-BF16)."""
    import torch

    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return "bf16"
    return "fp32"


# ------------------------------------------------------------------------------------------------ callbacks


def _make_callbacks(timing_path: Path | None, plan: BatchPlan, show_progress: bool):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """A tqdm bar over optimizer steps with tokens/s, ETA and loss; per-step seconds to ``timing_path``."""

        def __init__(self):
            self.bar = None
            self.t_last = None
            self.tokens_last = 0
            self.t0 = None
            self.tokens0 = 0
            self.pending = {}

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            from tqdm import tqdm

            self.t0 = self.t_last = time.perf_counter()
            self.tokens0 = self.tokens_last = state.num_input_tokens_seen
            if show_progress:
                self.bar = tqdm(
                    total=state.max_steps,
                    initial=state.global_step,
                    unit="step",
                    desc="finetune",
                    dynamic_ncols=True,
                    mininterval=1.0,
                )
            if timing_path is not None and not timing_path.exists():
                timing_path.parent.mkdir(parents=True, exist_ok=True)
                timing_path.write_text("step\tseconds\ttokens\ttokens_per_s\n")

        def on_step_end(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            now = time.perf_counter()
            dt, dtok = now - self.t_last, state.num_input_tokens_seen - self.tokens_last
            self.t_last, self.tokens_last = now, state.num_input_tokens_seen
            rate = (state.num_input_tokens_seen - self.tokens0) / max(now - self.t0, 1e-9)
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
                self.bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
            log.info(
                "step %d/%d: %.2f s, %d tokens (%.0f tok/s)",
                state.global_step,
                state.max_steps,
                dt,
                dtok,
                dtok / max(dt, 1e-9),
            )
            if timing_path is not None:
                with open(timing_path, "a", encoding="utf-8") as fh:
                    fh.write(f"{state.global_step}\t{dt:.4f}\t{dtok}\t{dtok / max(dt, 1e-9):.1f}\n")

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs and "loss" in logs:
                log.info("step %d: loss %.4f lr %.3g", state.global_step, logs["loss"], logs.get("learning_rate", 0))
                if self.bar is not None:
                    self.bar.set_postfix_str(f"loss {logs['loss']:.3f}", refresh=False)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return [Progress()]


def _trainer_class():
    from torch.utils.data import DataLoader
    from transformers import Trainer

    class PlanTrainer(Trainer):
        """The HF Trainer fed by a :class:`~.batching.BatchPlan` (each log row carries ``num_input_tokens_seen``)."""

        def __init__(self, *args, plan: BatchPlan, **kwargs):
            self._plan = plan
            super().__init__(*args, **kwargs)

        def get_train_dataloader(self):
            loader = DataLoader(
                self.train_dataset,
                batch_sampler=PlanSampler(self._plan),
                collate_fn=self.data_collator,
                num_workers=0,
            )
            return self.accelerator.prepare(loader)

    return PlanTrainer


class _ListDataset:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        return {"input_ids": item["input_ids"], "labels": item["labels"]}


# ------------------------------------------------------------------------------------------------ outputs


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def loss_rows(log_history: list[dict], steps_per_epoch: int) -> list[dict]:
    rows, prev_tokens = [], 0
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        tokens = entry.get("num_input_tokens_seen")
        rows.append(
            {
                "step": entry["step"],
                "epoch": round(entry["step"] / steps_per_epoch, 4) if steps_per_epoch else "",
                "loss": entry["loss"],
                "learning_rate": entry.get("learning_rate"),
                "grad_norm": entry.get("grad_norm"),
                "tokens": None if tokens is None else tokens - prev_tokens,
            }
        )
        if tokens is not None:
            prev_tokens = tokens
    return rows


def write_loss_tsv(path: Path, rows: list[dict]) -> None:
    with atomic_write(path) as fh:
        fh.write("\t".join(LOSS_COLUMNS) + "\n")
        for r in rows:
            fh.write("\t".join(_fmt(r[c]) for c in LOSS_COLUMNS) + "\n")


def plot_loss(rows: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker="." if len(rows) < 60 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120, metadata={"Software": None})
    plt.close(fig)


_TIMING_KEYS = ("total_flos",)
_TIMING_SUFFIXES = ("_runtime", "_per_second")  # train_runtime, probe_samples_per_second, ...


def _clean_history(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in _TIMING_KEYS and not k.endswith(_TIMING_SUFFIXES)} for e in history]


def probe_indices(plan: BatchPlan, n: int) -> list[int]:
    """The first ``n`` distinct samples the plan trains on, in training order (the loss probe)."""
    out: list[int] = []
    seen: set[int] = set()
    for batch in plan.micro_batches[: plan.steps * plan.micro_per_step]:
        for i in batch:
            if len(out) >= n:
                return out
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out


def probe_loss(model, samples: Sequence[dict], collator) -> float | None:
    """Mean over ``samples`` of each one's loss on its trainable tokens, one sample per forward pass (padding
    never weighs in), in fp32 without gradients; None when there is no sample. Every process computes the same
    value (under FSDP the forward passes are collective, so every process must call this)."""
    import torch

    if not samples:
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    with torch.no_grad():
        for item in samples:
            batch = {k: v.to(device) for k, v in collator([item]).items()}
            losses.append(float(model(**batch).loss))
    model.train(was_training)
    return round(sum(losses) / len(losses), 6)


def _probe_callback(samples: Sequence[dict], collator, store: Path, result: dict):
    """Measures the probe with the base model when training starts from step 0 and keeps it in ``store``, so a
    resumed run reports the same value (its weights at train begin are the checkpoint's)."""
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            if state.global_step == 0 or not store.exists():
                result["before"] = probe_loss(model, samples, collator)
                if state.is_world_process_zero:
                    write_json(store, {"loss_before": result["before"]})
            else:
                result["before"] = json.loads(store.read_text())["loss_before"]

    return Probe()


# ------------------------------------------------------------------------------------------------ main entry


def _dist() -> tuple[int, int, int]:
    return (
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))),
    )


def set_threads(threads: int) -> int:
    """Torch threads of this process: the job's ``threads`` shared by the processes on this node."""
    import torch

    _, _, local = _dist()
    n = max(1, threads // max(local, 1))
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    return n


def train_conversations(
    conversations: Sequence[dict],
    settings: TrainSettings,
    out_dir: str | os.PathLike,
    threads: int = 2,
    seed: int = 42,
    *,
    timing_path: str | os.PathLike | None = None,
    record: dict | None = None,
    show_progress: bool = True,
) -> dict:
    """Fine-tune ``settings.base_model`` on ``conversations`` and write ``out_dir`` (see the module docstring).

    ``conversations``: ``[{"id", "system"?, "turns": [{"role": "user"|"assistant", "content"}]}]``.
    ``record``: extra fields for run.json (e.g. the sample file and its sha256). Returns the run.json content
    plus ``seconds`` and ``tokens_per_s`` of this process's training (not written to run.json).
    """
    import torch
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world, rank, _ = _dist()
    per_proc_threads = set_threads(threads)
    set_seed(seed)
    source: ModelSource = resolve(settings.base_model)
    tokenizer = load_tokenizer(source)
    eot = settings.end_of_turn if settings.end_of_turn is not None else tokenizer.eos_token
    if not eot:
        raise TrainError(f"{settings.base_model}: the tokenizer has no EOS token; set finetune.training.end_of_turn")
    params = template_params(settings.template, end_of_turn=eot, system=settings.system)

    samples, audit = prepare(conversations, tokenizer, params, settings)
    if rank == 0:
        write_jsonl(out / "rejected.jsonl", audit.rejected)
    log.info("mask audit: %s", json.dumps(audit.to_dict()))
    if audit.lost_share > settings.max_lost_share:
        raise TrainError(
            f"{audit.lost} of {audit.samples} samples ({audit.lost_share:.1%}) would not be trained on "
            f"({audit.to_dict()['lost_by_reason']}), more than max_lost_share {settings.max_lost_share:.1%}; "
            f"see {out / 'rejected.jsonl'}"
        )

    accum = check_batch(settings.global_batch, settings.per_device_batch, world)
    plan = plan_batches(
        [len(s["input_ids"]) for s in samples],
        settings.global_batch,
        settings.per_device_batch,
        settings.epochs,
        seed,
        settings.max_steps,
    )
    if plan.steps == 0:
        raise TrainError(
            f"no optimizer step: {len(samples)} usable samples cannot fill one global batch of "
            f"{settings.global_batch} split into {plan.micro_per_step} micro-batches"
        )
    precision = resolve_precision(settings.precision)
    log.info(
        "global batch %d = per-device %d x accumulation %d x %d processes; %d steps (%d per epoch), "
        "%d micro-batches, padding %.1f%% of %d tokens; precision %s; %d torch threads per process",
        settings.global_batch,
        settings.per_device_batch,
        accum,
        world,
        plan.steps,
        plan.steps_per_epoch,
        len(plan.micro_batches),
        100 * plan.padding_share,
        plan.padded_tokens,
        precision,
        per_proc_threads,
    )

    model = load_model(source)
    if settings.lora:
        from peft import LoraConfig, get_peft_model

        lora = dict(settings.lora)
        model = get_peft_model(
            model,
            LoraConfig(
                r=int(lora.get("r", 16)),
                lora_alpha=int(lora.get("alpha", 32)),
                lora_dropout=float(lora.get("dropout", 0.0)),
                target_modules=lora.get("target_modules") or "all-linear",
                task_type="CAUSAL_LM",
            ),
        )
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False

    cuda = torch.cuda.is_available()
    ckpt_dir = out / "checkpoints"
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=settings.per_device_batch,
        gradient_accumulation_steps=accum,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=math.ceil(settings.warmup_ratio * plan.steps),
        weight_decay=settings.weight_decay,
        optim=settings.optimizer,
        adam_beta2=settings.adam_beta2,
        max_grad_norm=settings.max_grad_norm,
        max_steps=plan.steps,
        num_train_epochs=1,
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        report_to=list(settings.report_to),
        seed=seed,
        data_seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        fsdp=settings.fsdp,
        fsdp_config=dict(settings.fsdp_config) or None,
        ddp_backend=None if cuda or world == 1 else "gloo",
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    trainer_cls = _trainer_class()
    collator = Collator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    # the probe: the loss on the first samples trained on, with the base model (measured when training starts
    # from step 0 and kept beside the checkpoints for a resumed run) and with the trained one
    probe_ids = probe_indices(plan, settings.probe_samples)
    probe = [_ListDataset(samples)[i] for i in probe_ids]
    probe_result: dict = {}
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=_ListDataset(samples),
        data_collator=collator,
        plan=plan,
        callbacks=[
            _probe_callback(probe, collator, ckpt_dir / "probe.json", probe_result),
            *_make_callbacks(Path(timing_path) if timing_path else None, plan, show_progress),
        ],
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)

    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        log.info("resuming from %s", last)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - t0
    probe_before, probe_after = probe_result.get("before"), probe_loss(trainer.model, probe, collator)
    if probe:
        log.info(
            "probe loss on %d trained samples: %.4f before, %.4f after training",
            len(probe_ids),
            probe_before,
            probe_after,
        )
    state = trainer.state
    rows = loss_rows(state.log_history, plan.steps_per_epoch)

    result = {
        "base_model": settings.base_model,
        "base_model_file": source.gguf_file,
        "base_model_sha256": file_sha256(source.gguf_path) if source.gguf_path else None,
        "seed": seed,
        "settings": settings.to_dict(),
        "config_hash": settings.hash(),
        **(record or {}),
        "template": params.template,
        "rendering": params.to_dict(),
        "mask_audit": audit.to_dict(),
        "batch": {
            "global_batch": settings.global_batch,
            "per_device_batch": settings.per_device_batch,
            "gradient_accumulation": accum,
            "world_size": world,
            "micro_batches": len(plan.micro_batches),
            "steps": plan.steps,
            "steps_per_epoch": plan.steps_per_epoch,
            "skipped_sample_epochs": plan.skipped,
            "tokens": plan.tokens,
            "padded_tokens": plan.padded_tokens,
            "padding_share": round(plan.padding_share, 6),
        },
        "precision": precision,
        "lora": settings.lora,
        "steps": state.global_step,
        "first_loss": rows[0]["loss"] if rows else None,
        "final_loss": rows[-1]["loss"] if rows else None,
        "probe": {
            "samples": len(probe_ids),
            "ids": [samples[i]["id"] for i in probe_ids],
            "loss_before": probe_before,
            "loss_after": probe_after,
        },
        "resumed_from_step": int(Path(last).name.split("-")[-1]) if last else None,
        "packages": package_versions(),
        "files": {"model": "model/", "loss": "loss.tsv", "figure": "loss.png", "rejected": "rejected.jsonl"},
    }

    model_dir = out / "model"
    if settings.fsdp and not settings.lora:
        trainer.save_model(str(model_dir))  # gathers the sharded weights; written by rank 0
    elif trainer.is_world_process_zero():
        _save_plain(trainer.model.merge_and_unload() if settings.lora else trainer.model, model_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(model_dir))
        result["model_sha256"] = weights_sha256(model_dir)
        write_loss_tsv(out / "loss.tsv", rows)
        write_json(
            out / "trainer_state.json",
            {
                "global_step": state.global_step,
                "max_steps": state.max_steps,
                "num_input_tokens_seen": int(state.num_input_tokens_seen),
                "log_history": _clean_history(state.log_history),
            },
        )
        plot_loss(rows, out / "loss.png", f"{settings.base_model} seed {seed}")
        if settings.export_gguf:
            from .gguf_export import export_f16

            if source.gguf_path is None:
                raise TrainError("export_gguf needs a GGUF base model (its metadata and tokenizer are copied)")
            export_f16(model_dir, source.gguf_path, out / "model.gguf")
            result["files"]["gguf"] = "model.gguf"
        # the record names what it describes; a resumed run gets the same record as an uninterrupted one
        record_out = dict(result)
        record_out.pop("resumed_from_step")
        write_json(out / "run.json", record_out)
        if not settings.keep_checkpoints and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
    tokens = int(state.num_input_tokens_seen)
    return {
        **result,
        "seconds": round(seconds, 3),
        "tokens_seen": tokens,
        "tokens_per_s": round(plan.tokens / seconds, 1) if seconds else None,
    }


def weights_sha256(model_dir: Path) -> str:
    """sha256 over the model's safetensors files, in name order (the fingerprint in run.json)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def _save_plain(model, model_dir: Path) -> None:
    """save_pretrained of a (possibly GGUF-loaded) model, with the end-of-turn token as generation EOS."""
    from .model import forget_quantization

    forget_quantization(model)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model.save_pretrained(str(model_dir), safe_serialization=True)
