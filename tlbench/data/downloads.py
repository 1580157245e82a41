"""Can a download be tried now? One bounded probe for every plugin, so offline runs fail fast.

Plugins that download (pretrained weights, tfds data) call :func:`download_blocker` before
they hand over to a client that would otherwise retry for minutes on a machine without
internet.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

OFFLINE_ENV = "TLBENCH_OFFLINE"
PROBE_SECONDS = 2.0
_YES = ("1", "true", "yes", "on")


def download_blocker(url: str, *, offline_envs: tuple[str, ...] = (), timeout: float = PROBE_SECONDS) -> str | None:
    """None when ``url``'s server answers a HEAD request within ``timeout`` s; else why not.

    ``TLBENCH_OFFLINE=1`` (or any variable named in ``offline_envs``, e.g. ``HF_HUB_OFFLINE``)
    answers without asking. Any HTTP status counts as an answer: servers refuse HEAD on
    folders and still serve files. The request is a real HTTP(S) request through any
    configured proxy, not a bare TCP connect (sandboxes accept connections they never answer),
    and runs in a daemon thread because DNS lookups ignore the timeout.
    """
    for name in (OFFLINE_ENV, *offline_envs):
        if os.environ.get(name, "").strip().lower() in _YES:
            return f"{name} is set"
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except (OSError, ValueError) as exc:  # URLError, timeouts, TLS errors
            outcome.append(f"unreachable ({getattr(exc, 'reason', exc)})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"
