"""Grid files: YAML (or a dict) -> validated :class:`Grid` -> list of :class:`Cell`.

Validation collects every problem before reporting, each naming the file, the key path and
what is allowed, so one round of fixes is enough.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlbench.files import read_regular
from tlbench.grid.blocks import BlockRequest, backbone_blocks
from tlbench.grid.tuning import BOTH, SELECT
from tlbench.plugin.options import BLOCK_KINDS, BlockSelection, PathOption, set_block_options
from tlbench.plugin.registry import SINGULAR, Registries, Registry, suggestions
from tlbench.plugin.specs import SETTING_CHOICES, Cell, Entry, TrainSettings, Unprepared, quote, shorten

TOP_KEYS = ("name", "description", "datasets", "backbones", "strategies", "seeds", "tune_seeds", "train", "report")
REPORT_SETTINGS = ("small_per_class",)  # at most this many training images per class: a small target set
SECTIONS = ("datasets", "backbones", "strategies")
DATASET_COMMON_OPTIONS = {"train_size": "all"}
PATH_OPTIONS = {"root", "data_dir", "manual_dir", "cache_dir", "path", "weights"}
WEIGHT_KEYWORDS = {"pretrained", "imagenet", "none"}
MAX_IMAGE_SIZE = 4096
MAX_EPOCHS = 10_000
NULLABLE_KINDS = {"patience": int, "image_size": int, "timeout": float}  # settings whose default is None
LIMITS: dict[str, tuple[Callable[[Any], bool], str]] = {  # setting: (allowed, said as)
    "epochs": (lambda v: 0 <= v <= MAX_EPOCHS, f"from 0 to {MAX_EPOCHS:,} (a sanity bound on one cell's epochs)"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: v >= 0, ">= 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "patience": (lambda v: v >= 1, ">= 1"),
    "image_size": (lambda v: 1 <= v <= MAX_IMAGE_SIZE, f"from 1 to {MAX_IMAGE_SIZE} pixels"),
    "timeout": (lambda v: v > 0, "> 0 seconds"),
}
MAX_SEED = 2**32 - 1
MAX_GRID_BYTES = 2**20
MAX_YAML_VALUES = 100_000  # values in the document once every alias is written out
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class GridError(Exception):
    """The grid is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the grid:\n{lines}")


@dataclass(frozen=True)
class GridEntry:
    """One entry as written: label, plugin and options (list values still unexpanded)."""

    name: str
    plugin: str
    options: Mapping[str, Any]
    overrides: Mapping[str, Any]
    listed: tuple[str, ...] = ()  # keys of options/overrides whose list value expands
    written: tuple[str, ...] = ()  # keys as written in the grid
    shown: tuple[str, ...] = ()  # keys that tell this entry from others of the same name
    backbones: tuple[str, ...] = ()  # a strategy entry's `backbones:` (labels): it runs only on those
    tuned: tuple[str, ...] = ()  # keys of options/overrides under `tune:`: their lists are candidates

    def expand(self) -> list[Entry]:
        """One :class:`Entry` per combination of the list-valued options, then of the tuned values
        (the candidates of each series, in grid order)."""
        merged = {**self.options, **self.overrides}
        entries = []
        for values in itertools.product(*(merged[k] for k in self.listed)):
            for order, candidate in enumerate(itertools.product(*(merged[k] for k in self.tuned))):
                chosen = dict(zip(self.listed + self.tuned, values + candidate, strict=True))
                entries.append(
                    Entry(
                        name=self.name,
                        plugin=self.plugin,
                        options={k: chosen.get(k, v) for k, v in self.options.items()},
                        overrides={k: chosen.get(k, v) for k, v in self.overrides.items()},
                        shown=tuple(dict.fromkeys(self.shown + self.listed + self.tuned)),
                        backbones=self.backbones,
                        tuned=self.tuned,
                        order=order,
                    )
                )
        return entries


