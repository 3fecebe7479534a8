"""Where the controller keeps its goal state, so a restarted controller finds it.

The default store is the Ray cluster's own key-value store (GCS), which lives
as long as the cluster. The goal state is applications and their deployment
specs, never live replica state: replicas are rediscovered by name.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, Dict, Optional

from ray import cloudpickle

from ray_serving_ext._private.constants import CHECKPOINT_FORMAT_VERSION, CHECKPOINT_KEY, KV_NAMESPACE

logger = logging.getLogger("ray_serving_ext.controller")


class KVStoreBase(abc.ABC):
    """A key-value store for the controller's checkpoint. Subclass it for custom backends."""

    @abc.abstractmethod
    def get_storage_key(self, key: str) -> str:
        """The backend's name for `key`."""

    @abc.abstractmethod
    def put(self, key: str, val: bytes) -> bool:
        """Store val under key, atomically: readers see the old or the new value, whole."""

    @abc.abstractmethod
    def get(self, key: str) -> Optional[bytes]:
        """The value under key, or None."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove key (no error when absent)."""


class RayInternalKVStore(KVStoreBase):
    """The GCS key-value store of the running Ray cluster."""

    def __init__(self, namespace: bytes = KV_NAMESPACE) -> None:
        self._namespace = namespace

    def get_storage_key(self, key: str) -> str:
        return key

    def put(self, key: str, val: bytes) -> bool:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(key.encode(), val, overwrite=True, namespace=self._namespace)
        return True

    def get(self, key: str) -> Optional[bytes]:
        from ray.experimental import internal_kv

        return internal_kv._internal_kv_get(key.encode(), namespace=self._namespace)

    def delete(self, key: str) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(key.encode(), namespace=self._namespace)


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used (corrupt, or from an incompatible version)."""


def encode_checkpoint(state: Dict[str, Any]) -> bytes:
    return cloudpickle.dumps({"format_version": CHECKPOINT_FORMAT_VERSION, "state": state})


def decode_checkpoint(data: bytes, where: str) -> Dict[str, Any]:
    try:
        payload = cloudpickle.loads(data)
    except Exception as exc:
        raise CheckpointError(f"The checkpoint at {where} is corrupt and cannot be read: {exc}") from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"The checkpoint at {where} is not a ray_serving_ext checkpoint.")
    if payload["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"The checkpoint at {where} has format version {payload['format_version']}, "
            f"this version reads {CHECKPOINT_FORMAT_VERSION}."
        )
    return payload["state"]


class CheckpointManager:
    """Saves and loads the goal state through a KVStoreBase."""

    def __init__(self, store: KVStoreBase, where: str = "the Ray cluster's key-value store") -> None:
        self.store = store
        self.where = where

    def save(self, state: Dict[str, Any]) -> None:
        self.store.put(CHECKPOINT_KEY, encode_checkpoint(state))

    def load(self) -> Optional[Dict[str, Any]]:
        data = self.store.get(CHECKPOINT_KEY)
        if data is None:
            return None
        return decode_checkpoint(data, self.where)

    def clear(self) -> None:
        self.store.delete(CHECKPOINT_KEY)


def make_checkpoint_manager(checkpoint_path: str) -> CheckpointManager:
    """A CheckpointManager for a checkpoint URL (file:// only until the other backends land)."""
    if not checkpoint_path.startswith("file://"):
        raise ValueError(f"Unsupported checkpoint path {checkpoint_path!r}.")
    raise NotImplementedError("file:// checkpoints are not implemented yet")


def preflight_checkpoint(manager: CheckpointManager) -> None:
    """Raise CheckpointError if the checkpoint exists but cannot be used."""
    manager.load()
