"""tfds-backed datasets: tfds's own mock data, tiny datasets prepared from local files,
the disk cache, the fast failure when a dataset is not prepared offline, and the download
when online (from a local HTTP server: the only thing here that stands in for the internet)."""

from __future__ import annotations

import functools
import http.server
import io
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from tlbench.data.cache import ArrayCache
from tlbench.data.splits import DiskArray
from tlbench.plugin.frameworks import prepare_tensorflow_import
from tlbench.plugin.specs import PluginError
from tlbench_datasets import tfds_source

prepare_tensorflow_import()  # the same process later runs timm tests
tfds = pytest.importorskip("tensorflow_datasets")

COLORS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def _write_metadata(data_dir, name, sizes):
    """The dataset_info.json tfds writes when preparing, as tfds's mock_data expects."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0, filename_template=None)
        for s, n in sizes.items()
    ]))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)


@pytest.fixture
def metadata(tmp_path):
    """The data_dir holding the mocked datasets' metadata."""
    return str(tmp_path / "metadata")


@pytest.fixture
def mocked(metadata):
    """mocked(name, sizes): tfds.testing.mock_data with that dataset's metadata on disk."""

    def mock(name, sizes, num_examples=6):
        _write_metadata(metadata, name, sizes)
        return tfds.testing.mock_data(num_examples=num_examples, data_dir=metadata)

    return mock


def _dominant(images):
    """Name of the colour each image mostly is."""
    names = list(COLORS)
    means = np.asarray(images).reshape(len(images), -1, 3).mean(axis=1)
    return [names[int(np.argmax(m))] for m in means]


# ------------------------------------------------------------------ tfds mock data


def test_mnist_through_mock_data(specs, mocked, metadata, tmp_path):
    cache = str(tmp_path / "cache")
    with mocked("mnist", {"train": 60, "test": 10}):
        assert specs["mnist"].check(data_dir=metadata) == []
        data = specs["mnist"].load(data_dir=metadata, cache_dir=cache)
        assert data.name == "mnist" and data.domain == "handwriting"
        assert data.class_names == tuple("0123456789")
        assert data.info["tfds_splits"] == {"train": "train[:90%]", "valid": "train[90%:]",
                                            "test": "test"}
        assert data.info["split_sizes"] == {"train": 6, "valid": 6, "test": 6}
        on_disk = data.splits["train"].images(32)
        assert isinstance(on_disk, DiskArray)  # decoded into a file, not held in memory
        images = np.asarray(on_disk)
        assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
        assert (images[..., 0] == images[..., 1]).all()  # gray digits, made RGB
        assert data.splits["train"].labels.max() < 10
        assert data.info["image_cache"] == {"train": "miss"}

        again = specs["mnist"].load(data_dir=metadata, cache_dir=cache)
        assert np.array_equal(again.splits["train"].images(32), images)
        assert again.info["image_cache"] == {"train": "hit"}


def test_cifar100_coarse_labels(specs, mocked, metadata, tmp_path):
    with mocked("cifar100", {"train": 50, "test": 10}, num_examples=8):
        data = specs["cifar100-coarse"].load(data_dir=metadata, cache_dir=str(tmp_path))
    assert data.num_classes == 20  # names come with the prepared data, not with the mock
    assert all(split.labels.max() < 20 for split in data.splits.values())
    assert data.imagenet_classes is None


def test_cats_vs_dogs_train_only_split_and_imagenet_classes(specs, mocked, metadata, tmp_path):
    with mocked("cats_vs_dogs", {"train": 100}, num_examples=4):
        data = specs["cats_vs_dogs"].load(data_dir=metadata, cache_dir=str(tmp_path))
        images = data.splits["test"].images(16)
    assert data.info["tfds_splits"] == {"train": "train[:70%]", "valid": "train[70%:85%]",
                                        "test": "train[85%:]"}
    assert data.imagenet_classes == {"cat": (281, 282, 283, 284, 285),
                                     "dog": tuple(range(151, 269))}
    assert images.shape == (4, 16, 16, 3)


def test_imagenette_readable_names_and_imagenet_indices(specs, mocked, metadata, tmp_path):
    with mocked("imagenette/320px-v2", {"train": 20, "validation": 10}, num_examples=2):
        data = specs["imagenette"].load(data_dir=metadata, cache_dir=str(tmp_path))
    assert data.class_names[0] == "tench" and data.imagenet_classes["parachute"] == (701,)
    assert data.info["tfds_splits"]["test"] == "validation"
    assert data.info["source"] == "tfds:imagenette/320px-v2/1.0.0"


