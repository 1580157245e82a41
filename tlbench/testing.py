"""Contract checks that plugin authors call from their own tests.

Each check raises ``AssertionError`` with a message naming the spec and what is wrong::

    from tlbench.testing import check_backbone, check_dataset, tiny_dataset

    def test_my_backbone():
        check_backbone(my_spec, image_size=32)
"""

from __future__ import annotations

import unittest
from collections.abc import Callable, Mapping
from functools import cache, partial
from typing import Any, cast

import numpy as np

from tlbench.data.splits import ArraySplit
from tlbench.plugin.engine import Engine
from tlbench.plugin.specs import (
    BackboneSpec,
    CellContext,
    DatasetSpec,
    ImageDataset,
    ImageSplit,
    NotApplicable,
    PluginError,
    StrategySpec,
    Trainable,
    TrainPlan,
    TrainSettings,
)
from tlbench.train.protocol import run_cell

SPLITS = ("train", "valid", "test")


def tiny_dataset(size: int = 32, per_class: int = 6, seed: int = 0) -> ImageDataset:
    """Two learnable classes (dark vs. bright, with noise) at ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name in SPLITS:
        dark = rng.integers(0, 90, (per_class, size, size, 3))
        bright = rng.integers(160, 256, (per_class, size, size, 3))
        splits[name] = ArraySplit(np.concatenate([dark, bright]).astype(np.uint8), [0] * per_class + [1] * per_class)
    # cast: ArraySplit.images may give a DiskArray, which ImageSplit allows by its docstring, not by its annotation
    return ImageDataset("tiny", ("dark", "bright"), cast("dict[str, ImageSplit]", splits), domain="synthetic")


def check_dataset(spec: DatasetSpec, size: int = 16, **options: Any) -> ImageDataset:
    """``load`` gives three splits of uint8 NHWC images with in-range labels; subsets work."""
    where = f"dataset {spec.name!r}"
    data = spec.load(**{**spec.options, **options})
    assert isinstance(data, ImageDataset), f"{where}: load() must return an ImageDataset"
    assert set(SPLITS) <= set(data.splits), f"{where}: splits {sorted(data.splits)}, need {SPLITS}"
    assert len(set(data.class_names)) == len(data.class_names) >= 2, f"{where}: need 2+ distinct class names"
    for name in SPLITS:
        split = data.splits[name]
        labels = np.asarray(split.labels)
        assert labels.ndim == 1 and (labels >= 0).all() and (labels < data.num_classes).all(), \
            f"{where}: {name} labels must be integers in 0..{data.num_classes - 1}"
        part = split.subset(list(range(min(4, len(labels)))))
        images = part.images(size)
        assert images.dtype == np.uint8 and images.shape == (len(part.labels), size, size, 3), \
            f"{where}: {name}.images({size}) gave {images.dtype} {images.shape}"
        assert part.fingerprint != split.fingerprint or len(part.labels) == len(labels), \
            f"{where}: a subset must have its own fingerprint"
    assert set(data.splits["train"].labels) == set(range(data.num_classes)), f"{where}: a class is missing from train"
    if data.imagenet_classes:
        assert set(data.imagenet_classes) == set(data.class_names), f"{where}: imagenet_classes must map every class"
    return data


@cache
def engine_for(framework: str) -> Engine[Any]:
    """The installed engine of ``framework``, configured as a run would configure it."""
    from tlbench.plugin.registry import collect

    return collect().engine_for(framework)


def train_cell(backbone: Any, plan: TrainPlan, data: ImageDataset, settings: TrainSettings, ctx: CellContext,
               strategy: StrategySpec | None = None, options: Mapping[str, Any] | None = None,
               framework: str | None = None) -> dict[str, Any]:
    """One cell of ``backbone`` through the core protocol and its framework's engine: the metrics."""
    engine = engine_for(framework or backbone.framework)
    return run_cell(engine, backbone, plan, data, settings, ctx, strategy, options).as_dict()


