"""Every kind of config schema violation stops the run and names the key; a missing data file fails before any job.

The violations are generated from ``schemas/config.schema.yaml`` itself, so every section a stage adds is
covered as soon as it is in the schema: an unknown key in every closed object (``additionalProperties:
false``), a wrong type and an out-of-range value for every typed leaf, a value outside every ``enum``, every
``required`` key removed, and a dataset name that breaks the name pattern. Each is checked in process with
Snakemake's own ``validate`` (what ``rules/common.smk`` runs); two are also run end to end through
``python -m snakemake`` to show that the run stops before any job and creates no ``results/``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

snakemake_utils = pytest.importorskip("snakemake.utils", reason="snakemake is not installed (extra 'workflow')")
from snakemake.common.configfile import _load_configfile  # noqa: E402
from snakemake.exceptions import WorkflowError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "schemas" / "config.schema.yaml"
DATA = (REPO.parent / "shared" / "data").resolve()
UNKNOWN = "zz_unknown_key"


def base_config() -> dict:
    cfg = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())
    cfg["data_root"] = str(DATA)
    return cfg


_parsed_schemas: dict[str, dict] = {}


def _load_schema_once(source, filetype="Config"):
    """Snakemake's own schema loader, run once per file: its pure-Python YAML parse of the schema took 0.1 s of
    each of the ~380 checks here. validate() changes the dict it gets ($id), so every call gets a copy."""
    if not isinstance(source, (str, Path)):
        return _load_configfile(source, filetype)
    key = str(Path(source).resolve())
    if key not in _parsed_schemas:
        _parsed_schemas[key] = _load_configfile(source, filetype)
    return copy.deepcopy(_parsed_schemas[key])


def validate(cfg: dict) -> None:
    """Snakemake's own validate (what rules/common.smk runs), the schema file parsed once per session."""
    with mock.patch.object(snakemake_utils, "_load_configfile", _load_schema_once):
        snakemake_utils.validate(cfg, str(SCHEMA))


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        return {**_resolve(node, root), **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def walk(schema: dict, root: dict, path: tuple = ()):
    """Yield ``(path, subschema)`` for every node; ``"*"`` stands for any key of a map (``additionalProperties``)."""
    schema = _resolve(schema, root)
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, root, (*path, key))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from walk(extra, root, (*path, "*"))


def concrete(cfg: dict, path: tuple) -> tuple | None:
    """Replace each ``"*"`` with a key present in ``cfg`` at that level; None when the parent is not in the config."""
    out, node = [], cfg
    for i, part in enumerate(path):
        if not isinstance(node, dict):
            return None
        if part == "*":
            if not node:
                return None
            part = "default" if "default" in node else sorted(node)[0]
        out.append(part)
        if i < len(path) - 1:
            if part not in node:
                return None
            node = node[part]
    return tuple(out)


def get_parent(cfg: dict, path: tuple) -> dict:
    node = cfg
    for part in path[:-1]:
        node = node[part]
    return node


def _types(schema: dict) -> list[str]:
    t = schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def mutations():
    """(id, path, mutate(cfg), texts the error must contain) for every violation the schema can express."""
    schema = yaml.safe_load(SCHEMA.read_text())
    defaulted = base_config()
    validate(defaulted)  # fills in defaults, so every section with `default: {}` is there to mutate
    out = []
    for path, sub in walk(schema, schema):
        p = concrete(defaulted, path) if path else ()
        if p is None:  # its parent is not in the config (an optional object without a default)
            continue
        where = [f"['{k}']" for k in p]
        name = ".".join(p) or "<top>"
        types = _types(sub)
        if "object" in types and sub.get("additionalProperties") is False:
            out.append((f"unknown-key:{name}", (*p, UNKNOWN), 1, [UNKNOWN]))
        if not p:
            continue
        if "enum" in sub:
            out.append((f"enum:{name}", p, "zz_not_in_enum", ["zz_not_in_enum", *where]))
        if types and "string" not in types:
            out.append((f"type:{name}", p, "zz_wrong_type", ["zz_wrong_type", *where]))
        elif types == ["string"]:
            out.append((f"type:{name}", p, [12345], ["12345", *where]))
        if ("integer" in types or "number" in types) and "minimum" in sub:
            low = sub["minimum"] - 1 if "integer" in types else sub["minimum"] - 0.5
            out.append((f"minimum:{name}", p, low, where))
        if ("integer" in types or "number" in types) and "maximum" in sub:
            out.append((f"maximum:{name}", p, sub["maximum"] + 1, where))
        if "object" in types and sub.get("minProperties", 0) > 0:
            out.append((f"min-properties:{name}", p, {}, where))
        for req in sub.get("required", []):
            out.append((f"required:{name}.{req}", (*p, req), _DELETE, [f"'{req}' is a required property", *where]))
        if "pattern" in (sub.get("propertyNames") or {}):
            example = next(iter(get_parent(defaulted, (*p, "x")).values()), {})
            out.append((f"name-pattern:{name}", (*p, "bad-name!"), copy.deepcopy(example), ["bad-name!"]))
    unique = {}
    for m in out:  # a map's "*" and its named "default" entry can give the same case
        unique.setdefault(m[0], m)
    return list(unique.values())


_DELETE = object()
MUTATIONS = mutations()


def apply(cfg: dict, path: tuple, value) -> dict:
    node = cfg
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is _DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return cfg


def test_shipped_configs_are_valid():
    for name in ["config.yaml", "configs/test.yaml", "configs/paper.yaml"]:
        path = REPO / name
        if not path.exists():
            continue
        validate(yaml.safe_load(path.read_text()))


def test_the_schema_yields_every_kind_of_violation():
    kinds = {m[0].split(":")[0] for m in MUTATIONS}
    assert {"unknown-key", "type", "enum", "required", "minimum", "name-pattern", "min-properties"} <= kinds, kinds
    # unknown keys are caught at the top level and in nested objects (ingest, a dataset, its fields)
    unknown = {m[0] for m in MUTATIONS if m[0].startswith("unknown-key:")}
    assert {"unknown-key:<top>", "unknown-key:ingest"} <= unknown
    assert any(u.startswith("unknown-key:datasets.") for u in unknown)


@pytest.mark.parametrize(("path", "value", "texts"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_violation_names_the_key(path, value, texts):
    cfg = apply(base_config(), path, value)
    with pytest.raises(WorkflowError) as info:
        validate(cfg)
    message = str(info.value)
    for text in texts:
        assert text in message, f"{text!r} not in the error:\n{message}"


# ---------------------------------------------------------------------------------------- end to end


def run_snakemake(tmp_path: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(cfg_path),
        "--cores",
        "1",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("mutate", "texts"),
    [
        pytest.param(lambda c: c.update({"datsets": {}}), ["datsets", "Additional properties"], id="misspelt-top-key"),
        pytest.param(
            lambda c: c["datasets"]["alpaca"].update({"path": "no-such-file.json"}),
            ["datasets.alpaca.path", "no-such-file.json"],
            id="missing-data-file",
        ),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, mutate, texts):
    cfg = base_config()
    mutate(cfg)
    # a real run (tests/workflow/test_dag.py covers -n), so that "no results/ created" means something
    proc = run_snakemake(tmp_path, cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for text in texts:
        assert text in out, f"{text!r} not in snakemake's output:\n{out[-3000:]}"
    assert not (tmp_path / "results").exists(), "a job ran (results/ was created) despite the bad config"
