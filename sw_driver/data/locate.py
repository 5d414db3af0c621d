"""Finding the real click-log samples, which live outside the project (no redistribution)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming a folder that holds ``criteo_kaggle_8k/`` and ``avazu_9k/``.
DATA_ENV_VAR = "HOTLINE_DATA"

# sw_driver/data/locate.py -> parents[2] is the repository root.
_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_roots() -> list[Path]:
    """The folders searched, in order: ``$HOTLINE_DATA`` (if set), ``<repo>/../shared/data``."""
    roots = []
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(_REPO_ROOT.parent / "shared" / "data")
    return roots


def find_shared_data(name: str) -> Path | None:
    """The folder ``name`` (e.g. ``"criteo_kaggle_8k"``) in the first root that has it, or None.

    None means the real data is absent here; callers fall back to synthetic data and say so
    (tests skip with a message naming the searched folders).
    """
    for root in shared_data_roots():
        candidate = root / name
        if candidate.is_dir():
            return candidate
    return None