def test_generic_tfds_with_options(specs, mocked, metadata, tmp_path):
    # class names come with the prepared data; the mock only knows '0'..'9'
    cifar = {"0": 404, "1": 436, "2": 7, "3": "281-285", "4": 352,
             "5": "151-268", "6": 30, "7": 339, "8": 510, "9": 867}
    options = {**specs["tfds"].options, "tfds_name": "cifar10", "domain": "natural-photo",
               "imagenet_classes": cifar, "cache_dir": str(tmp_path), "data_dir": metadata,
               "splits": {"train": "train[:50%]", "valid": "train[50%:]", "test": "test"}}
    with mocked("cifar10", {"train": 40, "test": 10}, num_examples=3):
        assert specs["tfds"].check(**options) == []
        data = specs["tfds"].load(**options)
        assert data.name == "tfds" and data.imagenet_classes["8"] == (510,)
        assert data.splits["valid"].subset([2, 0]).images(8).shape == (2, 8, 8, 3)
        bad = {**options, "imagenet_classes": {"plane": 404}}
        assert "unknown class name(s) 'plane'" in specs["tfds"].check(**bad)[0]
        named = specs["cifar10"].load(data_dir=metadata, cache_dir=str(tmp_path))
        assert named.imagenet_classes is None  # the built-in mapping needs the real names


def test_bad_splits_option(specs, mocked, metadata, tmp_path):
    with mocked("mnist", {"train": 60, "test": 10}):
        for splits, message in [({"train": "train", "test": "test"}, "option splits must be"),
                                ({"train": "train", "valid": "dev", "test": "test"},
                                 "splits\\[valid\\] = 'dev' names no split")]:
            problems = specs["mnist"].check(data_dir=metadata, splits=splits)
            assert len(problems) == 1 and "['train', 'test']" in problems[0]
            with pytest.raises(PluginError, match=message):
                specs["mnist"].load(data_dir=metadata, splits=splits, cache_dir=str(tmp_path))


# ------------------------------------------------------------------ prepared from local files


@pytest.fixture(scope="session")
def tiny_colors(tmp_path_factory):
    """A real prepared tfds dataset (tfrecords + dataset_info.json) from local PNG/JPEG files."""
    base = tmp_path_factory.mktemp("tiny_colors")
    examples = {"train": [], "test": []}
    for split, count in (("train", 10), ("test", 3)):
        for label, (name, color) in enumerate(COLORS.items()):
            for i in range(count):
                path = base / "files" / f"{split}-{name}-{i}.{'jpg' if i % 2 else 'png'}"
                path.parent.mkdir(exist_ok=True)
                Image.new("RGB", (20 + 7 * i, 30 + 5 * label), color).save(path)
                examples[split].append((path.stem, {"image": str(path), "label": label}))
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(),
        "label": tfds.features.ClassLabel(names=list(COLORS)),
    })
    tfds.dataset_builders.store_as_tfds_dataset(
        name="tlbench_tiny_colors", version="1.0.0", features=features,
        split_datasets=examples, data_dir=str(base / "tfds"),
    )
    return base / "tfds"


