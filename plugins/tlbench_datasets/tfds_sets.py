"""Image-classification datasets from tensorflow-datasets, prepared locally beforehand."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tlbench.plugin.specs import ImageDataset, PluginError

from . import imagenet_classes as inet
from .tfds_source import (
    ClassIndex,
    TfdsSource,
    class_label,
    open_builder,
    problems_of,
    resolve_splits,
    tfds_dataset,
)

log = logging.getLogger(__name__)

COMMON_OPTIONS = {"data_dir": None, "cache_dir": None, "splits": None}


@dataclass(frozen=True)
class TfdsDefinition:
    """A registered tfds classification dataset: where it lives and what it is."""

    name: str
    tfds_name: str
    domain: str
    num_classes: int
    description: str
    config: str | None = None  # default builder config; the option ``config`` changes it
    label_key: str = "label"
    imagenet_classes: Mapping[str, Any] | None = None  # keyed by the (renamed) class names
    imagenet_labels: bool = False  # the labels are ImageNet-1k indices themselves
    rename: Mapping[str, str] = field(default_factory=dict)  # tfds class name -> shown name

    @property
    def options(self) -> dict[str, Any]:
        config = {"config": self.config} if self.config else {}
        return {**config, **COMMON_OPTIONS}


DEFINITIONS = (
    TfdsDefinition("mnist", "mnist", "handwriting", 10, "MNIST handwritten digits, 28x28 gray"),
    TfdsDefinition("fashion_mnist", "fashion_mnist", "product-photo", 10,
                   "Fashion-MNIST clothing items, 28x28 gray"),
    TfdsDefinition("cifar10", "cifar10", "natural-photo", 10, "CIFAR-10, 32x32 photos",
                   imagenet_classes=inet.CIFAR10),
    TfdsDefinition("cifar100", "cifar100", "natural-photo", 100,
                   "CIFAR-100 with its 100 fine labels"),
    TfdsDefinition("cifar100-coarse", "cifar100", "natural-photo", 20,
                   "CIFAR-100 with its 20 coarse superclasses", label_key="coarse_label"),
    TfdsDefinition("imagenette", "imagenette", "natural-photo", 10,
                   "Imagenette: 10 easy ImageNet classes (config full-size-v2|320px-v2|160px-v2)",
                   config="320px-v2",
                   imagenet_classes={name: index for name, index in inet.IMAGENETTE.values()},
                   rename={wnid: name for wnid, (name, _) in inet.IMAGENETTE.items()}),
    TfdsDefinition("imagenet_v2", "imagenet_v2", "natural-photo", 1000,
                   "ImageNetV2 test images (10k), split 70/15/15", config="matched-frequency",
                   imagenet_labels=True),
    TfdsDefinition("imagenet2012_subset", "imagenet2012_subset", "natural-photo", 1000,
                   "ImageNet 2012 1%/10% training subset (manual download)", config="1pct",
                   imagenet_labels=True),
    TfdsDefinition("cats_vs_dogs", "cats_vs_dogs", "natural-photo", 2,
                   "Kaggle/Asirra cats vs dogs (23k photos), split 70/15/15",
                   imagenet_classes=inet.CATS_VS_DOGS),
    TfdsDefinition("tfds/oxford_flowers102", "oxford_flowers102", "natural-photo", 102,
                   "Oxford 102 flower species"),
    TfdsDefinition("tfds/oxford_iiit_pet", "oxford_iiit_pet", "natural-photo", 37,
                   "Oxford-IIIT pet breeds"),
    TfdsDefinition("tfds/tf_flowers", "tf_flowers", "natural-photo", 5, "TensorFlow flowers"),
    TfdsDefinition("tfds/caltech101", "caltech101", "natural-photo", 102, "Caltech-101 objects"),
    TfdsDefinition("tfds/stanford_dogs", "stanford_dogs", "natural-photo", 120,
                   "Stanford dog breeds"),
    TfdsDefinition("tfds/food101", "food101", "food-photo", 101, "Food-101 dishes"),
    TfdsDefinition("tfds/stl10", "stl10", "natural-photo", 10, "STL-10, 96x96 photos"),
    TfdsDefinition("tfds/eurosat", "eurosat", "satellite", 10, "EuroSAT land use, RGB",
                   config="rgb"),
    TfdsDefinition("tfds/svhn_cropped", "svhn_cropped", "street-digits", 10,
                   "Street View house-number digits, 32x32"),
    TfdsDefinition("tfds/beans", "beans", "plant-leaf-photo", 3, "Bean leaf diseases"),
    TfdsDefinition("tfds/dtd", "dtd", "texture", 47, "Describable Textures"),
    TfdsDefinition("tfds/rock_paper_scissors", "rock_paper_scissors", "hand-gesture", 3,
                   "Rendered hands: rock, paper, scissors"),
    TfdsDefinition("tfds/colorectal_histology", "colorectal_histology", "histology", 8,
                   "Colorectal cancer tissue patches"),
    TfdsDefinition("tfds/patch_camelyon", "patch_camelyon", "histology", 2,
                   "PatchCamelyon lymph-node patches"),
)

GENERIC_OPTIONS = {"tfds_name": None, **COMMON_OPTIONS, "label_key": "label",
                   "image_key": "image", "domain": "unknown", "imagenet_classes": None}


def load_definition(definition: TfdsDefinition, config: str | None = None,
                    cache_dir: str | None = None, **options) -> ImageDataset:
    """Load a registered tfds dataset (options: data_dir, cache_dir, splits[, config])."""
    return _load(definition, _tfds_name(definition, config), partial(_built_in, definition),
                 cache_dir=cache_dir, **options)


def check_definition(definition: TfdsDefinition, config: str | None = None,
                     cache_dir: str | None = None, **options) -> list[str]:
    return problems_of(lambda: _open(definition.name, _tfds_name(definition, config),
                                   definition.label_key, prepare=False, **options))


def load_generic(tfds_name: str | None = None, label_key: str = "label", image_key: str = "image",
                 domain: str = "unknown", imagenet_classes: Any = None,
                 cache_dir: str | None = None, **options) -> ImageDataset:
    """Any tfds image-classification dataset, named by the option ``tfds_name``."""
    definition = TfdsDefinition("tfds", _require_name(tfds_name), domain, 0, "",
                                label_key=label_key)
    return _load(definition, definition.tfds_name,
                 partial(inet.parse_imagenet_classes, imagenet_classes),
                 image_key=image_key, cache_dir=cache_dir, **options)


def check_generic(tfds_name: str | None = None, label_key: str = "label", image_key: str = "image",
                  domain: str = "unknown", imagenet_classes: Any = None,
                  cache_dir: str | None = None, **options) -> list[str]:
    def opened():
        _, names, _ = _open("tfds", _require_name(tfds_name), label_key, image_key, prepare=False, **options)
        inet.parse_imagenet_classes(imagenet_classes, names)

    return problems_of(opened)


def _require_name(tfds_name: str | None) -> str:
    if not tfds_name or not isinstance(tfds_name, str):
        raise PluginError("tfds: option tfds_name is required, e.g. tfds_name: caltech101 or "
                          "imagenette/160px-v2 (a name from the tfds catalog)")
    return tfds_name


def _tfds_name(definition: TfdsDefinition, config: str | None) -> str:
    config = config or definition.config
    return f"{definition.tfds_name}/{config}" if config else definition.tfds_name


def _built_in(definition: TfdsDefinition, class_names: list[str]):
    """The definition's ImageNet mapping, if the prepared data has the expected classes."""
    if definition.imagenet_labels:
        return {name: (i,) for i, name in enumerate(class_names)}
    if definition.imagenet_classes is None:
        return None
    if set(definition.imagenet_classes) != set(class_names):
        log.warning("%s: class names %s differ from those of the built-in ImageNet mapping; "
                    "using no mapping", definition.name, class_names)
        return None
    return inet.parse_imagenet_classes(definition.imagenet_classes, class_names)


