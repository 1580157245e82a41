"""Side-by-side benchmarks of whole processes: each comparison runs two sides in alternated
rounds (A, B, A, B, ...) and reports the medians and their ratio A/B against its goal.

Every side is one or more commands, timed from start to exit, imports included. Peak memory
is the largest resident set of any process of that side, as the OS counts it (``ru_maxrss``
of the waited-for children: each process runs under its own child process). Caches and run
directories are fresh per round (a cold cache). A process that two comparisons share (the
same command on the same grid) runs once per round and counts for both. Synthetic image
folders are generated here: for memory and time, pixel content does not matter.

Run:  .venv/bin/python benchmarks/compare.py [--size full|ci] [--rounds N] [--only NAME ...]
Writes benchmarks/results/<size>.json and .md (or --out DIR), and the cost curve plot.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOGS = REPO.parent / "shared" / "data" / "dogs-vs-cats"
TLBENCH = [str(Path(sys.executable).parent / "tlbench")]

# full: the sizes the issue names; ci: every comparison runs, with 10 processes of seconds each
SIZES = {
    "full": {"image_size": 224, "epochs": 20, "memory_images": (400, 4000), "curve_images": (400, 1600, 6400),
             "curve_size": 128, "sharing_epochs": 3, "sharing_depths": [1, 2, 3], "rounds": 3, "isolation": "quickstart",
             "photos_per_class": None},
    "ci": {"image_size": 32, "epochs": 2, "memory_images": (20, 80), "curve_images": (20, 40, 80),
           "curve_size": 32, "sharing_epochs": 1, "sharing_depths": [2], "rounds": 1,
           "isolation": "the grid-sharing grid", "photos_per_class": 20},
}


@dataclass
class Measured:
    """One side's rounds."""

    seconds: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {"seconds": round(statistics.median(self.seconds), 3), "peak_mib": round(max(self.peak_mib), 1),
                "test_accuracy": round(statistics.median(self.accuracy), 4) if self.accuracy else None,
                "epoch_seconds": round(statistics.median(self.epoch_seconds), 4) if self.epoch_seconds else None,
                "rounds": len(self.seconds)}


Reader = Callable[[list[Path]], "float | None"]  # a metric from the folders of a side's processes


@dataclass
class Comparison:
    """Two sides measured alternately; ``metric`` picks what the goal's ratio divides. A side
    is its commands, run one after another; :data:`WORK` in a command is its own folder."""

    name: str
    goals: list[tuple[str, float]]  # (goal, the most the ratio A/B may be)
    sides: dict[str, list[list[str]]]  # label -> commands
    metric: str = "seconds"  # seconds | peak_mib | epoch_seconds
    accuracy: Reader | None = None
    epoch_seconds: Reader | None = None  # needed for metric epoch_seconds
    prepare: Callable[[], object] = lambda: None  # makes the data its sides read


WORK = "<work>"  # in a command: the empty folder it runs in, where its run and cache go


class Measurement(NamedTuple):
    """One process of one round."""

    seconds: float
    peak_mib: float
    work: Path  # its folder: run directory, stdout.txt
    reused: bool  # measured earlier for another comparison


