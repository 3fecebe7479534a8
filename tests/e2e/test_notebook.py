"""examples/quickstart.ipynb runs top to bottom on a real Jupyter kernel.

The notebook is executed with nbclient on an ipykernel kernel that runs this
test's Python (a kernelspec written for the test, so no other `python3`
kernelspec on the machine can be picked). The kernel gets, explicitly:

- cwd = the repo root and the repo root on PYTHONPATH;
- RAY_ADDRESS=local, so the notebook's plain `ray.init()` starts a private
  local Ray even if a leftover /tmp/ray/ray_current_cluster names another
  (dead or foreign) cluster; RAY_TMPDIR = a fresh short directory, so that
  Ray's session files are the test's own; token auth off and usage stats off;
- SERVE_HTTP_PORT = a free port, which the notebook's serve.start() uses.

Every cell `assert`s its result, so a wrong answer is a CellExecutionError;
the test also checks the printed answers. Every process the kernel started
(Ray's GCS, raylet, workers, the Serve actors) must be gone after the run:
the notebook ends with serve.shutdown() and ray.shutdown(), and nbclient shuts
the kernel down; anything still alive after that is killed and fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Set, Tuple

import pytest

from tests.e2e.conftest import REPO_ROOT
from tests.utils import free_port

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
psutil = pytest.importorskip("psutil")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the importorskips)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NOTEBOOK = Path(REPO_ROOT) / "examples" / "quickstart.ipynb"
CELL_TIMEOUT_S = 120

# Prepended to the notebook copy that runs: reports what the kernel really got.
_PROBE = (
    "import json as _json, os as _os, sys as _sys\n"
    "print('PROBE ' + _json.dumps({'prefix': _sys.prefix, 'cwd': _os.getcwd(),\n"
    "    'env': {k: _os.environ.get(k) for k in ('RAY_ADDRESS', 'RAY_AUTH_MODE', 'RAY_USAGE_STATS_ENABLED',\n"
    "                                            'RAY_TMPDIR', 'SERVE_HTTP_PORT')},\n"
    "    'path': _sys.path}))"
)


def _kernel_manager(spec_root: Path) -> AsyncKernelManager:
    """A kernel manager whose only `python3` kernelspec runs sys.executable."""
    spec_dir = spec_root / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)",
        "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_root)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif out.get("output_type") in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _reap(seen: Dict[int, float], timeout: float = 30.0) -> Set[Tuple[int, str]]:
    """Wait for the processes in `seen` (pid -> create_time) to exit; kill and return those that do not."""
    def alive():
        procs = []
        for pid, created in seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    procs.append(proc)
            except psutil.NoSuchProcess:
                pass
        return procs

    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = set()
    for proc in alive():
        try:
            left.add((proc.pid, " ".join(proc.cmdline())[:200] or proc.name()))
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return left


def test_quickstart_notebook_runs_on_a_kernel(tmp_path):
    port = free_port()
    # Short, so Ray's unix socket paths under it stay within the 107-byte limit.
    ray_tmp = tempfile.mkdtemp(prefix="rnb-", dir="/tmp")
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p),
        RAY_ADDRESS="local",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=ray_tmp,
        SERVE_HTTP_PORT=str(port),
    )
    env.pop("RAY_AUTH_TOKEN", None)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "the notebook stores outputs"
    nb.cells.insert(0, nbformat.v4.new_code_cell(_PROBE))

    km = _kernel_manager(tmp_path / "kernels")
    seen: Dict[int, float] = {}

    def note_descendants(**_kwargs) -> None:
        # After each cell: every process the kernel has started so far (Ray's and Serve's included).
        pid = getattr(km.provisioner, "pid", None)
        if pid is None:
            return
        try:
            kernel = psutil.Process(pid)
            for proc in [kernel, *kernel.children(recursive=True)]:
                seen.setdefault(proc.pid, proc.create_time())
        except psutil.NoSuchProcess:
            pass

    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": REPO_ROOT}},
        on_cell_executed=note_descendants,
    )
    started = time.monotonic()
    try:
        # env replaces the kernel's whole environment; cleanup_kc: shut the kernel down afterwards.
        client.execute(env=env, cwd=REPO_ROOT, cleanup_kc=True)
    finally:
        left = _reap(seen)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    assert not left, f"processes left after the notebook and its kernel exited: {sorted(left)}"
    assert seen, "no kernel process was seen"

    text = _outputs_text(nb)
    probe = json.loads(next(line for line in text.splitlines() if line.startswith("PROBE "))[len("PROBE "):])
    assert probe["prefix"] == sys.prefix, probe
    assert os.path.realpath(probe["cwd"]) == os.path.realpath(REPO_ROOT), probe
    assert probe["env"] == {"RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                            "RAY_TMPDIR": ray_tmp, "SERVE_HTTP_PORT": str(port)}, probe
    assert REPO_ROOT in probe["path"], probe

    # The answers the cells printed: through the handle, and over HTTP on the free port.
    for expected in ("Hello, notebook!", "Hello, handle!", "Hello, caller 4!", "Hello, HTTP!", "greeter: RUNNING"):
        assert expected in text, f"{expected!r} not in the notebook's outputs:\n{text[-3000:]}"
    print(f"notebook ran in {elapsed:.1f}s")
