"""Class name -> ImageNet-1k indices: the option parser and the built-in mappings.

A mapping lets the "pretrained classifier as is" strategy score a target class by the summed
probability of its ImageNet classes. A dataset gets a mapping only when every class has a
defensible set; otherwise ``imagenet_classes`` is None and that strategy is not applicable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tlbench.plugin.specs import PluginError, quote

IMAGENET_SIZE = 1000

CATS_VS_DOGS = {"cat": "281-285", "dog": "151-268"}

# ImageNet has no deer: the nearest classes are the antelopes (hartebeest, impala, gazelle).
# CIFAR's "automobile" is cars (no pickups), its "truck" big trucks only (no pickups either).
CIFAR10 = {
    "airplane": "404,895",  # airliner, warplane
    "automobile": "436,468,511,609,627,656,661,751,817",  # wagon, cab, convertible, jeep, ...
    "bird": "7-24,80-100,127-146",
    "cat": "281-285",
    "deer": "351-353",
    "dog": "151-268",
    "frog": "30-32",
    "horse": "339,603",  # sorrel, horse cart
    "ship": "403,484,510,554,625,628,724,780,814,833,871,913,914",
    "truck": "555,569,675,864,867",  # fire engine, garbage truck, moving van, tow, trailer
}

# Imagenette's ten WordNet ids, their readable names and ImageNet-1k indices.
IMAGENETTE = {
    "n01440764": ("tench", 0),
    "n02102040": ("English springer", 217),
    "n02979186": ("cassette player", 482),
    "n03000684": ("chain saw", 491),
    "n03028079": ("church", 497),
    "n03394916": ("French horn", 566),
    "n03417042": ("garbage truck", 569),
    "n03425413": ("gas pump", 571),
    "n03445777": ("golf ball", 574),
    "n03888257": ("parachute", 701),
}


def parse_index_set(value: Any, where: str) -> tuple[int, ...]:
    """``"281-285"``, ``"1,2,5-7"``, ``[1, 2]`` or ``7`` -> sorted unique ImageNet indices."""
    if isinstance(value, bool):
        raise PluginError(f"{where}: expected ImageNet indices, got {quote(value)}")
    if isinstance(value, int):
        parts: list[Any] = [value]
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        raise PluginError(
            f"{where}: expected a range string like '281-285' or '1,2,5-7', or a list of "
            f"integers; got {quote(value)}"
        )
    indices: set[int] = set()
    for part in parts:
        indices.update(_parse_part(part, where))
    if not indices:
        raise PluginError(f"{where}: no ImageNet index given")
    return tuple(sorted(indices))


def _parse_part(part: Any, where: str) -> range:
    if isinstance(part, int) and not isinstance(part, bool):
        start = stop = part
    elif isinstance(part, str) and part:
        start_text, dash, stop_text = part.partition("-")
        try:
            start = int(start_text)
            stop = int(stop_text) if dash else start
        except ValueError:
            raise PluginError(
                f"{where}: {quote(part)} is not an index or a range like '281-285'"
            ) from None
        if start > stop:
            raise PluginError(f"{where}: range {quote(part)} runs backwards; write '{stop}-{start}'")
    else:
        raise PluginError(f"{where}: {quote(part)} is not an index or a range like '281-285'")
    for index in (start, stop):
        if not 0 <= index < IMAGENET_SIZE:
            raise PluginError(
                f"{where}: index {index} is outside ImageNet-1k's 0..{IMAGENET_SIZE - 1}"
            )
    return range(start, stop + 1)


def parse_imagenet_classes(
    mapping: Mapping[str, Any] | None, class_names: Sequence[str], where: str = "imagenet_classes"
) -> dict[str, tuple[int, ...]] | None:
    """The ``imagenet_classes`` option -> {class name: indices}; every class must be mapped."""
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping):
        raise PluginError(
            f"{where}: expected a mapping {{class name: '281-285' | [ints]}}, got {quote(mapping)}"
        )
    unknown = sorted(set(map(str, mapping)) - set(class_names))
    if unknown:
        raise PluginError(
            f"{where}: unknown class name(s) {', '.join(map(quote, unknown))}; the dataset's "
            f"classes are {', '.join(map(repr, class_names))}"
        )
    missing = [name for name in class_names if name not in mapping]
    if missing:
        raise PluginError(
            f"{where}: class(es) {', '.join(map(repr, missing))} have no ImageNet indices; "
            "map every class (the pretrained-classifier strategy needs all of them)"
        )
    return {name: parse_index_set(mapping[name], f"{where}[{name}]") for name in class_names}


def imagenet_classes_problems(mapping: Any, class_names: Sequence[str]) -> list[str]:
    """The same validation as :func:`parse_imagenet_classes`, as a list of problems."""
    try:
        parse_imagenet_classes(mapping, class_names)
    except PluginError as exc:
        return [str(exc)]
    return []
