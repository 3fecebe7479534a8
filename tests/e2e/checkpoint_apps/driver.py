"""Driver run in a subprocess by test_checkpoint_restore.py, one action per run.

    python -m tests.e2e.checkpoint_apps.driver ACTION --checkpoint URL [--port P]

Connects to the cluster at RAY_ADDRESS (always given explicitly), does ACTION,
prints one line `RESULT <json>` and exits 0; any failed check exits non-zero.
  deploy    serve.start(detached) with the checkpoint, deploy greeter/composed/doomed,
            change both user_configs by redeploying, delete doomed; with --working-dir
            (the job's runtime_env) also `shipped`, whose code exists only there.
  restore   serve.start(detached) with the checkpoint on a new cluster; wait for RUNNING.
  shutdown  serve.shutdown(); no actor is left in namespace serve.
  badstart  serve.start(checkpoint_path) must raise; nothing is created.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Dict, List

import ray
import requests

import ray_serving_ext as serve
from ray_serving_ext._private.client import ServeControllerClient
from ray_serving_ext._private.cluster import find_controller
from ray_serving_ext._private.constants import SERVE_NAMESPACE
from tests.e2e.checkpoint_apps import apps
from tests.utils import wait_for_condition


def _get_json(url: str) -> Any:
    resp = requests.get(url, timeout=10)
    resp.raise_for_status()
    return resp.json()


def _serve_actors() -> List[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == SERVE_NAMESPACE]


def deploy(args: argparse.Namespace) -> Dict[str, Any]:
    """Deploy three apps, update two user_configs, delete the third."""
    serve.start(detached=True, checkpoint_path=args.checkpoint, http_options={"port": args.port})
    base = f"http://127.0.0.1:{args.port}"
    serve.run(apps.greeter_app(), name="greeter", route_prefix="/greeter")
    serve.run(apps.composed_app(), name="composed", route_prefix="/composed")
    serve.run(apps.doomed_app(), name="doomed", route_prefix="/doomed")
    assert _get_json(f"{base}/greeter")["greeting"] == "hello"
    assert _get_json(f"{base}/composed?x=1")["result"] == 2
    assert requests.get(f"{base}/doomed", timeout=10).text == "doomed"
    serve.run(apps.greeter_app("updated"), name="greeter", route_prefix="/greeter")
    serve.run(apps.composed_app(100), name="composed", route_prefix="/composed")
    wait_for_condition(lambda: _get_json(f"{base}/greeter")["greeting"] == "updated", timeout=30)
    wait_for_condition(lambda: _get_json(f"{base}/composed?x=1")["result"] == 101, timeout=30)
    serve.delete("doomed")
    wait_for_condition(lambda: requests.get(f"{base}/doomed", timeout=10).status_code == 404, timeout=30)
    if args.working_dir:  # code that exists only in the job's runtime_env working_dir
        sys.path.insert(0, args.working_dir)
        import shipped_app

        serve.run(shipped_app.shipped.bind(), name="shipped", route_prefix="/shipped")
        assert requests.get(f"{base}/shipped", timeout=10).text == shipped_app.ANSWER
    return {"apps": sorted(serve.status().applications)}


class StatusWatcher:
    """Records each application's status changes, from the moment the controller exists.

    Polls the controller directly (serve.status() waits for serve.start() to
    return), so the DEPLOYING phase of a restore is visible.
    """

    def __init__(self) -> None:
        self.seen: Dict[str, List[str]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def record(self, statuses: Dict[str, str]) -> None:
        with self._lock:
            for name, status in statuses.items():
                if not self.seen.get(name) or self.seen[name][-1] != status:
                    self.seen.setdefault(name, []).append(status)

    def poll(self) -> Dict[str, str]:
        controller = find_controller()
        if controller is None:
            return {}
        apps = ServeControllerClient(controller).get_serve_status().applications
        statuses = {name: str(s.status) for name, s in apps.items()}
        self.record(statuses)
        return statuses

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the controller may be starting
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def restore(args: argparse.Namespace) -> Dict[str, Any]:
    """Start on a new cluster from the checkpoint; report the statuses seen until both RUNNING."""
    watcher = StatusWatcher()
    serve.start(detached=True, checkpoint_path=args.checkpoint, http_options={"port": args.port})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        statuses = watcher.poll()
        if statuses and all(s == "RUNNING" for s in statuses.values()):
            break
        if "DEPLOY_FAILED" in statuses.values():
            break
        time.sleep(0.1)
    watcher.stop()
    return {"apps": sorted(serve.status().applications), "seen": watcher.seen}


def shutdown(args: argparse.Namespace) -> Dict[str, Any]:
    """Shut the instance down; nothing may be left in namespace serve."""
    serve.shutdown()
    wait_for_condition(lambda: not _serve_actors(), timeout=30, message="serve actors gone")
    return {"actors": _serve_actors()}


def badstart(args: argparse.Namespace) -> Dict[str, Any]:
    """serve.start with an unusable checkpoint must raise, creating nothing."""
    error = None
    try:
        serve.start(detached=True, checkpoint_path=args.checkpoint, http_options={"port": args.port})
    except Exception as exc:  # noqa: BLE001 - reported to the test
        error = {"type": type(exc).__name__, "message": str(exc)}
    return {"error": error, "actors": _serve_actors()}


ACTIONS = {"deploy": deploy, "restore": restore, "shutdown": shutdown, "badstart": badstart}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=sorted(ACTIONS))
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--working-dir", default="", help="deploy: the job's runtime_env working_dir")
    args = parser.parse_args()
    runtime_env = {"working_dir": args.working_dir} if args.working_dir else None
    ray.init(address=os.environ["RAY_ADDRESS"], namespace=SERVE_NAMESPACE, log_to_driver=False,
             runtime_env=runtime_env)
    try:
        result = ACTIONS[args.action](args)
    finally:
        ray.shutdown()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