def _open(dataset: str, tfds_name: str, label_key: str, image_key: str = "image",
          data_dir: str | None = None, splits: Any = None, prepare: bool = True):
    """Open the builder; check its label and image features and (once prepared) the splits option."""
    builder = open_builder(dataset, tfds_name, data_dir, prepare=prepare)
    label = class_label(dataset, builder.info.features, [label_key])
    if image_key not in builder.info.features:
        raise PluginError(f"{dataset}: the tfds dataset has no image feature {image_key!r}; set "
                          f"the option image_key to one of {list(builder.info.features.keys())}")
    return builder, list(label.names), resolve_splits(dataset, builder, splits)


def _load(definition: TfdsDefinition, tfds_name: str, imagenet_mapping, image_key: str = "image",
          data_dir: str | None = None, cache_dir: str | None = None,
          splits: Any = None) -> ImageDataset:
    dataset = definition.name
    builder, names, chosen = _open(dataset, tfds_name, definition.label_key, image_key,
                                   data_dir, splits)
    class_names = [definition.rename.get(n, n) for n in names]
    source = TfdsSource.of(dataset, builder, image_key)
    return tfds_dataset(dataset, builder, source, chosen, ClassIndex(definition.label_key),
                        cache_dir, class_names, definition.domain, imagenet_mapping(class_names))
