"""Fixtures for the built-in dataset plugin's tests: specs, shared data, image files."""

from __future__ import annotations

from pathlib import Path

import pytest

import tlbench_datasets

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def specs():
    """name -> DatasetSpec, straight from the plugin's hook."""
    return {spec.name: spec for spec in tlbench_datasets.tlbench_register_datasets()}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is not available")
    return SHARED_DATA


@pytest.fixture
def write_image():
    """write_image(path, color=(r, g, b), size=(w, h), mode="RGB", fmt=None) -> path."""
    from PIL import Image

    def write(path: Path, color=(200, 30, 30), size=(24, 16), mode="RGB", fmt=None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).convert(mode).save(path, format=fmt)
        return path

    return write


@pytest.fixture
def class_tree(tmp_path, write_image):
    """tree({"cat": 5, "dog": 3}, root="name") -> a root/<class>/<i>.png folder."""

    def tree(counts: dict[str, int], root: str = "data") -> Path:
        base = tmp_path / root
        for k, (name, count) in enumerate(counts.items()):
            for i in range(count):
                write_image(base / name / f"{i}.png", color=(40 * k % 256, 10 * i % 256, 90))
        return base

    return tree



@pytest.fixture(autouse=True)
def tfds_download_server_unreachable(monkeypatch):
    """As on CI: tfds data that is not prepared cannot be downloaded (connection refused)."""
    from tlbench_datasets import tfds_source

    monkeypatch.setattr(tfds_source, "PROBE_URL", "http://127.0.0.1:9/")