@dataclass(frozen=True)
class Grid:
    name: str
    source: str
    datasets: tuple[GridEntry, ...]
    backbones: tuple[GridEntry, ...]
    strategies: tuple[GridEntry, ...]
    seeds: tuple[int, ...] = (0,)
    tune_seeds: tuple[int, ...] = ()  # the seeds that pick each tuned series' candidate (none: `seeds` do)
    train: Mapping[str, Any] = field(default_factory=dict)
    report: Mapping[str, Any] = field(default_factory=dict)  # report settings, stored in env.json
    # (backbone label, strategy label) -> the first block a strategy's block option trains there
    first_trained: Mapping[tuple[str, str], int] = field(default_factory=dict)
    unprepared: tuple[str, ...] = ()  # with load_grid's allow_unprepared: the datasets to prepare first

    def cells(self) -> list[Cell]:
        """datasets x backbones x expanded strategies x seeds, in that nesting order; the
        candidates of a tuned series on ``tune_seeds`` (stage 1: :func:`tlbench.grid.tuning.evaluation_cells`
        derives the rest), or on ``seeds`` without them."""
        cells = []
        for dataset, backbone, strategy in itertools.product(
            _expand_all(self.datasets), _expand_all(self.backbones), _expand_all(self.strategies)
        ):
            if strategy.backbones and backbone.name not in strategy.backbones:
                continue
            settings = {**self.train, **dataset.overrides, **backbone.overrides, **strategy.overrides}
            stage = (SELECT if self.tune_seeds else BOTH) if strategy.tuned else None
            for seed in self.tune_seeds if stage == SELECT else self.seeds:
                cells.append(Cell(dataset, backbone, strategy, TrainSettings(**settings), seed, stage))
        return cells

    def in_run_order(self, cells: list[Cell]) -> list[Cell]:
        """The cells of each (dataset, backbone) together, those that train from an earlier block
        first; cells without a block option last, otherwise in grid order. Each later cell then
        extends the frozen prefix that an earlier one cached (depth 3 computes the prefix that
        depths 2 and 1 and the extractor continue) instead of running the body again."""
        groups: dict[tuple[str, str], list[Cell]] = {}
        for cell in cells:
            groups.setdefault((cell.dataset.label, cell.backbone.label), []).append(cell)
        unset = math.inf
        return [cell for group in groups.values() for cell in sorted(
            group, key=lambda c: self.first_trained.get((c.backbone.label, c.strategy.label), unset))]


def _expand_all(entries: Iterable[GridEntry]) -> list[Entry]:
    return [e for entry in entries for e in entry.expand()]


# ---------------------------------------------------------------- loading


def load_grid(source: str | os.PathLike[str] | Mapping[str, Any], registries: Registries,
              block_lookup: Callable[[list[BlockRequest]], list[Any]] | None = None,
              allow_unprepared: bool = False) -> Grid:
    """Read and validate a grid from a YAML path or a mapping; raise GridError if invalid.

    ``block_lookup`` answers backbones' block counts and names (an executor's worker, so that
    the caller need not import the frameworks); default: in this process. With
    ``allow_unprepared`` (a dry run), datasets whose data is only missing here
    (:class:`tlbench.plugin.specs.Unprepared`) land in ``Grid.unprepared`` instead of failing the grid.
    """
    if isinstance(source, Mapping):
        return _Validator("<grid>", Path.cwd(), registries, block_lookup, allow_unprepared).validate(dict(source))
    path = Path(source)
    data = read_yaml(path)
    return _Validator(str(path), path.resolve().parent, registries, block_lookup, allow_unprepared).validate(data)


