"""A fresh stack of its own for a benchmark: $HRDV_HOME (default /tmp/hrdv-bench), ports from 29400."""
from __future__ import annotations

import os
from datetime import datetime, timezone

os.environ.setdefault("HRDV_HOME", "/tmp/hrdv-bench")
os.environ.setdefault("HRDV_PORT_BASE", "29400")
os.environ.setdefault("HRDV_PARTITIONS_START", datetime.now(timezone.utc).strftime("%Y-%m-%d-00:00"))

# The same start and stop as the tests' stack fixture and `hrdv down`.
from hrdv.cli import fresh_stack, stop_stack  # noqa: E402

__all__ = ["fresh_stack", "stop_stack"]