def check_backbone(spec: BackboneSpec, image_size: int = 32, data: ImageDataset | None = None) -> dict[str, Any]:
    """Built with random weights: blocks, depth-by-depth freezing and the metrics of a cell."""
    where = f"backbone {spec.name!r}"
    backbone = spec.build(**{**spec.options, "weights": "none", "image_size": image_size})
    blocks = list(backbone.blocks)
    assert blocks and all(b.params >= 0 for b in blocks), f"{where}: needs blocks with parameter counts"
    if spec.blocks is not None:
        assert list(spec.blocks(**spec.options)) == blocks, f"{where}: blocks() disagrees with the built backbone"
    if spec.block_count is not None:
        assert spec.block_count(**spec.options) == len(blocks), f"{where}: block_count() disagrees with blocks"
    data = data or tiny_dataset(image_size)
    settings = TrainSettings(epochs=1, batch_size=4)
    ctx = CellContext(seed=0, device="cpu")
    runs = {}
    for depth in (0, 1, None):
        plan = TrainPlan(pretrained=False, trainable_blocks=depth)
        metrics = train_cell(backbone, plan, data, settings, ctx, framework=spec.framework)
        assert 0.0 <= metrics["test_accuracy"] <= 1.0, f"{where}: accuracy {metrics['test_accuracy']}"
        runs[depth] = metrics
    total = sum(b.params for b in blocks)
    frozen_all, last_only, everything = runs[0], runs[1], runs[None]
    assert frozen_all["non_trainable_params"] == total, \
        f"{where}: a frozen backbone must report its {total} block parameters as non-trainable"
    assert last_only["trainable_params"] - frozen_all["trainable_params"] == blocks[-1].params, \
        f"{where}: depth 1 must train exactly the last block"
    assert everything["non_trainable_params"] == 0, f"{where}: depth 'all' must leave nothing frozen"
    return runs[1]


# ---------------------------------------------------------------- the engine contract

def engine_checks(make_engine: Callable[[], Engine[Any]], make_backbone: Callable[[], Any]) -> list[tuple[str, Callable[[], None]]]:
    """The engine contract, one ``(name, check)`` per check, in the style of scikit-learn's
    ``parametrize_with_checks``; an engine author runs them from their own tests::

        @pytest.mark.parametrize("name, check", engine_checks(MyEngine, lambda: my_backbone(image_size=32)))
        def test_my_engine(name, check):
            check()

    ``make_backbone`` gives a small model source of the engine's framework (random weights are
    fine; 2 or more blocks). Each check runs the required primitives, and every optional
    capability the engine declares (:meth:`Engine.supports`), on :func:`tiny_dataset`.
    """
    return [(check.__name__.removeprefix("check_"), partial(check, make_engine, make_backbone)) for check in ENGINE_CHECKS]


class _Opened:
    """A network of the backbone split after ``prefix`` blocks, a linear head attached, and the
    tiny dataset's images; ``inputs`` are the prefix's outputs when the engine precomputes them."""

    def __init__(self, engine: Engine[Any], backbone: Any, precomputed: bool = True, seed: int = 0, prefix: int = 1) -> None:
        self.engine, self.backbone, self.data = engine, backbone, tiny_dataset(backbone.image_size)
        self.images = {s: self.data.splits[s].images(backbone.image_size) for s in SPLITS}
        self.labels = {s: np.asarray(self.data.splits[s].labels) for s in SPLITS}
        self.model = engine.open(backbone, pretrained=False, seed=seed, device="cpu", precision="fp32")
        self.precomputed = engine.split(self.model, prefix, precomputed) and precomputed
        engine.attach_head(self.model, "linear", self.data.num_classes, seed)
        self.inputs = {s: engine.frozen_outputs(self.model, x) if self.precomputed else x for s, x in self.images.items()}
        self.last = frozenset({len(backbone.blocks) - 1})

    def train(self, blocks: frozenset[int], epochs: int = 1) -> None:
        settings = TrainSettings(epochs=epochs, batch_size=4, lr=0.01)
        self.engine.start_phase(self.model, Trainable(blocks), settings)
        for _ in range(epochs):
            self.engine.train_epoch(self.model, self.inputs["train"], self.labels["train"], lr_factor=1.0,
                                    settings=settings, min_batch=2)

    def predict(self, split: str = "test") -> np.ndarray:
        return np.asarray(self.engine.predict(self.model, self.inputs[split]))