class Processes:
    """Runs each command once per round, in a fresh folder under its own child process (so
    that RUSAGE_CHILDREN's peak is its own). A command that several comparisons share (the
    same grid, the same flags) is measured once per round, and each of them reads that
    measurement: it is the same process either way."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.measured: dict[tuple, Measurement] = {}

    def run(self, command: list[str], round_index: int) -> Measurement:
        """``command`` in round ``round_index``, measured now or for an earlier comparison."""
        key = (tuple(command), round_index)
        if key in self.measured:
            return self.measured[key]._replace(reused=True)
        work = self.scratch / f"process-{len(self.measured)}"
        work.mkdir(parents=True)
        seconds, peak = _isolated([arg.replace(WORK, str(work)) for arg in command], work)
        for cache in work.glob("cache*"):  # cold caches can be large; the records stay
            shutil.rmtree(cache, ignore_errors=True)
        self.measured[key] = Measurement(seconds, peak, work, reused=False)
        return self.measured[key]

    def warm_up(self, comparison: Comparison) -> None:
        """Run ``comparison``'s first command once, unmeasured: the first process of a session
        reads the libraries, their .pyc files and the images from disk, and the round it
        falls in paid for that (17.9 s against 12.9 s for the same command a round later)."""
        comparison.prepare()
        self.run(next(iter(comparison.sides.values()))[0], round_index=-1)  # no round reads round -1


def _children_peak_mib() -> float:
    """The largest RSS of any waited-for descendant so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure(comparison: Comparison, rounds: int, processes: Processes) -> dict:
    comparison.prepare()
    measured = {label: Measured() for label in comparison.sides}
    for round_index in range(rounds):
        for label, commands in comparison.sides.items():
            runs = [processes.run(command, round_index) for command in commands]
            seconds, peak = sum(run.seconds for run in runs), max(run.peak_mib for run in runs)
            works = [run.work for run in runs]
            accuracy = comparison.accuracy(works) if comparison.accuracy else None
            epoch = comparison.epoch_seconds(works) if comparison.epoch_seconds else None
            side = measured[label]
            side.seconds.append(seconds)
            side.peak_mib.append(peak)
            if accuracy is not None:
                side.accuracy.append(accuracy)
            if epoch is not None:
                side.epoch_seconds.append(epoch)
            shared = sum(run.reused for run in runs)
            print(f"  {comparison.name} / {label} round {round_index + 1}: {seconds:.1f} s, {peak:.0f} MiB"
                  + (f", accuracy {accuracy:.4f}" if accuracy is not None else "")
                  + (f", {epoch:.3f} s/epoch" if epoch is not None else "")
                  + (f" ({shared} of {len(runs)} process{'es' * (len(runs) > 1)} measured above)" if shared else ""),
                  flush=True)
    (a_label, a), (b_label, b) = ((label, m.summary()) for label, m in measured.items())
    ratio = a[comparison.metric] / b[comparison.metric]
    return {"name": comparison.name, "metric": comparison.metric, "a": {"label": a_label, **a},
            "b": {"label": b_label, **b}, "ratio": round(ratio, 3),
            "goals": [{"goal": goal, "limit": limit, "met": ratio <= limit} for goal, limit in comparison.goals]}


