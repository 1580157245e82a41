"""The hooks a tlbench plugin can implement.

A plugin is any module registered under the ``tlbench`` entry-point group. It implements
one or more of these hooks with ``@tlbench.hookimpl``. Register hooks return iterables of
typed specs; import heavy frameworks inside ``load``/``build``, never at module top, so that
``tlbench list`` stays fast.
"""

from __future__ import annotations

from typing import Any, Iterable

import pluggy

from .types import BackboneSpec, Cell, DatasetSpec, EngineSpec, StrategySpec

PROJECT = "tlbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def tlbench_register_datasets() -> Iterable[DatasetSpec]:
    """Return the datasets this plugin provides.

    Example::

        import numpy as np
        import tlbench
        from tlbench.data import ArraySplit
        from tlbench.types import DatasetSpec, ImageDataset

        def load_stripes(size=16):
            images = np.zeros((20, size, size, 3), np.uint8)
            images[10:, :, ::2] = 255
            labels = [0] * 10 + [1] * 10
            split = ArraySplit(images, labels)
            return ImageDataset("stripes", ("plain", "striped"),
                                {"train": split, "valid": split, "test": split})

        @tlbench.hookimpl
        def tlbench_register_datasets():
            yield DatasetSpec("stripes", load=load_stripes, options={"size": 16},
                              domain="synthetic", num_classes=2)
    """


@hookspec
def tlbench_register_backbones() -> Iterable[BackboneSpec]:
    """Return the backbones this plugin provides.

    ``build`` returns a model source for the engine of ``framework``: for torch, a
    ``tlbench_torch.ModuleBackbone`` (any ``nn.Module`` blocks, see the README),
    ``tlbench_timm.backbone.TimmBackbone`` or another ``tlbench_torch.TorchBackbone``.

    Example (a timm model under a new name)::

        import tlbench
        from tlbench.types import BackboneSpec

        def build_tiny(weights="none", image_size=None):
            from tlbench_timm.backbone import TimmBackbone
            return TimmBackbone("resnet10t", weights=weights, image_size=image_size)

        @tlbench.hookimpl
        def tlbench_register_backbones():
            yield BackboneSpec("mine/tiny-resnet", framework="torch", build=build_tiny,
                               options={"weights": "none", "image_size": None})
    """


@hookspec
def tlbench_register_strategies() -> Iterable[StrategySpec]:
    """Return the strategies this plugin provides.

    Example (a linear probe that always trains the last block too)::

        import tlbench
        from tlbench.types import StrategySpec, TrainPlan

        @tlbench.hookimpl
        def tlbench_register_strategies():
            yield StrategySpec(
                "probe-plus-one",
                plan=lambda options, dataset: TrainPlan(trainable_blocks=1, head="linear"),
                description="linear head and the last block train",
            )
    """


@hookspec
def tlbench_register_engines() -> Iterable[EngineSpec]:
    """Return the framework engines this plugin provides (one per framework name).

    An engine implements the primitives of :class:`tlbench.engine.Engine`; the core runs the
    training protocol with them for every backbone whose ``framework`` names it.

    Example (the built-in PyTorch engine registers itself like this)::

        import tlbench
        from tlbench.types import EngineSpec

        def load_torch_engine():
            from tlbench_torch.engine import TorchEngine
            return TorchEngine()

        @tlbench.hookimpl
        def tlbench_register_engines():
            yield EngineSpec("torch", load=load_torch_engine, description="PyTorch")
    """


@hookspec
def tlbench_cell_finished(cell: Cell, result: dict[str, Any]) -> None:
    """Called after each cell's result line is on disk (trackers, notifiers).

    Example (print every accuracy)::

        import tlbench

        @tlbench.hookimpl
        def tlbench_cell_finished(cell, result):
            print(cell.cell_id, result["status"], result["metrics"].get("test_accuracy"))
    """
