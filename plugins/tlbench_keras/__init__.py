"""Built-in tlbench plugin: keras.applications backbones (Keras 3, TensorFlow backend).

Only tlbench and the standard library are imported here; Keras and TensorFlow load when a
backbone is built (``backbone.py``), so ``tlbench list`` stays fast.
"""

from __future__ import annotations

import functools

from tlbench.plugin.hookspecs import hookimpl
from tlbench.plugin.specs import BackboneSpec, Block, EngineSpec

from .catalog import MODELS
from .weights import resolve_weights


def build(name: str, weights: str | None = "pretrained", image_size: int | None = None):
    """A :class:`tlbench_keras.backbone.KerasBackbone` for ``keras/<name>``.

    The options are checked before TensorFlow loads, so missing weights fail in seconds.
    """
    spec = MODELS[name]
    source = resolve_weights(spec, weights, spec.input_size(image_size))
    from .backbone import KerasBackbone

    return KerasBackbone(spec, source)


def block_structure(name: str, **options) -> tuple[Block, ...]:
    """The blocks of ``keras/<name>`` (no weights needed; from blocks.json, no TensorFlow)."""
    from .blocks import structure

    return structure(name)


def load_engine():
    from .engine import KerasEngine

    return KerasEngine()


@hookimpl
def tlbench_register_engines():
    yield EngineSpec("keras", load=load_engine, description="Keras 3 on TensorFlow: keras.applications backbones")


@hookimpl
def tlbench_register_backbones():
    for name, model in MODELS.items():
        yield BackboneSpec(
            name=f"keras/{name}",
            framework="keras",
            build=functools.partial(build, name),
            options={"weights": "pretrained", "image_size": None},
            description=model.description,
            blocks=functools.partial(block_structure, name),
        )
