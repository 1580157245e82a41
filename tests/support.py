"""Helpers shared by the core tests: fake installed distributions, the CLI, the shared data."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def install_fake_distribution(site: Path, dist: str, plugin_name: str, module: str, source: str) -> None:
    """Write ``module.py`` and a ``.dist-info`` whose entry_points.txt registers it for tlbench."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tlbench]\n{plugin_name} = {module}\n")


def tlbench(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "tlbench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
