"""Memory bounded whatever a file holds: images just under Pillow's decompression-bomb limit, and
``runs.jsonl`` lines of any length or number (issue 27). Peak RSS is measured in a subprocess."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
from PIL import Image

from support import PEAK_MIB, tlbench
from tlbench.data.splits import FileSplit, _decode_file, pixel_budget

DECODE = textwrap.dedent(f"""
    import json, sys
    from tlbench.data.splits import FileSplit
    split = FileSplit(sys.argv[2:], list(range(len(sys.argv) - 2)))
    images = split.images(int(sys.argv[1]))
    print(json.dumps({{"rows": len(images), "labels": split.labels.tolist(), "skipped": split.skipped,
                      "peak_mib": {PEAK_MIB}}}))
""")


def streamed_png(path, width: int, height: int, bit_depth: int, colour_type: int, palette: bytes = b"") -> None:
    """A PNG of black rows, compressed a row at a time: a few hundred KB for 13000 x 13000."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    channels = {0: 1, 3: 1}[colour_type]
    row = b"\0" * (1 + width * channels * bit_depth // 8)  # filter byte, then zeros
    squeeze = zlib.compressobj(9)
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + (chunk(b"PLTE", palette) if palette else b"")
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def decode_in_subprocess(size: int, *paths, threads: int = 2) -> dict:
    result = subprocess.run([sys.executable, "-c", DECODE, str(size), *map(str, paths)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TLBENCH_THREADS": str(threads)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_16_bit_and_palette_pngs_just_under_pillows_limit_are_skipped_in_bounded_memory(tmp_path):
    """Before: 3.1 GB for one 16-bit PNG, 6.0 GB for two on two threads, 1.7 GB for the palette PNG."""
    deep, deep_too, palette = tmp_path / "deep.png", tmp_path / "deep-too.png", tmp_path / "palette.png"
    streamed_png(deep, 13000, 13000, 16, 0)
    deep_too.write_bytes(deep.read_bytes())
    streamed_png(palette, 13000, 13000, 8, 3, palette=bytes(range(6)))
    assert deep.stat().st_size < 400_000 and Image.open(deep).mode == "I;16" and Image.open(palette).mode == "P"
    normal = tmp_path / "normal.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(normal)
    decoded = decode_in_subprocess(32, deep, normal, deep_too, palette)
    assert decoded["peak_mib"] < 1500, decoded
    assert decoded["rows"] == 1 and decoded["labels"] == [1]  # the normal image, with its own label
    assert decoded["skipped"] == [f"{p} (13000 x 13000 pixels, over the pixel budget of 25,000,000 for 32-pixel "
                                  "images; shrink it first)" for p in (deep, deep_too, palette)]


def test_images_within_the_budget_decode_on_threads_that_share_it(tmp_path):
    """Four 16-bit PNGs of 24 million pixels on four threads: one at a time, as they share one budget."""
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    streamed_png(paths[0], 6000, 4000, 16, 0)
    for path in paths[1:]:
        path.write_bytes(paths[0].read_bytes())
    decoded = decode_in_subprocess(224, *paths, threads=4)
    assert decoded["rows"] == 4 and not decoded["skipped"]
    assert decoded["peak_mib"] < 620, decoded  # measured 500 MiB; 766 without the shared budget


def test_pixel_budget_follows_the_target_size_and_stays_under_pillows_limit():
    assert pixel_budget(32) == pixel_budget(224) == 25_000_000
    assert pixel_budget(512) == (16 * 512) ** 2
    assert pixel_budget(4096) == Image.MAX_IMAGE_PIXELS


def test_normal_images_decode_exactly_as_before_and_big_photos_nearly(tmp_path):
    """A 4000 x 3000 JPEG (over 8 x 224 on both sides) is decoded reduced; the result differs by a level or so."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(small).save(tmp_path / "small.png")
    image, error = _decode_file(str(tmp_path / "small.png"), 224, "bilinear")
    assert error is None
    assert np.array_equal(image, np.asarray(Image.fromarray(small).resize((224, 224), resample=2)))
    gradient = np.add.outer(np.arange(3000) // 12, np.arange(4000) // 16).astype(np.uint8)
    photo = np.stack([gradient, gradient[::-1], 255 - gradient], axis=-1)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    with Image.open(tmp_path / "photo.jpg") as full:
        exact = np.asarray(full.convert("RGB").resize((224, 224), resample=2), dtype=np.int16)
    reduced, error = _decode_file(str(tmp_path / "photo.jpg"), 224, "bilinear")
    assert error is None and np.abs(reduced - exact).mean() < 1.5


def test_16_bit_images_scale_to_8_bits_as_before(tmp_path):
    levels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 13 + 1000).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    split = FileSplit([tmp_path / "deep.png"], [0])
    expected = ((levels - 1000.0) / (levels.max() - 1000.0) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(split.images(64))[0, :, :, 0], expected)


def test_predict_refuses_an_image_over_the_pixel_budget_naming_it(saved_toy_cell, tmp_path):
    deep = tmp_path / "deep.png"
    streamed_png(deep, 13000, 13000, 16, 0)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from tlbench.cli import main
        code = main(sys.argv[1:])
        print({PEAK_MIB})
        sys.exit(code)
    """), "predict", str(deep), "--cell", str(saved_toy_cell)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: cannot read image {deep}: 13000 x 13000 pixels, over the pixel budget" in result.stderr
    assert float(result.stdout) < 1500, result.stdout  # refused before any pixel is decoded


def records_run(tmp_path):
    from tlbench.run.runner import run_grid

    run_grid({"name": "records", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"],
              "seeds": [0, 1]}, out=tmp_path / "run", device="cpu")
    return tmp_path / "run"


def report_peak(run_dir) -> tuple[subprocess.CompletedProcess, float]:
    """``tlbench report RUN_DIR`` in a child; its peak RSS in MiB (RUSAGE_CHILDREN, measured by a parent)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import resource, subprocess, sys
        child = subprocess.run([sys.executable, "-m", "tlbench.cli", "report", sys.argv[1]])
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        sys.exit(child.returncode)
    """), str(run_dir)], capture_output=True, text=True, timeout=600)
    return result, float(result.stdout.strip().splitlines()[-1])