def check_predict_gives_probabilities(make_engine: Callable[[], Engine[Any]], make_backbone: Callable[[], Any]) -> None:
    """``predict``: one row per image, one column per class, rows summing to 1."""
    cell = _Opened(make_engine(), make_backbone())
    cell.train(cell.last)
    probs = cell.predict()
    assert probs.shape == (len(cell.labels["test"]), cell.data.num_classes), f"predict gave shape {probs.shape}"
    assert (probs >= 0).all() and np.allclose(probs.sum(1), 1, atol=1e-3), "predict must give probabilities"


def check_parameter_counts_follow_the_blocks(make_engine: Callable[[], Engine[Any]], make_backbone: Callable[[], Any]) -> None:
    """Training every block adds exactly the blocks' parameters to the head's; nothing more is frozen."""
    backbone = make_backbone()
    cell = _Opened(make_engine(), backbone)
    blocks = frozenset(range(len(backbone.blocks)))
    head, frozen_all = cell.engine.parameter_counts(cell.model, frozenset())
    trainable_all, frozen_none = cell.engine.parameter_counts(cell.model, blocks)
    total = sum(b.params for b in backbone.blocks)
    assert (trainable_all - head, frozen_all, frozen_none) == (total, total, 0), (
        f"parameter_counts: head {head}; all blocks training: {trainable_all} trainable, {frozen_none} frozen; "
        f"none: {frozen_all} frozen; the blocks hold {total}")


def check_training_leaves_frozen_blocks_unchanged(make_engine: Callable[[], Engine[Any]], make_backbone: Callable[[], Any]) -> None:
    """After a phase that trains only the last block, the frozen first block's outputs (its
    normalisation statistics included) are what they were."""
    cell = _Opened(make_engine(), make_backbone(), precomputed=False)
    before = np.asarray(cell.engine.frozen_outputs(cell.model, cell.images["valid"]))
    cell.train(cell.last, epochs=2)
    after = np.asarray(cell.engine.frozen_outputs(cell.model, cell.images["valid"]))
    np.testing.assert_array_equal(after, before, err_msg="training the last block changed the frozen first block")


def check_snapshot_and_restore_put_back_the_predictions(make_engine: Callable[[], Engine[Any]],
                                                        make_backbone: Callable[[], Any]) -> None:
    """``restore(snapshot(...))`` after more training gives back the snapshot's predictions exactly."""
    cell = _Opened(make_engine(), make_backbone())
    cell.train(cell.last)
    state, kept = cell.engine.snapshot(cell.model, cell.last), cell.predict()
    cell.train(cell.last, epochs=2)
    if np.array_equal(cell.predict(), kept):
        raise unittest.SkipTest("two more epochs changed no prediction: a restore cannot be observed")
    cell.engine.restore(cell.model, state)
    np.testing.assert_array_equal(cell.predict(), kept, err_msg="restore did not put back the snapshot")


def check_a_seed_repeats_exactly(make_engine: Callable[[], Engine[Any]], make_backbone: Callable[[], Any]) -> None:
    """Two cells of one seed give the same predictions, bit for bit."""
    runs = []
    for _ in range(2):
        cell = _Opened(make_engine(), make_backbone(), seed=3)
        cell.train(cell.last)
        runs.append(cell.predict())
    np.testing.assert_array_equal(runs[0], runs[1], err_msg="the same seed gave different predictions")


def check_precomputed_inputs_equal_images(make_engine: Callable[[], Engine[Any]], make_backbone: Callable[[], Any]) -> None:
    """The frozen prefix's outputs, precomputed, predict as the images do through the whole
    network; outputs continued from a shorter prefix equal those computed from the images."""
    engine, backbone = make_engine(), make_backbone()
    by_images = _Opened(engine, backbone, precomputed=False)
    precomputed = _Opened(engine, backbone, precomputed=True)
    if not precomputed.precomputed:
        raise unittest.SkipTest("the engine runs this backbone whole on every batch")
    for cell in (by_images, precomputed):
        cell.train(frozenset())
    np.testing.assert_allclose(precomputed.predict(), by_images.predict(), atol=1e-5,
                               err_msg="predictions from precomputed outputs differ from those from images")
    blocks = len(backbone.blocks)
    if blocks > 2 and engine.split(precomputed.model, 2, True):
        direct = np.asarray(engine.frozen_outputs(precomputed.model, precomputed.images["valid"]))
        continued = np.asarray(engine.frozen_outputs(precomputed.model, precomputed.inputs["valid"], 1))
        np.testing.assert_allclose(continued, direct, atol=1e-5, err_msg="a prefix continued from block 1 differs")


