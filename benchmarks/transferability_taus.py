"""Each transferability score's weighted Kendall tau per case, its mean over the cases, and the
task-agnostic baseline (rank the backbones by their ImageNet top-1), from a run of
benchmarks/transferability.yaml (issue 30, item 2). The report gives the same taus per case; this
adds the baseline, the means and each case's accuracy spread across the backbones.

Run:  python benchmarks/transferability_taus.py results/reference/transferability
Writes RUN/taus.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from scipy.stats import weightedtau

from tlbench.report.frame import SCORES, read_run, series_stats
from tlbench.report.verdicts import transferability_taus

# ImageNet top-1 (%) of the weights these backbones load offline: both MobileNetV2s load torchvision's
# checkpoint (its documented 71.878); the EfficientNet-Lites timm's results table (tf_efficientnet_lite0-2)
IMAGENET_TOP1 = {"timm/mobilenetv2_100": 71.878, "torchvision/mobilenet_v2": 71.878,
                 "timm/tf_efficientnet_lite0": 74.83, "timm/tf_efficientnet_lite1": 76.64,
                 "timm/tf_efficientnet_lite2": 77.46}
BASELINE = "ImageNet top-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory of benchmarks/transferability.yaml")
    run = parser.parse_args().run
    taus = transferability_taus(series_stats(read_run(run).cells))
    cases: dict[tuple[str, str], dict[str, float]] = {}
    points = {}  # per case, (backbone, score, accuracy): every score's taus share the backbones and accuracies
    for tau in taus:
        cases.setdefault((tau.dataset, tau.train_size), {})[SCORES[tau.score]] = tau.weighted_tau
        points[(tau.dataset, tau.train_size)] = tau.points
    spreads = {}
    for key, case in cases.items():
        accuracies = [accuracy for _, _, accuracy in points[key]]
        spreads[key] = max(accuracies) - min(accuracies)
        case[BASELINE] = float(weightedtau([IMAGENET_TOP1[b] for b, _, _ in points[key]], accuracies).statistic)
    columns = [*SCORES.values(), BASELINE]
    lines = ["| dataset | train size | accuracy spread | " + " | ".join(columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    lines += [f"| {d} | {s} | {spreads[(d, s)]:.3f} | " + " | ".join(f"{case[c]:.2f}" for c in columns) + " |"
              for (d, s), case in cases.items()]
    lines.append("| **mean** | | | " + " | ".join(f"**{statistics.mean(case[c] for case in cases.values()):.2f}**"
                                                 for c in columns) + " |")
    text = ("Weighted Kendall tau between each score and the backbones' accuracy (the report's ground truth), "
            f"per case, with the {BASELINE} order as a task-agnostic baseline; accuracy spread = best minus worst "
            "backbone.\n\n" + "\n".join(lines) + "\n")
    (run / "taus.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
