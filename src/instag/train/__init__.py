"""Shared supervised fine-tuning code: FastChat's conversation template, an assistant-only label mask that
works for any fast tokenizer, a mask audit, length-grouped batches with a process-independent global batch,
one HF-Trainer-based training loop with checkpoints and resume, and an F16 GGUF repack.

Used by the ``finetune`` stage (TagLM) and by ``instagger``::

    from instag.train import TrainSettings, train_conversations
    summary = train_conversations(conversations, TrainSettings(...), out_dir, threads=2, seed=42)

Importing this package is cheap; torch and transformers are imported when training starts.
"""

from .settings import TrainSettings
from .template import DEFAULT_TEMPLATE, TemplateParams, generation_prompt, render, template_params


def train_conversations(*args, **kwargs):
    """See :func:`instag.train.trainer.train_conversations`."""
    from .trainer import train_conversations as _train

    return _train(*args, **kwargs)


__all__ = [
    "DEFAULT_TEMPLATE",
    "TemplateParams",
    "TrainSettings",
    "generation_prompt",
    "render",
    "template_params",
    "train_conversations",
]