def check_optional_capabilities(make_engine: Callable[[], Engine[Any]], make_backbone: Callable[[], Any]) -> None:
    """Each capability the engine declares works; each it lacks raises a PluginError naming it."""
    engine, backbone = make_engine(), make_backbone()
    cell = _Opened(engine, backbone)
    cell.train(cell.last)
    if engine.supports("linear_head"):  # as head logreg uses it: on the whole backbone's outputs
        whole = _Opened(engine, backbone, prefix=len(backbone.blocks))
        features = np.asarray(engine.head_features(whole.model, engine.frozen_outputs(whole.model, whole.images["test"])))
        bias = np.array([2.0, 0.0], dtype=np.float32)
        engine.set_linear_head(whole.model, np.zeros((2, features.shape[1]), np.float32), bias)
        np.testing.assert_allclose(whole.predict(), np.tile(np.exp(bias) / np.exp(bias).sum(), (len(features), 1)), atol=1e-5,
                                   err_msg="set_linear_head: zero weights and a bias must predict softmax(bias)")
    if engine.supports("save"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tlbench-engine-check-") as folder:
            engine.save(cell.model, folder)
            info = {"head": "linear", "class_names": list(cell.data.class_names), "image_size": cell.backbone.image_size,
                    "interpolation": cell.backbone.interpolation}
            saved = engine.load_saved(make_backbone(), folder, info)
            np.testing.assert_allclose(saved(cell.images["test"]), np.asarray(engine.predict(cell.model, cell.inputs["test"])),
                                       atol=1e-5, err_msg="load_saved must predict as the saved network did")
    if engine.supports("batchnorm_sums"):
        for sums in engine.batchnorm_sums(cell.model, cell.images["test"]):
            assert sums.count > 0 and sums.total.shape == sums.squares.shape == sums.running_mean.shape, \
                f"batchnorm_sums: block {sums.block} gave counts or shapes that do not fit"
    for capability, use in CAPABILITY_USES.items():
        if not engine.supports(capability):
            try:
                use(cell)
            except PluginError as error:
                assert repr(capability) in str(error), f"the error for a missing {capability!r} must name it: {error}"
            else:
                raise AssertionError(f"an engine without {capability!r} must raise PluginError when it is used")


CAPABILITY_USES: dict[str, Callable[[_Opened], object]] = {  # a first use of each capability
    "imagenet_classifier": lambda cell: cell.engine.open_classifier(cell.backbone, "cpu"),
    "linear_head": lambda cell: cell.engine.set_linear_head(cell.model, np.zeros((2, 1)), np.zeros(2)),
    "batchnorm_sums": lambda cell: cell.engine.batchnorm_sums(cell.model, cell.images["test"]),
    "save": lambda cell: cell.engine.load_saved(cell.backbone, "", {}),
}


ENGINE_CHECKS: tuple[Callable[..., None], ...] = (
    check_predict_gives_probabilities, check_parameter_counts_follow_the_blocks,
    check_training_leaves_frozen_blocks_unchanged, check_snapshot_and_restore_put_back_the_predictions,
    check_a_seed_repeats_exactly, check_precomputed_inputs_equal_images, check_optional_capabilities,
)


def check_strategy(spec: StrategySpec, data: ImageDataset | None = None) -> TrainPlan | None:
    """``plan`` returns a TrainPlan (or raises NotApplicable) for the default options."""
    data = data or tiny_dataset()
    try:
        plan = spec.plan(dict(spec.options), data)
    except NotApplicable:
        return None
    assert isinstance(plan, TrainPlan), f"strategy {spec.name!r}: plan() must return a TrainPlan"
    return plan
