"""``tlbench list``: ``--blocks`` names a backbone; asked of another kind it is an error, not a traceback."""

from __future__ import annotations

from support import tlbench


def test_blocks_of_another_kind_is_an_error_not_a_traceback():
    for kind, name in (("strategies", "extractor"), ("datasets", "cifar10")):
        result = tlbench("list", kind, "--blocks", name)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert "tlbench list backbones --blocks" in result.stderr, result.stderr
