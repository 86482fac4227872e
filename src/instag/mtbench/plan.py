"""Which models the MT-Bench stage answers with and judges, planned from the config (rules/mtbench_inputs.smk calls it).

A model key is its path under ``results/mtbench/{answers,judgments}/``:

    <ablation>/<variant>/seed<seed>   a fine-tuning run, results/finetune/<ablation>/<variant>/seed<seed>/
    base                              the untuned base model (``mtbench.base``), with its own chat template
    api/<name>                        any configured backend (``mtbench.models``: an API model, a vLLM server)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from ..errors import ConfigError

#: Defaults of the ``mtbench`` config section (the schema repeats them; a test keeps both equal).
DEFAULTS: dict = {
    "enabled": True,
    "data_dir": None,
    "check_sha256": True,
    "reference_set": "gpt-4",
    "questions_per_category": None,
    "categories": [],
    "cache_dir": "cache/llm",
    "answer": {
        "backend": {"backend": "embedded", "engine": "openvino", "precision": "f32"},
        "max_new_tokens": 1024,
        "template_mode": "auto",
        "seed": 0,
    },
    "base": {"backend": "embedded", "engine": "openvino", "precision": "f32"},
    "base_template": None,
    "models": {},
    "judge": {
        "backend": {"backend": "openai", "model": "gpt-4"},
        "demo": False,
        "constrained": False,
        "repeats": 3,
        "temperature": 0.0,
        "max_tokens": 2048,
        "max_retries": 2,
        "retry_temperature": 0.7,
        "prices": {},
        "spend_cap_usd": None,
    },
    "bootstrap": {"n": 1000, "seed": 0},
}


def with_defaults(section: dict | None) -> dict:
    """The section with every missing key filled from :data:`DEFAULTS` (nested mappings merged, backend
    specs taken whole)."""

    def merge(default, given, path):
        if (
            not isinstance(default, dict)
            or path in ("models", "judge.prices")
            or path.endswith("backend")
            or path == "base"
        ):
            return copy.deepcopy(default) if given is None and default is not None else given
        out = copy.deepcopy(default)
        for k, v in (given or {}).items():
            out[k] = merge(default.get(k), v, f"{path}.{k}" if path else k) if k in default else v
        return out

    return merge(DEFAULTS, section or {}, "")


@dataclass(frozen=True)
class Model:
    key: str
    kind: str  # finetuned | base | api
    backend: dict
    ablation: str | None = None
    variant: str | None = None
    seed: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> str | None:
        return f"results/finetune/{self.ablation}/{self.variant}/seed{self.seed}" if self.kind == "finetuned" else None


def plan_models(section: dict, finetune_runs: list[dict]) -> dict[str, Model]:
    """Model key -> :class:`Model`. ``finetune_runs``: ``[{"ablation", "variant", "seed"}, ...]`` (the
    fine-tuning stage's plan)."""
    s = with_defaults(section)
    out: dict[str, Model] = {}
    for run in finetune_runs:
        m = Model(
            key=f"{run['ablation']}/{run['variant']}/seed{run['seed']}",
            kind="finetuned",
            backend=dict(s["answer"]["backend"]),
            ablation=run["ablation"],
            variant=run["variant"],
            seed=int(run["seed"]),
        )
        out[m.key] = m
    if s["base"]:
        out["base"] = Model("base", "base", dict(s["base"]))
    for name, spec in (s["models"] or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"mtbench.models.{name}", "a model name may hold letters, digits, '.', '_' and '-' only")
        if not isinstance(spec, dict) or "backend" not in spec:
            raise ConfigError(f"mtbench.models.{name}", "a backend spec is a mapping with a 'backend' key")
        out[f"api/{name}"] = Model(f"api/{name}", "api", dict(spec))
    return out


def model_regex(models: dict[str, Model]) -> str:
    """A wildcard constraint matching exactly the planned keys."""
    return "|".join(re.escape(k) for k in sorted(models)) or "(?!)"
