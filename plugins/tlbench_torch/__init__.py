"""Built-in PyTorch engine: trains every torch model source (timm, torchvision, plain modules).

``from tlbench_torch import ModuleBackbone`` makes a backbone of any ``nn.Module`` blocks;
``TorchBackbone`` is the base of torch model sources. torch itself loads only when one of
them or the engine is used, so ``tlbench list`` stays fast.
"""

from __future__ import annotations

from tlbench.plugin.hookspecs import hookimpl
from tlbench.plugin.specs import EngineSpec

__all__ = ["ModuleBackbone", "TorchBackbone", "TorchNetwork"]


def load_engine():
    from .engine import TorchEngine

    return TorchEngine()


def __getattr__(name: str):
    if name in __all__:
        from . import source

        return getattr(source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def tlbench_register_engines():
    yield EngineSpec("torch", load=load_engine, description="PyTorch: timm, torchvision and plain nn.Module backbones")