def test_a_200_mb_line_in_runs_jsonl_is_skipped_without_being_held(toy_plugin, tmp_path):
    """Before: the report peaked at 1.88 GB."""
    run_dir = records_run(tmp_path)
    runs = run_dir / "runs.jsonl"
    records = runs.read_bytes()
    with open(runs, "ab") as f:
        f.write(b'{"cell_id": "' + b"x" * (200 << 20) + b'"}\n')
        f.write(records.splitlines(keepends=True)[0])  # a record after it is still read
    result, peak = report_peak(run_dir)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "runs.jsonl:3: skipping a line of 209,715,216 bytes, longer than the 16,777,216 a record may be" in result.stderr
    assert peak < 400, f"tlbench report peaked at {peak:.0f} MiB"
    print(f"tlbench report peaked at {peak:.0f} MiB")
    assert (run_dir / "summary.csv").read_text().count("\n") == 1 + 2


def test_many_junk_lines_give_a_handful_of_warnings_each_line_warned_once(toy_plugin, tmp_path):
    """Each junk line is warned once, though the summaries and the report both read the file."""
    run_dir = records_run(tmp_path)
    with open(run_dir / "runs.jsonl", "ab") as f:
        f.write(b"junk\n" * 20000)
    result = tlbench("report", str(run_dir))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "runs.jsonl" in line]
    assert [w.split("runs.jsonl")[1].split(": skipping")[0] for w in warnings] == [
        ":3", ":4", ":5", ":6", ":7", ": and 19995 more lines skipped"], warnings
    assert len(result.stderr.splitlines()) < 20
