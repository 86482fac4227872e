"""Which sample files a sampling config asks for: the variants of each ablation, planned from the config.

The workflow calls :func:`plan_variants` once (rules/sampling_inputs.smk; rules/finetune_inputs.smk reads the
same variants), so the variant list exists once. A variant's name is its file stem under
``results/sampling/<ablation>/`` and holds the one target its ablation steps, as a plain number (the rule passes
it on as an option):

    complexity  tags<avg tags per query>   e.g. tags4.5  (size and coverage fixed by the ablation)
    diversity   cov<coverage fraction>     e.g. cov0.45  (size and tags per query fixed)
    size        n<size>                    Algorithm 1 at N; `sampling.size` is always one of them
    random      n<size>                    uniform baseline at N
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

ABLATIONS = ("complexity", "diversity", "size", "random")
#: Name prefix of each ablation's variants (the rest of the name is the stepped value).
PREFIX = {"complexity": "tags", "diversity": "cov", "size": "n", "random": "n"}


@dataclass(frozen=True)
class Variant:
    """One sample file: its ablation, name and targets (coverage and complexity only for the sweeps)."""

    ablation: str
    value: str  # the stepped value as written in the name (the wildcard value)
    size: int
    coverage: float | None = None
    complexity: float | None = None

    @property
    def name(self) -> str:
        return PREFIX[self.ablation] + self.value


def levels(spec: dict, key: str) -> list[float]:
    """``steps`` evenly spaced values from ``min`` to ``max``, rounded to 4 decimals (``[min]`` for 1 step)."""
    n, lo, hi = spec["steps"], spec["min"], spec["max"]
    if n > 1 and hi < lo:
        raise ConfigError(key, f"max {hi} is below min {lo}")
    if n <= 1:
        return [lo] * n
    return [round(lo + i * (hi - lo) / (n - 1), 4) for i in range(n)]


def number(x: float) -> str:
    """A level as it appears in a file name: shortest form, no trailing zeros (5.0 -> '5', 0.45 -> '0.45')."""
    return f"{x:g}"


def plan_variants(section: dict) -> dict[str, list[Variant]]:
    """The variants of every ablation of a (validated, defaults filled) ``sampling`` config section."""
    ab = section["ablations"]
    c, d = ab["complexity"], ab["diversity"]
    plan = {
        "complexity": [
            Variant("complexity", number(k), c["size"], c["coverage"], k)
            for k in levels(c["levels"], "sampling.ablations.complexity.levels")
        ],
        "diversity": [
            Variant("diversity", number(v), d["size"], v, d["avg_tags"])
            for v in levels(d["levels"], "sampling.ablations.diversity.levels")
        ],
        "size": [Variant("size", str(n), n) for n in sorted(set(ab["size"]["sizes"]) | {section["size"]})],
        "random": [Variant("random", str(n), n) for n in sorted(set(ab["random"]["sizes"]))],
    }
    for ablation, variants in plan.items():
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"sampling.ablations.{ablation}.levels", "two levels give the same variant name")
    return plan


def main_sample(section: dict) -> Variant:
    """Algorithm 1's selection at N = ``sampling.size``: the TagLM training set."""
    return Variant("size", str(section["size"]), section["size"])