def test_prepared_dataset_streams_labels_and_images_in_step(specs, tiny_colors, tmp_path):
    options = {"tfds_name": "tlbench_tiny_colors", "data_dir": str(tiny_colors),
               "cache_dir": str(tmp_path / "cache")}
    assert specs["tfds"].check(**options) == []
    data = specs["tfds"].load(**options)
    assert data.class_names == ("red", "green", "blue")
    assert data.info["split_sizes"] == {"train": 27, "valid": 3, "test": 9}
    for split in data.splits.values():
        images = split.images(12, "bicubic")
        assert images.shape == (len(split), 12, 12, 3)
        assert _dominant(images) == [data.class_names[i] for i in split.labels]

    train = data.splits["train"]
    part = train.subset([20, 3, 11])
    assert part.labels.tolist() == train.labels[[20, 3, 11]].tolist()
    assert np.array_equal(part.images(12, "bicubic"), train.images(12, "bicubic")[[20, 3, 11]])
    assert part.fingerprint == train.subset([20, 3, 11]).fingerprint != train.fingerprint
    assert part.subset([1]).fingerprint == train.subset([3]).fingerprint

    entries = ArrayCache(tmp_path / "cache").info()["entries"]
    assert entries == 3 + 3 + 1  # split indexes, split images, the subset's images
    again = specs["tfds"].load(**options)
    again.splits["test"].images(12, "bicubic")
    assert again.info["image_cache"] == {"test": "hit"}
    assert ArrayCache(tmp_path / "cache").info()["entries"] == entries


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """A prepared tfds dataset with COCO's object features; boxes are coloured rectangles."""
    base = tmp_path_factory.mktemp("tiny_coco")
    names = ["person", "car", "dog"]
    boxes = [  # (left, top, right, bottom) in pixels of a 100x80 image, label, crowd
        ((10, 10, 50, 40), 0, False),
        ((60, 20, 95, 75), 1, False),
        ((0, 50, 5, 60), 2, False),  # 5 px wide: too small
        ((30, 45, 70, 78), 2, True),  # crowd
    ]
    palette = [(230, 20, 20), (20, 230, 20), (20, 20, 230)]
    examples = {"train": [], "validation": []}
    for split, count in (("train", 2), ("validation", 4)):
        for i in range(count):
            image = Image.new("RGB", (100, 80), (128, 128, 128))
            for (left, top, right, bottom), label, _ in boxes:
                image.paste(palette[label], (left, top, right, bottom))
            path = base / f"{split}-{i}.jpg"
            image.save(path, quality=95)
            objects = {
                "bbox": [tfds.features.BBox(top / 80, left / 100, bottom / 80, right / 100)
                         for (left, top, right, bottom), _, _ in boxes],
                "label": [label for _, label, _ in boxes],
                "is_crowd": [crowd for _, _, crowd in boxes],
            }
            examples[split].append((f"{split}{i}", {"image": str(path), "objects": objects}))
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(),
        "objects": tfds.features.Sequence({
            "bbox": tfds.features.BBoxFeature(),
            "label": tfds.features.ClassLabel(names=names),
            "is_crowd": tfds.features.Tensor(shape=(), dtype=np.bool_),
        }),
    })
    tfds.dataset_builders.store_as_tfds_dataset(
        name="tlbench_tiny_coco", version="1.0.0", features=features,
        split_datasets=examples, data_dir=str(base / "tfds"),
    )
    return base / "tfds"


def test_coco_crops_from_a_prepared_detection_dataset(specs, tiny_coco, tmp_path):
    options = {**specs["coco-crops"].options, "tfds_name": "tlbench_tiny_coco",
               "data_dir": str(tiny_coco), "cache_dir": str(tmp_path), "min_size": 10,
               "margin": 0.0}
    assert specs["coco-crops"].check(**options) == []
    data = specs["coco-crops"].load(**options)
    assert data.class_names == ("person", "car", "dog")
    assert data.info["tfds_splits"] == {"train": "train", "valid": "validation[:50%]",
                                        "test": "validation[50%:]"}
    assert data.info["split_sizes"] == {"train": 4, "valid": 4, "test": 4}  # 2 boxes each
    train = data.splits["train"]
    assert sorted(train.labels.tolist()) == [0, 0, 1, 1]
    assert sorted(map(tuple, train.rows[:, 1:5].tolist())) == [(10, 10, 50, 40)] * 2 + [
        (60, 20, 95, 75)] * 2
    images = train.images(16)
    red_or_green = ["red" if label == 0 else "green" for label in train.labels]
    assert _dominant(images) == red_or_green


def test_crop_margin_widens_and_clips(specs, tiny_coco, tmp_path):
    options = {"tfds_name": "tlbench_tiny_coco", "data_dir": str(tiny_coco),
               "cache_dir": str(tmp_path), "min_size": 10, "margin": 0.25}
    data = specs["coco-crops"].load(**options)
    boxes = sorted(map(tuple, data.splits["valid"].rows[:, 1:5].tolist()))
    assert boxes[0] == (0, 2, 60, 48)  # 40x30 box widened by 10 and 7.5 px
    assert boxes[-1] == (51, 6, 100, 80)  # clipped at the image border
    with pytest.raises(PluginError, match="option margin"):
        specs["coco-crops"].load(**{**options, "margin": -1})
    assert "option min_size" in specs["coco-crops"].check(**{**options, "min_size": 0})[0]


# ------------------------------------------------------------------ not prepared: fail fast


@pytest.mark.parametrize("name, hint", [
    ("mnist", "`tfds build mnist --data_dir {dir}`"),
    ("imagenet2012_subset", "`tfds build imagenet2012_subset/1pct --data_dir {dir}`"),
    ("coco-crops", "`tfds build coco/2017 --data_dir {dir}`"),
    ("open-images-crops", "`tfds build open_images_v4/original --data_dir {dir}`"),
])
@pytest.mark.parametrize("started_folder", [False, True])
@pytest.mark.timeout(120)  # no network is touched; the bound covers importing TensorFlow
def test_not_prepared_fails_fast_with_the_prepare_command(specs, tmp_path, name, hint,
                                                          started_folder):
    if started_folder:  # an interrupted `tfds build` leaves the dataset folder behind
        (tmp_path / hint.split()[2].split("/")[0]).mkdir()
    problems = specs[name].check(data_dir=str(tmp_path))
    with pytest.raises(PluginError) as raised:
        specs[name].load(data_dir=str(tmp_path), cache_dir=str(tmp_path))
    assert problems == [str(raised.value)]
    assert hint.format(dir=tmp_path) in problems[0] and "not prepared" in problems[0]
    assert "--manual_dir" in problems[0] and "cannot be downloaded now (http://127.0.0.1:9/: unreachable" in problems[0]
    if started_folder:
        assert "has no dataset_info.json" in problems[0]


