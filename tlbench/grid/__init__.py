"""Grid files: loading and validation into cells, and tuned series (candidates, then picks)."""
