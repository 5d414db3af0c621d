"""``python -m hotline_hw``: list the named configurations with their derived widths."""

from .config import CONFIGS

for name, cfg in CONFIGS.items():
    print(f"{name:8s} {cfg.describe()}")