def _isolated(command: list[str], work: Path) -> tuple[float, float]:
    """One command in a child Python process, so that RUSAGE_CHILDREN's peak is its alone: its
    seconds and peak MiB. Its stdout goes to ``work/stdout.txt``."""
    payload = json.dumps({"command": command, "work": str(work)})
    probe = subprocess.run([sys.executable, __file__, "--side", payload], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{probe.stderr[-4000:]}")
    seconds, peak = json.loads(probe.stdout.strip().splitlines()[-1])
    return seconds, peak


def _side_main(payload: str) -> None:
    spec = json.loads(payload)
    start, work, command = time.perf_counter(), Path(spec["work"]), spec["command"]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(f"{' '.join(command)} exited {done.returncode}\n{done.stderr[-4000:]}")
        raise SystemExit(1)
    (work / "stdout.txt").write_text(done.stdout)
    print(json.dumps([time.perf_counter() - start, _children_peak_mib()]))


# --- the sides -------------------------------------------------------------------------------

class Grids:
    """Grid files in one folder, named by their content: the same grid is the same file, so
    that comparisons running the same grid run the same command."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def file(self, root: Path, strategies: list, epochs: int, image_size: int,
             backbone: str = "torchvision/mobilenet_v2") -> Path:
        grid = {"datasets": [{"name": "images", "plugin": "folder", "root": str(root), "image_size": image_size}],
                "backbones": [backbone], "strategies": strategies, "seeds": [0],
                "train": {"epochs": epochs, "batch_size": 32, "lr": 0.001}}
        name = "bench-" + hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:12]
        path = self.folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, **grid}, sort_keys=False))
        return path


def tlbench_run(grid: Path, *extra: str) -> list[str]:
    return [*TLBENCH, "run", "--grid", str(grid), "--out", f"{WORK}/run", "--cache-dir", f"{WORK}/cache", *extra]


def records(works: list[Path]) -> list[dict]:
    """The finished cells' metrics in the run directories of ``works``."""
    return [record["metrics"] for work in works for path in work.glob("*/runs.jsonl")
            for record in map(json.loads, filter(str.strip, path.read_text().splitlines()))
            if record.get("status") == "ok"]


def metric(name: str) -> Reader:
    """The mean of a metric (``test_accuracy``, ``epoch_seconds``) over a side's finished cells, or
    the hand-written loop's JSON line where the side has no run directory."""
    def read(works: list[Path]) -> float | None:
        runs = [work for work in works if any(work.glob("*/runs.jsonl"))]
        found = ([metrics[name] for metrics in records(runs)] if runs else
                 [json.loads((work / "stdout.txt").read_text().strip().splitlines()[-1])[name] for work in works])
        return float(np.mean(found)) if found else None
    return read


def synthetic_folder(data: Path, train_images: int) -> Path:
    """Where :func:`make_synthetic_folder` writes ``train_images`` generated training images."""
    return data / f"images-{train_images}"


def make_synthetic_folder(data: Path, train_images: int, size: int = 256, classes: int = 2) -> Path:
    """train/valid/test class folders of random JPEGs; valid and test stay small and fixed."""
    from PIL import Image

    root = synthetic_folder(data, train_images)
    if root.exists():
        return root
    rng = np.random.default_rng(0)
    for split, count in (("train", train_images), ("valid", 20), ("test", 20)):
        for index in range(count):
            folder = root / split / f"class{index % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)  # blocky: JPEG-sized files
            Image.fromarray(pixels).resize((size, size)).save(folder / f"{index}.jpg", quality=90)
    return root


def photos(data: Path, per_class: int | None) -> Path:
    """dogs-vs-cats; with ``per_class``, a folder linking the first ``per_class`` photos of each
    class in each split (decoding all 756 would take most of a CI-size process)."""
    if per_class is None:
        return DOGS
    root = data / f"dogs-vs-cats-{per_class}"
    for folder in sorted(p for p in DOGS.glob("*/*") if p.is_dir()):  # split/class
        linked = root / folder.relative_to(DOGS)
        if not linked.exists():
            linked.mkdir(parents=True)
            for photo in sorted(folder.iterdir())[:per_class]:
                (linked / photo.name).symlink_to(photo)
    return root


def comparisons(size: dict, data: Path, grids: Grids) -> list[Comparison]:
    s, epochs, sharing_epochs = size["image_size"], size["epochs"], size["sharing_epochs"]
    root = photos(data, size["photos_per_class"])
    project1 = lambda e: tlbench_run(grids.file(root, ["extractor"], e, s))  # noqa: E731
    loop = lambda e, *extra: [sys.executable, str(HERE / "handwritten_loop.py"), str(root),  # noqa: E731
                              "--epochs", str(e), "--image-size", str(s), *extra]
    depth, train_from = 2, 14  # torchvision/mobilenet_v2's last 2 blocks are features[14:]
    finetune_alone = lambda d: tlbench_run(grids.file(root, [{"name": "finetune", "depth": d}], sharing_epochs, s))  # noqa: E731
    small, large = size["memory_images"]
    memory_side = lambda n: tlbench_run(grids.file(synthetic_folder(data, n), ["extractor"], 1, s))  # noqa: E731
    depths = size["sharing_depths"]
    one_grid = tlbench_run(grids.file(root, ["extractor", {"name": "finetune", "depth": depths}], sharing_epochs, s))
    separate = [tlbench_run(grids.file(root, ["extractor"], sharing_epochs, s)), *map(finetune_alone, depths)]
    sharing_goal = (f"5. extractor + finetune at {len(depths)} depth{'s' * (len(depths) > 1)} as one grid at least "
                    f"1.5x faster than as {len(separate)} separate runs, each with its own cold cache")
    isolated = one_grid if size["isolation"] == "the grid-sharing grid" else tlbench_run(HERE / "quickstart.yaml")
    accuracy = metric("test_accuracy")
    return [
        Comparison("harness vs hand-written loop",
                   [(f"1. project 1 ({s} px, {epochs} epochs, cold cache) at most 1.05x the loop", 1.05),
                    ("2. the same default run at least 1.5x faster than the loop", 1 / 1.5)],
                   {"tlbench run": [project1(epochs)], "hand-written loop": [loop(epochs)]}, accuracy=accuracy),
        Comparison("fine-tuning epoch", [(f"4. an epoch of finetune at depth {depth} on its cached prefix within 20% of a "
                                          "bare loop over the trainable suffix", 1.2)],
                   {"tlbench run": [finetune_alone(depth)],
                    "bare suffix loop": [loop(sharing_epochs, "--train-from", str(train_from))]},
                   metric="epoch_seconds", accuracy=accuracy, epoch_seconds=metric("epoch_seconds")),
        Comparison("feature cache", [(f"3. a cold run of {epochs} extractor epochs at most 1.1x a cold run of 1", 1.1)],
                   {f"{epochs} epochs": [project1(epochs)], "1 epoch": [project1(1)]}, accuracy=accuracy),
        Comparison("grid sharing", [(sharing_goal, 1 / 1.5)],
                   {"one grid": [one_grid], f"{len(separate)} separate runs": separate}, accuracy=accuracy),
        Comparison("memory flat in the data", [(f"6. peak RSS of an extractor run on {large} training images at most "
                                                f"1.05x that on {small}", 1.05)],
                   {f"{large} images": [memory_side(large)], f"{small} images": [memory_side(small)]}, metric="peak_mib",
                   prepare=lambda: [make_synthetic_folder(data, n) for n in (small, large)]),
        Comparison("cell isolation", [(f"{size['isolation']} in a worker subprocess (local) at most 1.05x "
                                       "in-process (inline)", 1.05)],
                   {"local": [isolated], "inline": [[*isolated, "--executor", "inline"]]}, accuracy=accuracy),
    ]


def cost_curve(size: dict, data: Path, grids: Grids, processes: Processes, out: Path) -> dict:
    """Cell wall time against training images (one cold extractor run each, in the first
    round's processes), time per image."""
    points = []
    for n in size["curve_images"]:
        command = tlbench_run(grids.file(make_synthetic_folder(data, n), ["extractor"], 1, size["curve_size"]))
        process = processes.run(command, 0)
        seconds = records([process.work])[-1]["wall_seconds"]
        points.append({"train_images": n, "cell_seconds": round(seconds, 3), "ms_per_image": round(1000 * seconds / n, 3)})
        print(f"  cost curve: {n} images, {seconds:.1f} s" + (" (the process measured above)" if process.reused else ""), flush=True)
    ratio = points[-1]["ms_per_image"] / points[-2]["ms_per_image"]
    _plot_curve(points, size["curve_size"], out)
    goal = (f"7. time per image at {points[-1]['train_images']} images within 15% of that at {points[-2]['train_images']} "
            f"({size['curve_size']} px, 1 extractor epoch)")
    return {"name": "cost curve", "points": points, "ratio": round(ratio, 3),
            "goals": [{"goal": goal, "limit": 1.15, "met": abs(ratio - 1) <= 0.15}]}


def _plot_curve(points: list[dict], image_size: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p["train_images"] for p in points], [p["cell_seconds"] for p in points], "o-")
    ax.set(xlabel="training images", ylabel="cell wall seconds", title=f"Extractor cell cost ({image_size} px, cold)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown(results: list[dict], size_name: str) -> str:
    lines = [f"Size `{size_name}`, `benchmarks/compare.py --size {size_name}`; medians of alternated rounds, peak RSS "
             "the largest of the rounds.", "", "| comparison | A | B | A/B | goal | met |", "|---|---|---|---|---|---|"]
    for r in results:
        if "points" in r:
            sides = [", ".join(f"{p['train_images']} images: {p['cell_seconds']} s ({p['ms_per_image']} ms/image)"
                               for p in r["points"]), ""]
        else:
            sides = [f"{side['label']}: {side['seconds']} s, {side['peak_mib']:.0f} MiB"
                     + (f", accuracy {side['test_accuracy']}" if side["test_accuracy"] is not None else "")
                     + (f", {side['epoch_seconds']} s/epoch" if side.get("epoch_seconds") is not None else "")
                     for side in (r["a"], r["b"])]
        for goal in r["goals"]:
            lines.append(f"| {r['name']} | {sides[0]} | {sides[1]} | {r['ratio']} | {goal['goal']} | "
                         f"{'yes' if goal['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Side-by-side benchmarks of whole tlbench processes.")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full: the issue's sizes; ci: tiny")
    parser.add_argument("--rounds", type=int, help="alternated rounds per comparison (default: 3 full, 1 ci)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="comparisons whose name contains NAME")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the JSON and Markdown go")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return _side_main(args.side)
    size = SIZES[args.size]
    rounds = args.rounds or size["rounds"]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="tlbench-bench-") as tmp:
        processes, data, grids = Processes(Path(tmp) / "runs"), Path(tmp) / "data", Grids(Path(tmp) / "grids")
        wanted = lambda name: not args.only or any(o in name for o in args.only)  # noqa: E731
        selected = [comparison for comparison in comparisons(size, data, grids) if wanted(comparison.name)]
        if selected:
            processes.warm_up(selected[0])
        for comparison in selected:
            print(f"{comparison.name}: {'; '.join(goal for goal, _ in comparison.goals)}", flush=True)
            results.append(measure(comparison, rounds, processes))
        if wanted("cost curve"):
            results.append(cost_curve(size, data, grids, processes, args.out / f"cost_curve-{args.size}.png"))
    results = _merged(args.out / f"{args.size}.json", results)
    (args.out / f"{args.size}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{args.size}.md").write_text(markdown(results, args.size))
    print(markdown(results, args.size))


def _merged(path: Path, new: list[dict]) -> list[dict]:
    """Earlier results of comparisons not measured this time (``--only``) are kept, in order."""
    earlier = json.loads(path.read_text()) if path.exists() else []
    fresh = {r["name"]: r for r in new}
    kept = [fresh.pop(r["name"], r) for r in earlier]
    return kept + list(fresh.values())


if __name__ == "__main__":
    main()
