"""The plugin manager: hook specs, entry-point discovery, blocking, pending-hook checks."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from functools import cache

import pluggy

from tlbench.plugin import hookspecs

DISABLE_ENV = "TLBENCH_DISABLE_PLUGINS"
log = logging.getLogger(__name__)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from and which ones failed to import."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)
        self.failed: dict[str, str] = {}  # plugin name -> error

    def load_entry_points(self) -> None:
        """Register every ``tlbench`` entry point not blocked; a broken one is reported, not fatal."""
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != hookspecs.PROJECT or self.is_blocked(ep.name) or self.has_plugin(ep.name) \
                        or ep.name in self.failed:
                    continue
                try:
                    plugin = ep.load()
                except Exception as exc:
                    self.failed[ep.name] = f"{type(exc).__name__}: {exc}"
                    log.warning("plugin %r (%s) failed to load: %s", ep.name, dist.metadata["name"], exc)
                    continue
                self.register(plugin, name=ep.name)
                self.distributions[ep.name] = (dist.metadata["name"], dist.version)

    def describe(self, plugin: object) -> str:
        """'name (distribution version)' for messages, or the plugin name alone."""
        name = self.get_name(plugin) or repr(plugin)
        dist = self.distributions.get(name)
        return f"{name} ({dist[0]} {dist[1]})" if dist else name


def get_plugin_manager(load_entry_points: bool = True) -> PluginManager:
    """A fresh plugin manager with every installed ``tlbench`` plugin not disabled.

    ``TLBENCH_DISABLE_PLUGINS=name,other`` blocks entry points by name. A misspelled hook
    (``tlbench_register_dataset``) fails here, through ``check_pending``.
    """
    pm = PluginManager()
    for name in disabled_plugins():
        pm.set_blocked(name)
    if load_entry_points:
        pm.load_entry_points()
    pm.check_pending()
    return pm


def disabled_plugins() -> list[str]:
    return [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]


@cache
def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, None if it is not installed (read once
    per process)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def tlbench_version() -> str:
    return package_version("tlbench") or "0+unknown"
