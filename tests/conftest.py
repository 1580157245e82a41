"""Shared fixtures: an isolated feature cache, fake installed plugin distributions."""

from __future__ import annotations

import os

import pytest

from support import install_fake_distribution
from tlbench.plugin.engine import THREADS_ENV, intra_op_threads


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores as intra-op threads (unless
    $TLBENCH_THREADS says otherwise): two workers of two threads on two cores oversubscribe,
    and the suite then takes longer than on one worker."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and not os.environ.get(THREADS_ENV, "").strip():
        os.environ[THREADS_ENV] = str(max(1, intra_op_threads() // workers))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """A feature cache for module- and session-scoped fixtures, which are set up before any
    test's own: they too write to a temporary folder, never to ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TLBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("tlbench-session-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own feature cache; nothing is written to ~/.cache or ../shared."""
    cache = tmp_path_factory.mktemp("tlbench-cache")
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """A directory on sys.path (and PYTHONPATH for subprocesses) for fake distributions."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return site


@pytest.fixture
def toy_plugin(fake_site):
    """The toy third-party plugin, installed as distribution ``tlbench-toy``."""
    from core.toy_plugin import TOY_PLUGIN

    install_fake_distribution(fake_site, "tlbench-toy", "toy", "tlbench_toy_plugin", TOY_PLUGIN)
    return fake_site
