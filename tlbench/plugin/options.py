"""Kinds of strategy options: how the grid checks a value, when a list sweeps, what it means.

A strategy declares them in ``StrategySpec.option_kinds``, e.g.
``{"blocks": BlockSelection(), "depth": BlockCount(), "head": Choice(HEADS)}``. The grid
validator then checks every strategy alike (block ranges against each backbone included),
and the strategy resolves the value with the same code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_FIRST_LAST = re.compile(r"^(first|last):(\d+)$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def expands(self, value: Any) -> bool:
        return isinstance(value, list)

    def problem(self, value: Any) -> str | None:
        if value in self.values:
            return None
        return f"must be one of {', '.join(self.values)}"


@dataclass(frozen=True)
class Flag:
    """true or false."""

    def expands(self, value: Any) -> bool:
        return isinstance(value, list)

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "must be true or false"


@dataclass(frozen=True)
class Number:
    """A number of at least ``minimum`` (above it when ``above``; an integer when ``integer``);
    None when ``optional``. ``only_with`` = (option, value): the grid refuses it beside any
    other value of that option."""

    minimum: float = 0
    integer: bool = False
    optional: bool = False
    above: bool = False
    only_with: tuple[str, Any] | None = None

    def expands(self, value: Any) -> bool:
        return isinstance(value, list)

    def problem(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        ok = _is_int(value) if self.integer else (isinstance(value, (int, float)) and not isinstance(value, bool))
        if ok and (value > self.minimum if self.above else value >= self.minimum):
            return None
        kind = "an integer" if self.integer else "a number"
        return f"must be {kind} {'>' if self.above else '>='} {self.minimum:g}" + (" or null" if self.optional else "")


@dataclass(frozen=True)
class BlockCount:
    """The last k blocks of the backbone: an integer k >= 0, or ``all``."""

    def expands(self, value: Any) -> bool:
        return isinstance(value, list)

    def problem(self, value: Any) -> str | None:
        if value == "all" or (_is_int(value) and value >= 0):
            return None
        return "must be a block count (int >= 0) or 'all'"

    def resolve(self, value: Any, names: Sequence[str]) -> tuple[int, ...]:
        """Block indices; raises ValueError when k is beyond the backbone."""
        count = len(names)
        if value == "all":
            return tuple(range(count))
        if value > count:
            raise ValueError(f"depth {value} is larger than the {count} blocks; use 0..{count} or 'all'")
        return tuple(range(count - value, count))


@dataclass(frozen=True)
class BlockSelection:
    """Any set of blocks: ``first:K``, ``last:K``, or a list of block indices (0 = the stem),
    block names and ``first:K``/``last:K`` items. A list is one selection; a list of lists
    sweeps several (``[[0], [7]]`` is two cells). ``replaces`` names an option (e.g. ``depth``)
    that it overrides, so a grid may not write both."""

    replaces: str | None = None

    def expands(self, value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, list) for v in value)

    def problem(self, value: Any) -> str | None:
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            return "an empty list selects no block; give indices, names, 'first:K' or 'last:K'"
        if not isinstance(value, list) and not (isinstance(value, str) and _FIRST_LAST.match(value)):
            return "must be 'first:K', 'last:K' or a list of block indices (0 = the stem) or names"
        bad = [item for item in items if not (_is_int(item) or isinstance(item, str))]
        if bad:
            return f"block {bad[0]!r} is neither an index nor a name"
        if any(_is_int(item) and item < 0 for item in items):
            return "block indices start at 0 (the stem)"
        return None

    def resolve(self, value: Any, names: Sequence[str]) -> tuple[int, ...]:
        """Sorted block indices; raises ValueError naming the valid range or the valid names."""
        count = len(names)
        chosen: set[int] = set()
        for item in value if isinstance(value, list) else [value]:
            match = _FIRST_LAST.match(item) if isinstance(item, str) else None
            if match:
                k = int(match.group(2))
                if not 1 <= k <= count:
                    raise ValueError(f"{item!r}: K must be in 1..{count} (the backbone has {count} blocks)")
                chosen.update(range(k) if match.group(1) == "first" else range(count - k, count))
            elif _is_int(item):
                if item >= count:
                    raise ValueError(f"block {item} is out of range: the backbone has {count} blocks, 0..{count - 1}")
                chosen.add(item)
            elif item in names:
                chosen.add(list(names).index(item))
            else:
                shown = ", ".join(names[:12]) + (", ..." if count > 12 else "")
                raise ValueError(f"no block named {item!r}; the blocks are {shown} (or indices 0..{count - 1})")
        return tuple(sorted(chosen))

    @staticmethod
    def needs_names(value: Any) -> bool:
        """Whether resolving ``value`` needs the block names, not only their count."""
        items = value if isinstance(value, list) else [value]
        return any(isinstance(item, str) and not _FIRST_LAST.match(item) for item in items)


@dataclass(frozen=True)
class PathOption:
    """A file or folder; relative paths resolve against the grid file's folder."""

    def expands(self, value: Any) -> bool:
        return isinstance(value, list)

    def problem(self, value: Any) -> str | None:
        return None if value is None or isinstance(value, str) else "must be a path (a string)"


BLOCK_KINDS = (BlockCount, BlockSelection)


def set_block_options(kinds: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The block options (``depth``, ``blocks``) that ``options`` sets, by name, with their
    kinds; a selection hides the option it replaces."""
    chosen = {k: kind for k, kind in kinds.items() if isinstance(kind, BLOCK_KINDS) and options.get(k) is not None}
    replaced = {getattr(kind, "replaces", None) for kind in chosen.values()}
    return {k: kind for k, kind in chosen.items() if k not in replaced}
