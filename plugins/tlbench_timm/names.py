"""timm model names, catalogued in model_names.json so listing backbones needs neither torch nor timm.

Regenerate after upgrading timm: ``python -m tlbench_timm.names``.
"""

from __future__ import annotations

from pathlib import Path

from tlbench.plugin.catalogue import Catalogue

NAMES = Catalogue(Path(__file__).with_name("model_names.json"), "timm")


def cached_model_names(pretrained: bool = False) -> list[str]:
    """Sorted timm model names; with ``pretrained`` only those timm has pretrained tags for."""
    return [name for name, tags in NAMES.models.items() if tags or not pretrained]


def write_model_names() -> dict:
    """Record the installed timm's model names and their pretrained tags."""
    import timm

    tags: dict[str, list[str]] = {name: [] for name in timm.list_models()}
    for full_name in timm.list_models(pretrained=True):
        architecture, _, tag = full_name.partition(".")
        tags.setdefault(architecture, []).append(tag)
    return NAMES.write(tags)


if __name__ == "__main__":
    written = write_model_names()
    print(f"{len(written['models'])} timm {written['version']} model names -> {NAMES.path}")
