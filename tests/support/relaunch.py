"""Shared check for the training commands that relaunch themselves under torchrun (finetune, instagger)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path


def check_torchrun_relaunch(monkeypatch, parser, argv: list[str], out: Path, train, logger):
    """Parse ``argv`` (with ``--nproc 2``) and run its command with torchrun's launch replaced. Checks that one
    launch of 2 processes happens, that the child's command line drops ``--nproc`` and parses back into the same
    ``train()`` arguments (``nproc`` 1), and that the command returns the run's summary. Returns (args, child)."""
    from instag import finetune

    args = parser.parse_args(argv)
    launched = []

    def fake_launch(child, nproc):
        launched.append((child, nproc))
        out.mkdir()
        (out / "run.json").write_text(json.dumps({"steps": 3, "final_loss": 1.5}))
        return 0

    monkeypatch.setattr(finetune, "launch", fake_launch)
    monkeypatch.delenv("INSTAG_LAUNCHED", raising=False)
    monkeypatch.setattr(logger, "isEnabledFor", lambda level: True)
    assert args.func(args) == {"processes": 2, "steps": 3, "final_loss": 1.5}
    [(child, nproc)] = launched
    assert nproc == 2 and child[0] == "-v" and "--nproc" not in child
    again = parser.parse_args(child)
    for name in inspect.signature(train).parameters:
        assert getattr(again, name) == (1 if name == "nproc" else getattr(args, name)), name
    return args, child