def test_data_dir_from_environment(specs, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    problem = specs["cifar10"].check()[0]
    assert f"--data_dir {tmp_path}" in problem and str(tmp_path / "cifar10") in problem


def test_unknown_tfds_name_suggests_close_ones(specs, tmp_path):
    problem = specs["tfds"].check(tfds_name="cifar11", data_dir=str(tmp_path))[0]
    assert "no dataset 'cifar11'" in problem and "cifar10" in problem
    assert "option tfds_name is required" in specs["tfds"].check()[0]


def test_bad_config_lists_the_configs(specs):
    problem = specs["imagenette"].check(config="1000px")[0]
    assert "no config '1000px'" in problem and "320px-v2" in problem


# ------------------------------------------------------------------ online: downloaded once


class TlbenchTinyShapes(tfds.core.GeneratorBasedBuilder):
    """A tfds builder whose data lives behind a URL, like the catalog's (set ``URL`` first)."""

    VERSION = tfds.core.Version("1.0.0")
    URL = ""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["red", "blue"]),
        }))

    def _split_generators(self, dl_manager):
        path = dl_manager.download_and_extract(self.URL)
        return {split: self._generate_examples(path / split) for split in ("train", "test")}

    def _generate_examples(self, path):
        for file in sorted(path.glob("*/*.png")):
            yield f"{file.parent.name}-{file.name}", {"image": file, "label": file.parent.name}


@pytest.fixture
def shapes_server(tmp_path):
    """A local HTTP server with shapes.zip (train: 10 per class, test: 3); yields (url, GET paths)."""
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "shapes.zip", "w") as archive:
        for split, count in (("train", 10), ("test", 3)):
            for name in ("red", "blue"):
                for i in range(count):
                    png = io.BytesIO()
                    Image.new("RGB", (12 + i, 10), COLORS[name]).save(png, "PNG")
                    archive.writestr(f"{split}/{name}/{i}.png", png.getvalue())
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", requested
    server.shutdown()
    server.server_close()


def test_online_a_missing_dataset_is_downloaded_once_then_read_offline(specs, tmp_path, monkeypatch, shapes_server):
    url, requested = shapes_server
    monkeypatch.setattr(tfds_source, "PROBE_URL", url)  # the probe gets an answer: online
    monkeypatch.setattr(TlbenchTinyShapes, "URL", url + "shapes.zip")
    options = {"tfds_name": "tlbench_tiny_shapes", "data_dir": str(tmp_path / "tfds")}

    assert specs["tfds"].check(**options) == []  # accepted, and nothing fetched to check it
    assert requested == []
    data = specs["tfds"].load(**options, cache_dir=str(tmp_path / "cache"))
    assert requested == ["/shapes.zip"]
    assert data.class_names == ("red", "blue")
    assert data.info["split_sizes"] == {"train": 18, "valid": 2, "test": 6}
    test = data.splits["test"]
    assert _dominant(test.images(8)) == [data.class_names[i] for i in test.labels]

    monkeypatch.setattr(tfds_source, "PROBE_URL", "http://127.0.0.1:9/")  # offline now
    again = specs["tfds"].load(**options, cache_dir=str(tmp_path / "cache"))
    assert np.array_equal(again.splits["test"].labels, test.labels) and requested == ["/shapes.zip"]


def test_online_a_failed_download_names_the_dataset_and_the_manual_way(specs, tmp_path, monkeypatch, shapes_server):
    url, requested = shapes_server
    monkeypatch.setattr(tfds_source, "PROBE_URL", url)
    monkeypatch.setattr(TlbenchTinyShapes, "URL", url + "moved.zip")  # the server answers 404
    with pytest.raises(PluginError) as raised:
        specs["tfds"].load(tfds_name="tlbench_tiny_shapes", data_dir=str(tmp_path / "tfds"),
                           cache_dir=str(tmp_path / "cache"))
    message = str(raised.value)
    assert message.startswith("tfds: downloading and preparing tfds dataset tlbench_tiny_shapes into")
    assert "404" in message and f"`tfds build tlbench_tiny_shapes --data_dir {tmp_path / 'tfds'}`" in message
    assert "/moved.zip" in requested
