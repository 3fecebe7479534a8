"""Losing a worker node recreates its replicas elsewhere (subprocess: its own multi-node cluster)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def test_node_removal_recreates_replicas_and_shutdown_leaves_nothing():
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "scripts", "node_failure.py")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    assert "replicas recreated on the second worker" in proc.stdout, out
    assert "shutdown left no actor in namespace serve" in proc.stdout, out
    assert proc.stdout.strip().endswith("OK"), out
