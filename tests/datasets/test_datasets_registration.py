"""The plugin registers every dataset with complete, honest specs, and imports light."""

from __future__ import annotations

import subprocess
import sys
from inspect import signature

from tlbench.plugin.specs import DatasetSpec

EXPECTED = {
    "folder", "mnist-5k", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100",
    "cifar100-coarse", "imagenette", "imagenet_v2", "imagenet2012_subset", "cats_vs_dogs",
    "tfds", "coco-crops", "open-images-crops",
}


def test_registers_the_issue_datasets_and_tfds_prefixed_ones(specs):
    assert set(specs) >= EXPECTED
    prefixed = [name for name in specs if name.startswith("tfds/")]
    assert len(prefixed) >= 5
    assert all(isinstance(spec, DatasetSpec) for spec in specs.values())


def test_every_spec_declares_domain_options_and_check(specs):
    for spec in specs.values():
        assert spec.description, spec.name
        assert spec.check is not None, spec.name
        assert "train_size" not in spec.options, spec.name
        if spec.name not in ("folder", "corrupted-folder", "tfds"):
            assert spec.domain != "unknown" and spec.num_classes, spec.name


def test_options_match_what_load_and_check_accept(specs):
    for spec in specs.values():
        for function in (spec.load, spec.check):
            parameters = signature(function).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
            assert takes_any or set(spec.options) <= set(parameters), spec.name


def test_domains(specs):
    assert specs["mnist-5k"].domain == "handwriting"
    assert specs["digits"].domain == "handwriting"
    assert specs["cats_vs_dogs"].domain == "natural-photo"
    assert specs["tfds/rock_paper_scissors"].domain == "hand-gesture"
    assert specs["cifar100-coarse"].num_classes == 20


def test_registering_imports_no_framework_or_image_library():
    code = (
        "import sys, tlbench_datasets as p; specs = list(p.tlbench_register_datasets()); "
        "heavy = ('tensorflow', 'tensorflow_datasets', 'PIL', 'sklearn', 'mlxtend', 'torch'); "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
