"""Registries of datasets, backbones and strategies collected from plugin hooks."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tlbench.plugin.manager import PluginManager, get_plugin_manager
from tlbench.plugin.specs import BackboneSpec, DatasetSpec, EngineSpec, PluginError, StrategySpec, quote

if TYPE_CHECKING:
    from tlbench.plugin.engine import Engine

T = TypeVar("T", DatasetSpec, BackboneSpec, StrategySpec, EngineSpec)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*(/[A-Za-z0-9][A-Za-z0-9_.+-]*)*$")
KINDS = {"datasets": DatasetSpec, "backbones": BackboneSpec, "strategies": StrategySpec, "engines": EngineSpec}
SINGULAR = {"datasets": "dataset", "backbones": "backbone", "strategies": "strategy", "engines": "engine"}


def suggestions(name: str, names: Iterable[object]) -> list[str]:
    """Up to three of ``names`` near ``name``: a typo, or the same last part after '/'."""
    names = sorted(map(str, names))
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
    tail = str(name).rsplit("/", 1)[-1].lower()
    close += [n for n in names if n.rsplit("/", 1)[-1].lower() == tail and n not in close]
    return close[:3]


class UnknownName(PluginError, KeyError):
    """A name no plugin registered; the message carries suggestions."""

    def __str__(self) -> str:  # KeyError would quote the message
        message: str = self.args[0]
        return message


@dataclass(frozen=True)
class Registered(Generic[T]):
    spec: T
    provider: str  # "plugin (distribution version)"


class Registry(Generic[T]):
    """Specs of one kind by name; duplicate names are errors naming both providers."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Registered[T]] = {}

    def add(self, spec: T, provider: str) -> None:
        expected = KINDS[self.kind]
        if not isinstance(spec, expected):
            raise PluginError(
                f"plugin {provider} returned {type(spec).__name__} from "
                f"tlbench_register_{self.kind}; expected {expected.__name__}"
            )
        if not NAME_PATTERN.match(spec.name):
            raise PluginError(
                f"plugin {provider} registers {SINGULAR[self.kind]} name {spec.name!r}: names use "
                "letters, digits, '_', '.', '+', '-' and '/' between parts"
            )
        if spec.name in self._items:
            first = self._items[spec.name].provider
            raise PluginError(
                f"{SINGULAR[self.kind]} {spec.name!r} is registered twice: by {first} and by "
                f"{provider}; uninstall one or disable it with TLBENCH_DISABLE_PLUGINS"
            )
        self._items[spec.name] = Registered(spec, provider)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return (item.spec for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        try:
            return self._items[name].spec
        except KeyError:
            raise UnknownName(self.unknown_message(name)) from None

    def provider(self, name: str) -> str:
        return self._items[name].provider

    def count_by(self, provider: str) -> int:
        return sum(1 for item in self._items.values() if item.provider == provider)

    def suggestions(self, name: str) -> list[str]:
        return suggestions(name, self.names())

    def unknown_message(self, name: str) -> str:
        hint = self.suggestions(name)
        did_you_mean = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
        return (
            f"unknown {SINGULAR[self.kind]} {quote(name)}{did_you_mean} "
            f"(`tlbench list {self.kind}` shows all {len(self)})"
        )

    def select(self, pattern: str = "*") -> list[T]:
        """Specs whose names match a shell-style wildcard pattern, sorted by name."""
        return [self._items[n].spec for n in self.names() if fnmatch.fnmatchcase(n, pattern)]


@dataclass
class Registries:
    datasets: Registry[DatasetSpec]
    backbones: Registry[BackboneSpec]
    strategies: Registry[StrategySpec]
    engines: Registry[EngineSpec]
    plugin_manager: PluginManager
    loaded_engines: dict[str, Engine[Any]] = field(default_factory=dict, repr=False)
    engine_settings: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # what configure() set

    def of(self, kind: str) -> Registry[Any]:
        registry: Registry[Any] = getattr(self, kind)
        return registry

    def engine_for(self, framework: str, threads: int | None = None) -> Engine[Any]:
        """The engine of ``framework``, loaded and configured (``threads`` intra-op threads, default
        :func:`tlbench.plugin.engine.intra_op_threads`; deterministic kernels) once."""
        loaded = self.loaded_engines
        if framework not in loaded:
            if framework not in self.engines:
                raise PluginError(f"no engine for framework {framework!r} is installed "
                                  f"(engines: {', '.join(self.engines.names()) or 'none'}); install the plugin "
                                  "that provides it, e.g. `pip install tlbench[timm]` for torch")
            from tlbench.plugin.engine import intra_op_threads

            engine = self.engines.get(framework).load()
            self.engine_settings[framework] = engine.configure(threads or intra_op_threads())
            loaded[framework] = engine
        return loaded[framework]


def collect(pm: PluginManager | None = None) -> Registries:
    """Call every register hook, validate what comes back and build the registries."""
    pm = pm or get_plugin_manager()
    registries: dict[str, Registry[Any]] = {}
    for kind in KINDS:
        registry: Registry[Any] = Registry(kind)
        hook = getattr(pm.hook, f"tlbench_register_{kind}")
        for impl in reversed(hook.get_hookimpls()):  # registration order
            provider = pm.describe(impl.plugin)
            for spec in impl.function() or ():
                registry.add(spec, provider)
        registries[kind] = registry
    return Registries(datasets=registries["datasets"], backbones=registries["backbones"],
                      strategies=registries["strategies"], engines=registries["engines"], plugin_manager=pm)
