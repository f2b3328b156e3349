"""Where grpolab keeps things: one environment variable, ``GRPOLAB_HOME``, for the cache root."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root: ``$GRPOLAB_HOME``, else ``$XDG_CACHE_HOME/grpolab``, else ``~/.cache/grpolab``."""
    if os.environ.get("GRPOLAB_HOME"):
        return Path(os.environ["GRPOLAB_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "grpolab"


def models_dir() -> Path:
    return home() / "models"
