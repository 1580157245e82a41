"""Helpers shared by the core tests: fake installed distributions, the CLI, the shared data."""

from __future__ import annotations

import importlib.util
import re
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def install_fake_distribution(site: Path, dist: str, plugin_name: str, module: str, source: str) -> None:
    """Write ``module.py`` and a ``.dist-info`` whose entry_points.txt registers it for tlbench."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tlbench]\n{plugin_name} = {module}\n")


def load_script(relative: str) -> ModuleType:
    """A script of the repository (``benchmarks/x.py``, not a package module), imported as a module named after it;
    its folder is on ``sys.path``, as when it runs, so it imports its siblings."""
    folder = str((REPO / relative).parent)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_example(heading: str) -> str:
    """The first ``python`` code block of the README after ``heading``."""
    text = (REPO / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)


def tlbench(*args: str, cwd: Path | None = None, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, as a user would (``options``: more of subprocess.run's, e.g. ``env``)."""
    return subprocess.run([sys.executable, "-m", "tlbench.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, **options)


def limit_file_size(size: int) -> Callable[[], None]:
    """A ``preexec_fn``: a file cannot grow past ``size`` bytes (EFBIG), as on a full disk."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


# A child process's own peak resident set, in MiB, as an expression for a script to print. VmHWM
# starts afresh with the child's program; RUSAGE_SELF's ru_maxrss carries over the peak of the
# process it was forked from (a test worker of gigabytes), which would hide the child's own.
PEAK_MIB = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
