"""The MT-Bench stage (paper.md §7-§8, A10): FastChat's MT-Bench answered by every fine-tuned model, the
untuned base model and any configured backend, judged by single-answer grading as FastChat's ``gen_judgment``
does it, with repeats, intervals, tables and figures.

Modules: :mod:`.data` (questions, judge prompts, reference answers with sha256), :mod:`.template` (the
run's chat template), :mod:`.answer`, :mod:`.judge`, :mod:`.score`, :mod:`.plot`, :mod:`.plan` (which models),
:mod:`.cli` (``instag mtbench <action>``). Importing this package loads no model library.
"""

from .cli import add_cli

__all__ = ["add_cli"]
