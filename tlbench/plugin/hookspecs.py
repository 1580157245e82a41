"""The hooks a tlbench plugin can implement.

A plugin is any module registered under the ``tlbench`` entry-point group. It implements
one or more of these hooks with ``@tlbench.hookimpl``. Register hooks return iterables of
typed specs; import heavy frameworks inside ``load``/``build``, never at module top, so that
``tlbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pluggy

from tlbench.plugin.specs import BackboneSpec, Cell, DatasetSpec, EngineSpec, RunInfo, StrategySpec

PROJECT = "tlbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def tlbench_register_datasets() -> Iterable[DatasetSpec]:
    """Return the datasets this plugin provides.

    Example::

        import numpy as np
        import tlbench
        from tlbench.data.splits import ArraySplit
        from tlbench.plugin.specs import DatasetSpec, ImageDataset

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

    ``build`` returns a model source for the engine of ``framework``: for torch, any
    ``tlbench_torch.TorchBackbone`` (``ModuleBackbone`` for plain ``nn.Module`` blocks, as
    here; timm and torchvision models are sources too).

    Example (a two-block convolutional network)::

        import tlbench
        from tlbench.plugin.specs import BackboneSpec

        def build_two_blocks(weights="none", image_size=32):
            from torch import nn
            from tlbench_torch import ModuleBackbone
            blocks = [nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
                      nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())]
            return ModuleBackbone("mine/two-blocks", blocks, image_size=image_size, weights=weights)

        @tlbench.hookimpl
        def tlbench_register_backbones():
            yield BackboneSpec("mine/two-blocks", framework="torch", build=build_two_blocks,
                               options={"weights": "none", "image_size": 32},
                               block_count=lambda **options: 2)
    """


@hookspec
def tlbench_register_strategies() -> Iterable[StrategySpec]:
    """Return the strategies this plugin provides.

    A plan says which weights and head; optional callbacks change what trains, on every
    engine (see :class:`tlbench.plugin.specs.StrategySpec`).

    Example (the last block trains, frozen again after the first half of the epochs)::

        import tlbench
        from tlbench.plugin.specs import StrategySpec, Trainable, TrainPlan

        def freeze_late(view):
            if view.epoch >= view.epochs // 2:
                return Trainable(frozenset(), view.selected.backbone_lr_mult, "head-only")
            return None

        @tlbench.hookimpl
        def tlbench_register_strategies():
            yield StrategySpec(
                "one-then-head",
                plan=lambda options, dataset: TrainPlan(trainable_blocks=1, head="linear"),
                on_epoch_start=freeze_late, family="finetune",
                description="the last block and a linear head, then the head alone",
            )
    """


@hookspec
def tlbench_register_engines() -> Iterable[EngineSpec]:
    """Return the framework engines this plugin provides (one per framework name).

    An engine implements the primitives of :class:`tlbench.plugin.engine.Engine`; the core runs the
    training protocol with them for every backbone whose ``framework`` names it.

    Example (the built-in PyTorch engine registers itself like this)::

        import tlbench
        from tlbench.plugin.specs import EngineSpec

        def load_torch_engine():
            from tlbench_torch.engine import TorchEngine
            return TorchEngine()

        @tlbench.hookimpl
        def tlbench_register_engines():
            yield EngineSpec("torch", load=load_torch_engine, description="PyTorch")
    """


@hookspec
def tlbench_run_started(run: RunInfo) -> Iterable[str] | None:
    """Called once before the first cell of a run; return the tracker names this plugin serves.

    A tracker acts only when ``run.track`` names it (``tlbench run --track NAME``); a name no
    plugin serves is refused before anything runs. Keep per-run state in ``run.observers``.

    Example (a tracker that counts the cells of a run)::

        import tlbench

        @tlbench.hookimpl
        def tlbench_run_started(run):
            if "counter" in run.track:
                run.observers["counter"] = 0
                return ["counter"]
            return None

        @tlbench.hookimpl
        def tlbench_cell_finished(cell, result, run):
            if "counter" in run.observers:
                run.observers["counter"] += 1
    """


@hookspec
def tlbench_cell_finished(cell: Cell, result: dict[str, Any], run: RunInfo) -> None:
    """Called after each cell's result line is on disk (trackers, notifiers), in the driver.

    ``run`` is the :class:`~tlbench.plugin.specs.RunInfo` that ``tlbench_run_started`` saw; an
    implementation may leave it out of its signature.

    Example (print every accuracy)::

        import tlbench

        @tlbench.hookimpl
        def tlbench_cell_finished(cell, result):
            print(cell.cell_id, result["status"], result["metrics"].get("test_accuracy"))
    """
