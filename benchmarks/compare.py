"""Side-by-side benchmarks of whole processes: each comparison runs two sides in alternated
rounds (A, B, A, B, ...) and reports the medians and their ratio A/B against its goal.

Every side is one or more commands, timed from start to exit, imports included. Peak memory
is the largest resident set of any process of that side, as the OS counts it (``ru_maxrss``
of the waited-for children: each side runs under its own child process). Caches and run
directories are fresh per round (a cold cache). Synthetic image folders are generated here:
for memory and time, pixel content does not matter.

Run:  .venv/bin/python benchmarks/compare.py [--size full|ci] [--rounds N] [--only NAME ...]
Writes benchmarks/results/<size>.json and .md (or --out DIR), and the cost curve plot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOGS = REPO.parent / "shared" / "data" / "dogs-vs-cats"
TLBENCH = [str(Path(sys.executable).parent / "tlbench")]

# full: the sizes the issue names; ci: every comparison runs, in about two minutes
SIZES = {
    "full": {"image_size": 224, "epochs": 20, "memory_images": (400, 4000), "curve_images": (400, 1600, 6400),
             "curve_size": 128, "sharing_epochs": 3, "sharing_depths": [1, 2, 3], "rounds": 3, "isolation": "quickstart"},
    "ci": {"image_size": 32, "epochs": 2, "memory_images": (20, 80), "curve_images": (20, 40, 80),
           "curve_size": 32, "sharing_epochs": 1, "sharing_depths": [1], "rounds": 1,
           "isolation": "project 1's extractor and finetune"},
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


@dataclass
class Comparison:
    """Two sides measured alternately; ``metric`` picks what the goal's ratio divides."""

    name: str
    goals: list[tuple[str, float]]  # (goal, the most the ratio A/B may be)
    sides: dict[str, Callable[[Path], list[list[str]]]]  # label -> commands in a fresh folder
    metric: str = "seconds"  # seconds | peak_mib | epoch_seconds
    accuracy: Callable[[Path, str], float | None] | None = None
    epoch_seconds: Callable[[Path, str], float | None] | None = None  # needed for metric epoch_seconds


