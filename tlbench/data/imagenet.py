"""The 1000 ImageNet-1k class names in index order, offline and framework-free.

``imagenet_classes.txt`` holds one human-readable name per line (the first synonym of
each WordNet synset, e.g. index 235 = "German shepherd"). It was written from timm's
bundled class descriptions: ``python -m tlbench.data.imagenet``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")
NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The ImageNet-1k class names, index ``i`` being the model output ``i``."""
    names = tuple(CLASSES_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != NUM_CLASSES:
        raise RuntimeError(f"{CLASSES_FILE} has {len(names)} lines, expected {NUM_CLASSES}")
    return names


def class_names_from_timm() -> tuple[str, ...]:
    """The same names, computed from timm's bundled ImageNetInfo (needs timm installed)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    count: int = info.num_classes()  # type: ignore[no-untyped-call]  # timm leaves num_classes() unannotated
    descriptions = (info.index_to_description(i) for i in range(count))
    return tuple(description.split(",")[0].strip() for description in descriptions)


if __name__ == "__main__":
    from tlbench.files import write_text

    write_text(CLASSES_FILE, "\n".join(class_names_from_timm()) + "\n")
    print(f"wrote {CLASSES_FILE}")