def read_yaml(path: Path) -> dict[str, Any]:
    """The grid file's mapping; plain YAML only (no tags that build objects), bounded in size."""
    import yaml

    if not path.is_file():
        raise GridError(str(path), ["grid file not found (check the path given to --grid)"])
    if path.stat().st_size > MAX_GRID_BYTES:
        raise GridError(str(path), [f"the file is {path.stat().st_size} bytes; a grid file is at most "
                                    f"{MAX_GRID_BYTES} bytes (1 MiB)"])
    try:
        data = _safe_load(path, read_regular(path, MAX_GRID_BYTES).decode("utf-8"))  # whatever the locale
    except UnicodeDecodeError as exc:
        raise GridError(str(path), [f"not UTF-8 text (byte {exc.start}); save the grid file as UTF-8"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise GridError(str(path), [f"invalid YAML: {where}{problem}"]) from None
    except RecursionError:
        raise GridError(str(path), ["invalid YAML: nested too deeply"]) from None
    if not isinstance(data, dict):
        raise GridError(str(path), ["the grid must be a mapping with keys " + ", ".join(TOP_KEYS)])
    return data


def _safe_load(path: Path, text: str) -> Any:
    """``yaml.safe_load``, refusing an alias blow-up before any value is built."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_alias_blowup(path, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_alias_blowup(path: Path, root: Any) -> None:
    """Raise GridError when the document holds more than MAX_YAML_VALUES values, written out or
    repeated by aliases (``*name``: a "billion laughs" document), or an alias makes a value
    contain itself. Counted on the composed nodes, which aliases share, before any value is built."""
    sizes: dict[int, int] = {}
    parents: collections.Counter[int] = collections.Counter()

    def size(node: Any, active: set[int]) -> int:
        if id(node) not in sizes:
            if id(node) in active:
                raise GridError(str(path), [f"line {node.start_mark.line + 1}: an alias (*name) makes this "
                                            "value contain itself; write the value out"])
            active.add(id(node))
            children = [child for _, child in _children(node)]
            parents.update(id(child) for child in children)
            sizes[id(node)] = 1 + sum(size(child, active) for child in children)
            active.discard(id(node))
        return sizes[id(node)]

    if size(root, set()) <= MAX_YAML_VALUES:
        return
    where, node = [], root
    while parents[id(node)] < 2:  # down the largest branch, to the value an alias repeats
        label, child = max(_children(node), key=lambda pair: sizes[id(pair[1])])
        if sizes[id(child)] <= MAX_YAML_VALUES:
            break
        where.append(label)
        node = child
    field = shorten("".join(where).lstrip(".")) or "the grid"
    if parents[id(node)] < 2:  # no alias repeats it: the values are written out
        raise GridError(str(path), [f"{field}: holds more than {MAX_YAML_VALUES} values; a grid file holds at most "
                                    f"{MAX_YAML_VALUES} values in all (each seed, option value and key counts one): "
                                    "list fewer"])
    raise GridError(str(path), [f"{field}: holds more than {MAX_YAML_VALUES} values once its aliases (*name) "
                                "are expanded; a grid needs far fewer: write it out, or repeat it fewer times"])


def _children(node: Any) -> list[tuple[str, Any]]:
    """(key-path label, node) for each value under a YAML node, mapping keys included."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return [(f"[{i}]", child) for i, child in enumerate(node.value)]
    if not isinstance(node, yaml.MappingNode):
        return []
    values = [(f".{key.value}" if isinstance(key, yaml.ScalarNode) else ".<key>", value) for key, value in node.value]
    return values + [(".<key>", key) for key, _ in node.value]


class _Validator:
    def __init__(self, source: str, base: Path, registries: Registries,
                 block_lookup: Callable[[list[BlockRequest]], list[Any]] | None = None, allow_unprepared: bool = False):
        self.source = source
        self.base = base
        self.registries = registries
        self.block_lookup = block_lookup
        self.allow_unprepared = allow_unprepared
        self.problems: list[str] = []
        self.unprepared: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def validate(self, data: dict[str, Any]) -> Grid:
        for key in data:
            if key not in TOP_KEYS:
                self.problem(key, f"unknown key{_closest(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem("name", "required: a non-empty string naming the grid (default out dir results/<name>/)")
        elif "/" in name or "\\" in name or name.strip() in (".", ".."):
            self.problem("name", f"{quote(name)} is not a folder name: it names the default out dir "
                                 "results/<name>/, so it may not hold '/' or '\\' or be '.' or '..'")
        train = self.train(data.get("train", {}))
        sections = {s: self.section(s, data.get(s)) for s in SECTIONS}
        seeds = self.seeds(data.get("seeds", [0]))
        tune_seeds = self.tune_seeds(data, seeds)
        report = self.report(data.get("report", {}))
        labels = {b.name for b in sections["backbones"]}
        for i, strategy in enumerate(sections["strategies"]):
            for name in strategy.backbones:
                if name not in labels:
                    self.problem(f"strategies[{i}].backbones", f"{quote(name)} is not a backbone of this grid"
                                                               f"{_closest(name, labels)}; its backbones: {', '.join(sorted(labels))}")
        if not self.problems:
            self.check_engines(sections["backbones"])
            first_trained = self.check_blocks(sections["backbones"], sections["strategies"])
            self.check_datasets(sections["datasets"])
        if self.problems:
            raise GridError(self.source, self.problems)
        assert isinstance(name, str)  # else a problem was recorded above
        return Grid(name=name, source=self.source, seeds=seeds, tune_seeds=tune_seeds, train=train, report=report,
                    first_trained=first_trained, unprepared=tuple(self.unprepared), **sections)

    # -- sections

    def section(self, kind: str, raw: Any) -> tuple[GridEntry, ...]:
        if raw is None:
            self.problem(kind, f"required: a list of {kind} (names or mappings with `name`)")
            return ()
        if not isinstance(raw, list):
            self.problem(kind, f"must be a list, not {type(raw).__name__}")
            return ()
        if not raw:
            self.problem(kind, "empty list: name at least one")
            return ()
        entries: list[GridEntry]
        places: dict[str, list[int]]
        indices: list[int]
        entries, places, indices = [], {}, []
        for i, item in enumerate(raw):
            entry = self.entry(kind, f"{kind}[{i}]", item)
            if entry is None:
                continue
            if entry.name in places and kind != "strategies":
                self.problem(f"{kind}[{i}].name", f"{quote(entry.name)} appears twice; give one a distinct `name` and set `plugin`")
            places.setdefault(entry.name, []).append(i)
            entries.append(entry)
            indices.append(i)
        if kind != "strategies":
            return tuple(entries)
        entries = self.distinguished(kind, entries, places)
        self.distinct_series(entries, indices)
        return tuple(entries)

    def distinct_series(self, entries: list[GridEntry], places: list[int]) -> None:
        """A tuned entry's series (its label without the tuned keys) is no other entry's."""
        owner: dict[str, int] = {}
        for i, entry in zip(places, entries, strict=True):
            for label in dict.fromkeys(e.series_label for e in entry.expand()):
                first = owner.setdefault(label, i)
                if first != i and (entry.tuned or entries[places.index(first)].tuned):
                    self.problem(f"strategies[{i}]", f"its series {quote(label)} (the label without the tuned keys) is "
                                                     f"also that of strategies[{first}]; merge their `tune` candidates "
                                                     f"into one entry, or give one its own `name` (and `plugin: {entry.plugin}`)")

    def distinguished(self, kind: str, entries: list[GridEntry], places: dict[str, list[int]]) -> list[GridEntry]:
        """Entries of one strategy name, told apart by the written options whose values differ;
        an entry that repeats another exactly is refused."""
        by_name: dict[str, list[GridEntry]] = collections.defaultdict(list)
        for entry in entries:
            by_name[entry.name].append(entry)
        shown = {}
        for name, same in by_name.items():
            written = [{k: {**e.options, **e.overrides}[k] for k in e.written} for e in same]
            keys = {k for w in written for k in w if len({_canonical(v.get(k, _ABSENT)) for v in written}) > 1}
            seen: dict[tuple[str, str, tuple[str, ...]], int] = {}
            for entry, options, i in zip(same, written, places[name], strict=True):
                identity = (entry.plugin, _canonical(options), entry.tuned)
                if identity in seen:
                    self.problem(f"{kind}[{i}]", f"repeats {kind}[{seen[identity]}] exactly; remove one, or give "
                                                 "it other options")
                seen.setdefault(identity, i)
                shown[id(entry)] = tuple(k for k in entry.written if k in keys)
        return [dataclasses.replace(e, shown=shown[id(e)]) for e in entries]

    def entry(self, kind: str, where: str, item: Any) -> GridEntry | None:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            self.problem(where, f"must be a name or a mapping with `name`, not {type(item).__name__}")
            return None
        name = item.get("name")
        if not isinstance(name, str) or not name:
            self.problem(f"{where}.name", "required: a non-empty string")
            return None
        plugin = item.get("plugin", name)
        if not isinstance(plugin, str):
            self.problem(f"{where}.plugin", f"must be a registered {SINGULAR[kind]} name, not {quote(plugin)}")
            return None
        registry: Registry[Any] = self.registries.of(kind)
        if plugin not in registry:
            key = "plugin" if "plugin" in item else "name"
            self.problem(f"{where}.{key}", registry.unknown_message(plugin))
            return None
        spec = registry.get(plugin)
        allowed = dict(spec.options)
        if kind == "datasets":
            allowed.update(DATASET_COMMON_OPTIONS)
        kinds = getattr(spec, "option_kinds", {})
        options: dict[str, Any]
        overrides: dict[str, Any]
        listed: list[str]
        options, overrides, listed = {}, {}, []
        placed = {"options": options, "overrides": overrides}
        for key, value in item.items():
            if key in ("name", "plugin") or (kind == "strategies" and key in ("backbones", "tune")):
                continue
            path = f"{where}.{key}"
            expands = kinds[key].expands(value) if key in kinds else (
                isinstance(value, list) and not isinstance(allowed.get(key), list))
            if expands:
                listed.append(key)
                if not value:
                    self.problem(path, "empty list: give at least one value")
                if kind == "datasets" and key in PATH_OPTIONS:  # reports identify a dataset by its name
                    self.problem(path, "a list of paths would make one dataset of several; "
                                       "give each its own dataset entry with its own name")
            target, checked = self.values(kind, plugin, path, key, value if expands else [value], allowed, kinds)
            if target:
                placed[target][key] = checked if expands else checked[0]
        tuned = []
        for key, value in self.tune(where, item.get("tune")).items() if kind == "strategies" else ():
            if key in item:
                self.problem(f"{where}.tune.{key}", f"`{key}` is also set outside `tune`: give it in one place (under "
                                                    "`tune` its values are candidates, outside a value or a series)")
            target, checked = self.values(kind, plugin, f"{where}.tune.{key}", key, value, allowed, kinds)
            if target:
                placed[target][key] = checked
                tuned.append(key)
        given = {key: f"{where}.{key}" for key in item} | {key: f"{where}.tune.{key}" for key in tuned}
        for key, option_kind in kinds.items():
            replaced = getattr(option_kind, "replaces", None)
            if key in given and replaced in given:
                self.problem(given[key], f"`{key}` replaces `{replaced}`: give one of them, not both")
            needed = getattr(option_kind, "only_with", None)
            if key in given and needed is not None:
                other: Any = {**allowed, **options}.get(needed[0])
                if any(value != needed[1] for value in (other if needed[0] in listed + tuned else [other])):
                    self.problem(given[key], f"`{key}` applies only with `{needed[0]}: {needed[1]}`, "
                                             f"not with {needed[0]} {quote(other)}")
        return GridEntry(name=name, plugin=plugin, options={**allowed, **options}, overrides=overrides,
                         listed=tuple(listed), written=tuple(k for k in [*item, *tuned] if k in options or k in overrides),
                         backbones=self.only_backbones(where, item) if kind == "strategies" else (), tuned=tuple(tuned))

    def values(self, kind: str, plugin: str, path: str, key: str, values: list[Any], allowed: Mapping[str, Any],
               kinds: Mapping[str, Any]) -> tuple[str | None, list[Any]]:
        """``values`` of an entry's ``key`` checked: ("options" or "overrides" (a `train` setting),
        the checked values), or (None, values) for a key the entry does not take."""
        if key in allowed or key in kinds:
            return "options", [self.option(path, key, v, allowed.get(key), kinds.get(key)) for v in values]
        train_keys = TrainSettings.field_names()
        if key in train_keys and not (kind == "backbones" and key == "image_size"):
            return "overrides", [self.train_value(path, key, v) for v in values]
        options = sorted([*allowed, *(k for k in kinds if k not in allowed)])
        self.problem(path, f"unknown option for {SINGULAR[kind]} {quote(plugin)}{_closest(key, options + list(train_keys))}; "
                           f"allowed: {', '.join(options) or '(none)'} or a `train` setting")
        return None, values

    def tune(self, where: str, raw: Any) -> dict[str, list[Any]]:
        """A strategy entry's ``tune:``: each key's non-empty list of candidate values (unchecked)."""
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not raw:
            self.problem(f"{where}.tune", "must be a non-empty mapping from an option or a `train` setting to its "
                                          f"candidate values (e.g. `tune: {{lr: [0.01, 0.001]}}`), not {quote(raw)}")
            return {}
        for key, values in raw.items():
            if not isinstance(key, str):
                self.problem(f"{where}.tune", f"its keys name an option or a `train` setting, not {quote(key)}")
            elif not isinstance(values, list) or not values:
                self.problem(f"{where}.tune.{key}", f"must be a non-empty list of candidate values, not {quote(values)}")
            elif len({_canonical(v) for v in values}) < len(values):
                self.problem(f"{where}.tune.{key}", f"lists a value twice ({quote(values)}); list each candidate once")
        return {key: values for key, values in raw.items() if isinstance(key, str) and isinstance(values, list) and values}

    def only_backbones(self, where: str, item: Mapping[str, Any]) -> tuple[str, ...]:
        """A strategy entry's ``backbones:``: the backbone labels it pairs with (all when absent)."""
        chosen = item.get("backbones", [])
        if not isinstance(chosen, list) or not all(isinstance(b, str) for b in chosen):
            self.problem(f"{where}.backbones", f"must be a list of backbone names of this grid, not {quote(chosen)}")
            return ()
        return tuple(chosen)

    def option(self, where: str, key: str, value: Any, default: Any, kind: Any = None) -> Any:
        value = self.expand_value(key, value, kind)
        if kind is not None:
            problem = kind.problem(value)
            if problem:
                self.problem(where, f"{problem}, not {quote(value)}")
        elif key == "train_size":
            ok = value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or (
                isinstance(value, float) and 0 < value <= 1)
            if not ok:
                self.problem(where, f"must be 'all', a count per class (int >= 1) or a fraction in (0, 1], not {quote(value)}")
        elif key == "image_size":  # a backbone's own option, bounded as the training setting is
            self.train_value(where, key, value)
        elif default is not None and value is not None and not _same_type(value, default):
            self.problem(where, f"must be {type(default).__name__}, not {type(value).__name__} ({quote(value)})")
        return value

    def expand_value(self, key: str, value: Any, kind: Any = None) -> Any:
        if not isinstance(value, str):
            return value
        value = _ENV_VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)
        if (key in PATH_OPTIONS or isinstance(kind, PathOption)) and value.lower() not in WEIGHT_KEYWORDS:
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else (self.base / path).resolve())
        return value

    # -- train and seeds

    def train(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.problem("train", f"must be a mapping of training settings, not {type(raw).__name__}")
            return {}
        return {key: self.train_value(f"train.{key}", key, value) for key, value in raw.items()
                if self.known_train_key(key)}

    def known_train_key(self, key: str) -> bool:
        names = TrainSettings.field_names()
        if key not in names:
            self.problem(f"train.{key}", f"unknown training setting{_closest(key, names)}; allowed: {', '.join(names)}")
        return key in names

    def train_value(self, where: str, key: str, value: Any) -> Any:
        if isinstance(value, list):
            self.problem(where, "a list expands only inside a dataset, backbone or strategy entry; "
                                "move it there (e.g. `{name: finetune, lr: [0.01, 0.001]}`)")
            return value
        default = TrainSettings.__dataclass_fields__[key].default
        kind = NULLABLE_KINDS.get(key, type(default))
        if key in SETTING_CHOICES:
            if value not in SETTING_CHOICES[key]:
                self.problem(where, f"must be one of {', '.join(SETTING_CHOICES[key])}, not {quote(value)}")
        elif value is None and default is None:
            pass
        elif not _is_kind(value, kind):
            self.problem(where, f"must be {kind.__name__}{' or null' if default is None else ''}, "
                                f"not {type(value).__name__} ({quote(value)})")
        elif isinstance(value, float) and not math.isfinite(value):
            self.problem(where, f"must be a finite number, not {value}")
        elif key in LIMITS and not LIMITS[key][0](value):
            self.problem(where, f"must be {LIMITS[key][1]}, not {value}")
        return value

    def seeds(self, raw: Any, where: str = "seeds") -> tuple[int, ...]:
        raw = [raw] if _is_kind(raw, int) else raw
        if not isinstance(raw, list) or not raw or not all(_is_kind(s, int) and 0 <= s <= MAX_SEED for s in raw):
            self.problem(where, f"must be a non-empty list of integers from 0 to {MAX_SEED}, not {quote(raw)}")
            return (0,)
        twice = sorted(s for s, count in collections.Counter(raw).items() if count > 1)
        if twice:
            self.problem(where, f"{', '.join(map(str, twice))} appear(s) more than once; each seed runs once, "
                                "so list each only once")
        return tuple(raw)

    def tune_seeds(self, data: Mapping[str, Any], seeds: tuple[int, ...]) -> tuple[int, ...]:
        """``tune_seeds``: fresh seeds, none of ``seeds``, for the candidates of the `tune` entries."""
        if "tune_seeds" not in data:
            return ()
        known = len(self.problems)
        tune_seeds = self.seeds(data["tune_seeds"], "tune_seeds")
        shared = sorted(set(tune_seeds) & set(seeds))
        if shared and len(self.problems) == known:
            self.problem("tune_seeds", f"{', '.join(map(str, shared))} also in `seeds`: the candidates are picked on "
                                       "tune_seeds and the pick is tested on seeds, so no seed may be in both; use other seeds")
        strategies = data.get("strategies")
        if not any(isinstance(item, dict) and "tune" in item for item in (strategies if isinstance(strategies, list) else ())):
            self.problem("tune_seeds", "no strategy entry has `tune:`; add one (e.g. `{name: finetune, tune: {lr: [0.01, "
                                       "0.001]}}`) or remove tune_seeds")
        return tune_seeds

    def report(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.problem("report", f"must be a mapping of report settings ({', '.join(REPORT_SETTINGS)}), "
                                   f"not {type(raw).__name__}")
            return {}
        for key, value in raw.items():
            if key not in REPORT_SETTINGS:
                self.problem(f"report.{key}", f"unknown report setting{_closest(key, REPORT_SETTINGS)}; allowed: "
                                              f"{', '.join(REPORT_SETTINGS)}")
            elif not (_is_kind(value, int) and value >= 1):
                self.problem(f"report.{key}", f"must be an int >= 1, not {quote(value)}")
        return dict(raw)

    # -- checks that need the plugins

    def check_blocks(self, backbones: tuple[GridEntry, ...],
                     strategies: tuple[GridEntry, ...]) -> dict[tuple[str, str], int]:
        """Every block selection and depth of every strategy against every backbone's blocks,
        looked up where the frameworks are (a worker; here when no lookup is given). Returns
        the first block each (backbone, strategy) label pair trains, for the run order."""
        choices = [(i, key, kind, value) for i, s in enumerate(strategies)
                   for key, kind in self.registries.strategies.get(s.plugin).option_kinds.items()
                   if isinstance(kind, BLOCK_KINDS) and s.options.get(key) is not None
                   for value in (s.options[key] if key in s.listed + s.tuned else [s.options[key]])]
        if not choices:
            return {}
        by_name = any(isinstance(kind, BlockSelection) and kind.needs_names(v) for _, _, kind, v in choices)
        asked = [(backbone, entry, BlockRequest(backbone.plugin, dict(entry.options), by_name))
                 for backbone in backbones if self.registries.backbones.get(backbone.plugin).block_count is not None
                 for entry in backbone.expand()]
        lookup = self.block_lookup or (lambda requests: backbone_blocks(self.registries, requests))
        first_trained = {}
        for (backbone, entry, _), answer in zip(asked, lookup([request for _, _, request in asked]), strict=True):
            if isinstance(answer, str):
                self.problem(f"backbones[{backbone.name}]", answer)
                continue
            for i, key, kind, value in choices:
                if isinstance(answer, int) and BlockSelection.needs_names(value):
                    continue  # named blocks, but the plugin gives only a count: checked when the cell runs
                try:
                    kind.resolve(value, answer if isinstance(answer, list) else [""] * answer)
                except ValueError as exc:
                    self.problem(f"strategies[{i}].{key}", f"{exc} (backbone {quote(backbone.name)})")
            if not self.problems:
                first_trained.update(self.first_blocks(strategies, entry.label, answer))
        return first_trained

    def first_blocks(self, strategies: tuple[GridEntry, ...], backbone_label: str,
                     answer: list[str] | int) -> dict[tuple[str, str], int]:
        """(backbone label, strategy label) -> the first block that each strategy cell's block
        option trains on this backbone (the block count when it trains none)."""
        names = answer if isinstance(answer, list) else [""] * answer
        first = {}
        for strategy in strategies:
            kinds = self.registries.strategies.get(strategy.plugin).option_kinds
            for entry in strategy.expand():
                chosen = [kind.resolve(entry.options[key], names)
                          for key, kind in set_block_options(kinds, entry.options).items()
                          if isinstance(answer, list) or not BlockSelection.needs_names(entry.options[key])]
                if chosen:
                    first[(backbone_label, entry.label)] = min(min(blocks, default=len(names)) for blocks in chosen)
        return first

    def check_engines(self, backbones: tuple[GridEntry, ...]) -> None:
        for i, backbone in enumerate(backbones):
            framework = self.registries.backbones.get(backbone.plugin).framework
            if framework not in self.registries.engines:
                installed = ", ".join(self.registries.engines.names()) or "none"
                self.problem(f"backbones[{i}] ({backbone.name})",
                             f"its framework {quote(framework)} has no engine installed (engines: {installed}); "
                             "install the plugin that provides it")

    def check_datasets(self, datasets: tuple[GridEntry, ...]) -> None:
        for i, dataset in enumerate(datasets):
            spec = self.registries.datasets.get(dataset.plugin)
            if spec.check is None:
                continue
            checked = []  # entries that differ only in train_size (applied by the core) check once
            for entry in dataset.expand():
                options = {k: v for k, v in entry.options.items() if k not in DATASET_COMMON_OPTIONS}
                if options in checked:
                    continue
                checked.append(options)
                for message in spec.check(**options) or ():
                    if self.allow_unprepared and isinstance(message, Unprepared):
                        self.unprepared.append(f"datasets[{i}] ({dataset.name}): {message}")
                    else:
                        self.problem(f"datasets[{i}] ({dataset.name})", message)


_ABSENT = object()


def _canonical(value: Any) -> str:
    return "<absent>" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def _same_type(value: Any, default: Any) -> bool:
    return _is_kind(value, type(default))


def _is_kind(value: Any, kind: type) -> bool:
    """``value`` fits a setting of type ``kind``: bools are not ints, ints are floats."""
    if kind is bool or isinstance(value, bool):
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _closest(key: str, valid: Iterable[object]) -> str:
    """' (did you mean ...?)' naming those of ``valid`` near ``key`` (the registry's matching), or ''."""
    hint = suggestions(key, valid)
    return f" (did you mean {' or '.join(map(repr, hint))}?)" if hint else ""