def _children_peak_mib() -> float:
    """The largest RSS of any waited-for descendant so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure(comparison: Comparison, rounds: int, scratch: Path) -> dict:
    measured = {label: Measured() for label in comparison.sides}
    for round_index in range(rounds):
        for label, commands_for in comparison.sides.items():
            work = scratch / f"{comparison.name}-{label}-{round_index}".replace(" ", "_")
            work.mkdir(parents=True)
            seconds, peak, stdout = _isolated(commands_for(work), work, label)
            accuracy = comparison.accuracy(work, stdout) if comparison.accuracy else None
            epoch = comparison.epoch_seconds(work, stdout) if comparison.epoch_seconds else None
            side = measured[label]
            side.seconds.append(seconds)
            side.peak_mib.append(peak)
            if accuracy is not None:
                side.accuracy.append(accuracy)
            if epoch is not None:
                side.epoch_seconds.append(epoch)
            shutil.rmtree(work, ignore_errors=True)
            print(f"  {comparison.name} / {label} round {round_index + 1}: {seconds:.1f} s, {peak:.0f} MiB"
                  + (f", accuracy {accuracy:.4f}" if accuracy is not None else "")
                  + (f", {epoch:.3f} s/epoch" if epoch is not None else ""), flush=True)
    (a_label, a), (b_label, b) = ((label, m.summary()) for label, m in measured.items())
    ratio = a[comparison.metric] / b[comparison.metric]
    return {"name": comparison.name, "metric": comparison.metric, "a": {"label": a_label, **a},
            "b": {"label": b_label, **b}, "ratio": round(ratio, 3),
            "goals": [{"goal": goal, "limit": limit, "met": ratio <= limit} for goal, limit in comparison.goals]}


def _isolated(commands, work, label) -> tuple[float, float, str]:
    """One side in a child Python process, so that RUSAGE_CHILDREN's peak is this side's alone:
    its seconds, peak MiB and last command's stdout."""
    payload = json.dumps({"commands": commands, "work": str(work)})
    probe = subprocess.run([sys.executable, __file__, "--side", payload], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(f"benchmark side '{label}' failed:\n{probe.stderr[-4000:]}")
    seconds, peak = json.loads(probe.stdout.strip().splitlines()[-1])
    return seconds, peak, (work / "stdout.txt").read_text()


def _side_main(payload: str) -> None:
    spec = json.loads(payload)
    start, work = time.perf_counter(), Path(spec["work"])
    for command in spec["commands"]:
        done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(f"{' '.join(command)} exited {done.returncode}\n{done.stderr[-4000:]}")
            raise SystemExit(1)
        (work / "stdout.txt").write_text(done.stdout)
    print(json.dumps([time.perf_counter() - start, _children_peak_mib()]))


# --- the sides -------------------------------------------------------------------------------

def grid_file(work: Path, name: str, root: Path, strategies: list, epochs: int, image_size: int,
              backbone: str = "torchvision/mobilenet_v2") -> Path:
    grid = {"name": name, "datasets": [{"name": "images", "plugin": "folder", "root": str(root),
                                        "image_size": image_size}],
            "backbones": [backbone], "strategies": strategies, "seeds": [0],
            "train": {"epochs": epochs, "batch_size": 32, "lr": 0.001}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def tlbench_run(work: Path, grid: Path, out: str = "run", cache: str = "cache") -> list[str]:
    return [*TLBENCH, "run", "--grid", str(grid), "--out", str(work / out), "--cache-dir", str(work / cache)]


def run_metric(name: str) -> Callable[[Path, str], float | None]:
    """The mean of a metric (``test_accuracy``, ``epoch_seconds``) over the run directories' finished cells."""
    def read(work: Path, _stdout: str) -> float | None:
        found = [json.loads(line)["metrics"][name] for path in work.glob("*/runs.jsonl")
                 for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("status") == "ok"]
        return float(np.mean(found)) if found else None
    return read


def loop_metric(name: str) -> Callable[[Path, str], float]:
    """A metric of the hand-written loop's JSON line."""
    return lambda _work, stdout: json.loads(stdout.strip().splitlines()[-1])[name]


def synthetic_folder(root: Path, train_images: int, size: int = 256, classes: int = 2) -> Path:
    """train/valid/test class folders of random JPEGs; valid and test stay small and fixed."""
    from PIL import Image

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


def comparisons(size: dict, data: Path) -> list[Comparison]:
    s, epochs = size["image_size"], size["epochs"]
    project1 = lambda work, e=epochs: [tlbench_run(work, grid_file(work, "project1", DOGS, ["extractor"], e, s))]  # noqa: E731
    loop = lambda work, e=epochs, *extra: [[sys.executable, str(HERE / "handwritten_loop.py"), str(DOGS),  # noqa: E731
                                            "--epochs", str(e), "--image-size", str(s), *extra]]
    depth, train_from = 2, 14  # torchvision/mobilenet_v2's last 2 blocks are features[14:]
    suffix_run = lambda work: [tlbench_run(work, grid_file(  # noqa: E731
        work, "suffix", DOGS, [{"name": "finetune", "depth": depth}], size["sharing_epochs"], s))]
    suffix_loop = lambda work: loop(work, size["sharing_epochs"], "--train-from", str(train_from))  # noqa: E731
    run_accuracy = run_metric("test_accuracy")
    accuracy = _either(run_accuracy, loop_metric("test_accuracy"))
    small, large = size["memory_images"]
    depths = size["sharing_depths"]
    sharing = ["extractor", {"name": "finetune", "depth": depths}]
    separate = ["extractor", *({"name": "finetune", "depth": d} for d in depths)]
    sharing_goal = (f"5. extractor + finetune at {len(depths)} depth{'s' * (len(depths) > 1)} as one grid at least "
                    f"1.5x faster than as {len(separate)} separate runs, each with its own cold cache")
    one_grid = lambda work: [tlbench_run(work, grid_file(work, "shared", DOGS, sharing, size["sharing_epochs"], s))]  # noqa: E731
    separate_runs = lambda work: [tlbench_run(work, grid_file(work, f"alone{i}", DOGS, [strategy], size["sharing_epochs"], s),  # noqa: E731
                                          out=f"run{i}", cache=f"cache{i}")
                              for i, strategy in enumerate(separate)]
    isolation_grid = HERE / "quickstart.yaml" if size["isolation"] == "quickstart" else None
    isolated = lambda work, *extra: [[*tlbench_run(work, isolation_grid or grid_file(  # noqa: E731
        work, "isolation", DOGS, ["extractor", {"name": "finetune", "depth": 2}], epochs, s)), *extra]]
    memory_side = lambda n: lambda work: [tlbench_run(work, grid_file(  # noqa: E731
        work, "memory", synthetic_folder(data / f"memory-{n}", n), ["extractor"], 1, s))]
    return [
        Comparison("harness vs hand-written loop",
                   [(f"1. project 1 ({s} px, {epochs} epochs, cold cache) at most 1.05x the loop", 1.05),
                    ("2. the same default run at least 1.5x faster than the loop", 1 / 1.5)],
                   {"tlbench run": project1, "hand-written loop": loop}, accuracy=accuracy),
        Comparison("fine-tuning epoch", [(f"4. an epoch of finetune at depth {depth} on its cached prefix within 20% of a "
                                          "bare loop over the trainable suffix", 1.2)],
                   {"tlbench run": suffix_run, "bare suffix loop": suffix_loop}, metric="epoch_seconds",
                   accuracy=accuracy,
                   epoch_seconds=_either(run_metric("epoch_seconds"), loop_metric("epoch_seconds"))),
        Comparison("feature cache", [(f"3. a cold run of {epochs} extractor epochs at most 1.1x a cold run of 1", 1.1)],
                   {f"{epochs} epochs": project1, "1 epoch": lambda work: project1(work, 1)}, accuracy=run_accuracy),
        Comparison("grid sharing", [(sharing_goal, 1 / 1.5)],
                   {"one grid": one_grid, f"{len(separate)} separate runs": separate_runs}, accuracy=run_accuracy),
        Comparison("memory flat in the data", [(f"6. peak RSS of an extractor run on {large} training images at most "
                                                f"1.05x that on {small}", 1.05)],
                   {f"{large} images": memory_side(large), f"{small} images": memory_side(small)}, metric="peak_mib"),
        Comparison("cell isolation", [(f"issue 12: {size['isolation']} in a worker subprocess (local) at most 1.05x "
                                       "in-process (inline)", 1.05)],
                   {"local": isolated, "inline": lambda work: isolated(work, "--executor", "inline")},
                   accuracy=run_accuracy),
    ]


def _either(for_run, for_loop):
    return lambda work, stdout: for_run(work, stdout) if any(work.glob("*/runs.jsonl")) else for_loop(work, stdout)


def cost_curve(size: dict, data: Path, out: Path) -> dict:
    """Cell wall time against training images (one cold extractor run each), time per image."""
    points = []
    for n in size["curve_images"]:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            grid = grid_file(work, "curve", synthetic_folder(data / f"memory-{n}", n), ["extractor"], 1, size["curve_size"])
            subprocess.run(tlbench_run(work, grid), check=True, capture_output=True)
            record = json.loads((work / "run" / "runs.jsonl").read_text().splitlines()[-1])
            seconds = record["metrics"]["wall_seconds"]
        points.append({"train_images": n, "cell_seconds": round(seconds, 3), "ms_per_image": round(1000 * seconds / n, 3)})
        print(f"  cost curve: {n} images, {seconds:.1f} s", flush=True)
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
        scratch, data = Path(tmp) / "runs", Path(tmp) / "data"
        wanted = lambda name: not args.only or any(o in name for o in args.only)  # noqa: E731
        for comparison in comparisons(size, data):
            if wanted(comparison.name):
                print(f"{comparison.name}: {'; '.join(goal for goal, _ in comparison.goals)}", flush=True)
                results.append(measure(comparison, rounds, scratch))
        if wanted("cost curve"):
            results.append(cost_curve(size, data, args.out / f"cost_curve-{args.size}.png"))
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
