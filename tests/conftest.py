"""Shared fixtures: isolated cache, fake installed plugin distributions, the shared data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own feature cache; nothing is written to ~/.cache or ../shared."""
    cache = tmp_path_factory.mktemp("tlbench-cache")
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(cache))
    return cache


def install_fake_distribution(site: Path, dist: str, plugin_name: str, module: str, source: str) -> None:
    """Write ``module.py`` and a ``.dist-info`` whose entry_points.txt registers it for tlbench."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tlbench]\n{plugin_name} = {module}\n")


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """A directory on sys.path (and PYTHONPATH for subprocesses) for fake distributions."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return site


def tlbench(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "tlbench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture
def toy_plugin(fake_site):
    """The toy third-party plugin, installed as distribution ``tlbench-toy``."""
    from core.toy_plugin import TOY_PLUGIN

    install_fake_distribution(fake_site, "tlbench-toy", "toy", "tlbench_toy_plugin", TOY_PLUGIN)
    return fake_site
