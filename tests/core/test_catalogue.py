"""A catalogue is trusted only for the package version that wrote it."""

from __future__ import annotations

import json
from importlib.metadata import version

from tlbench.plugin.catalogue import Catalogue, block_rows, catalogued_blocks
from tlbench.plugin.specs import Block

CATALOGUED = (Block("stem", 10), Block("head", 5))
BUILT = (Block("stem", 11), Block("body", 7))


def build(name: str) -> tuple[Block, ...]:
    return BUILT


def test_entries_written_for_the_installed_version_are_used(tmp_path):
    catalogue = Catalogue(tmp_path / "blocks.json", "pluggy")
    written = catalogue.write({"net": block_rows(CATALOGUED)})
    assert written["version"] == version("pluggy")
    assert catalogued_blocks(catalogue, "net", build) == CATALOGUED
    assert catalogued_blocks(catalogue, "other", build) == BUILT  # not in the file: built


def test_a_file_written_for_another_version_is_not_trusted(tmp_path):
    path = tmp_path / "blocks.json"
    Catalogue(path, "pluggy").write({"net": block_rows(CATALOGUED)})
    recorded = json.loads(path.read_text())
    path.write_text(json.dumps({**recorded, "version": "0.0.1"}))
    stale = Catalogue(path, "pluggy")
    assert stale.models == {"net": block_rows(CATALOGUED)}  # names stay listable
    assert catalogued_blocks(stale, "net", build) == BUILT
