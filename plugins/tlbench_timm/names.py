"""timm model names, cached in model_names.json so listing backbones needs neither torch nor timm.

Regenerate after upgrading timm: ``python -m tlbench_timm.names``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from tlbench.files import write_text

NAMES_FILE = Path(__file__).with_name("model_names.json")


def cached_model_names(pretrained: bool = False) -> list[str]:
    """Sorted timm model names; with ``pretrained`` only those timm has pretrained tags for."""
    models = _cached()["models"]
    return [name for name, tags in models.items() if tags or not pretrained]


def write_model_names(path: Path = NAMES_FILE) -> dict[str, Any]:
    """Write the installed timm's model names (and their pretrained tags) to ``path``."""
    import timm

    tags: dict[str, list[str]] = {name: [] for name in timm.list_models()}
    for full_name in timm.list_models(pretrained=True):
        architecture, _, tag = full_name.partition(".")
        tags.setdefault(architecture, []).append(tag)
    rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(tags[name])}" for name in sorted(tags))
    text = f'{{"timm_version": {json.dumps(timm.__version__)}, "models": {{\n{rows}\n}}}}\n'
    write_text(path, text)
    _cached.cache_clear()
    return json.loads(text)


@lru_cache(maxsize=1)
def _cached() -> dict[str, Any]:
    return json.loads(NAMES_FILE.read_text(encoding="utf-8"))


if __name__ == "__main__":
    written = write_model_names()
    print(f"{len(written['models'])} timm {written['timm_version']} model names -> {NAMES_FILE}")
