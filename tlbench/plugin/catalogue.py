"""Catalogues: facts about a framework's models (their names, their blocks) kept in a JSON file
beside the plugin, recorded for one version of the framework's package, so that listing
backbones, listing blocks and checking a grid's depths import no framework.

A plugin regenerates its catalogue with its own command after an upgrade. An entry the file
lacks, or a file written for another version than the one installed, is not trusted for
blocks: the plugin then builds the model (:meth:`Catalogue.current` returns None).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from tlbench.files import write_text
from tlbench.plugin.manager import package_version
from tlbench.plugin.specs import Block


class Catalogue:
    """One JSON file ``{"package": ..., "version": ..., "models": {name: entry}}``."""

    def __init__(self, path: Path, package: str) -> None:
        self.path = path
        self.package = package

    @cached_property
    def recorded(self) -> dict[str, Any]:
        """The file as written (read once per process)."""
        recorded: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return recorded

    @property
    def models(self) -> dict[str, Any]:
        """Every entry, whichever version of the package wrote the file."""
        models: dict[str, Any] = self.recorded["models"]
        return models

    def installed_version(self) -> str | None:
        return package_version(self.package)

    def current(self, name: str) -> Any | None:
        """``name``'s entry if the file holds it and was written for the installed package."""
        if self.recorded["version"] != self.installed_version():
            return None
        return self.models.get(name)

    def write(self, models: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the file with ``models`` (one line per model, for readable diffs) for the
        installed version of the package."""
        rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(models[name])}" for name in sorted(models))
        header = f'"package": {json.dumps(self.package)}, "version": {json.dumps(self.installed_version())}'
        write_text(self.path, f'{{{header}, "models": {{\n{rows}\n}}}}\n')
        self.__dict__.pop("recorded", None)
        return self.recorded


def catalogued_blocks(catalogue: Catalogue, name: str, build: Callable[[str], Iterable[Block]]) -> tuple[Block, ...]:
    """``name``'s blocks from a catalogue of ``[[block name, parameters], ...]`` entries, else built."""
    entry = catalogue.current(name)
    if entry is None:
        return tuple(build(name))
    return tuple(Block(block, params) for block, params in entry)


def block_rows(blocks: Iterable[Block]) -> list[list[Any]]:
    """Blocks as a catalogue entry."""
    return [[block.name, block.params] for block in blocks]
