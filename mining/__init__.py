"""Per-record and per-batch mining logic: plain Python, pyarrow and numpy, no Beam."""
