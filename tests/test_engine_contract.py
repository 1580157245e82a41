"""One engine contract (tlbench.testing.engine_checks), passed by the torch engine, the Keras
engine and the toy numpy engine of the core tests: what a third-party engine author runs too."""

from __future__ import annotations

import pytest

from tlbench.plugin.engine import Engine
from tlbench.testing import CAPABILITY_USES, ENGINE_CHECKS, engine_checks, engine_for

NAMES = [check.__name__.removeprefix("check_") for check in ENGINE_CHECKS]


def run_check(name: str, make_engine, make_backbone) -> None:
    dict(engine_checks(make_engine, make_backbone))[name]()


@pytest.mark.parametrize("name", NAMES)
def test_the_torch_engine_keeps_the_contract(name):
    import tlbench_timm

    run_check(name, lambda: engine_for("torch"), lambda: tlbench_timm.build("mobilenetv2_100", weights="none", image_size=32))


@pytest.mark.parametrize("name", NAMES)
def test_the_keras_engine_keeps_the_contract(name):
    import tlbench_keras

    run_check(name, lambda: engine_for("keras"), lambda: tlbench_keras.build("MobileNetV2", weights="none", image_size=32))


@pytest.mark.parametrize("name", NAMES)
def test_the_toy_engine_keeps_the_contract(toy_plugin, name):
    from tlbench_toy_plugin import Centroid, CentroidEngine

    run_check(name, CentroidEngine, Centroid)


def test_every_capability_has_a_first_use_that_the_checks_try():
    assert set(CAPABILITY_USES) == set(Engine.CAPABILITIES)


def test_an_engine_with_only_the_required_primitives_is_complete(toy_plugin):
    from tlbench_toy_plugin import CentroidEngine

    assert len(Engine.__abstractmethods__) == 10
    assert CentroidEngine().supports("save") and not CentroidEngine().supports("imagenet_classifier")
