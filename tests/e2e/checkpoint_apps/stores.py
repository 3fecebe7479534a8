"""A custom checkpoint backend for `custom://tests.e2e.checkpoint_apps.stores.DirectoryKVStore/...`."""

from __future__ import annotations

import os
import tempfile
from typing import Optional

from ray_serving_ext.checkpoint import KVStoreBase


class DirectoryKVStore(KVStoreBase):
    """Keys are files `<root>/<path>/<key>.kv`; writes are atomic (temp file, fsync, rename).

    Built as `DirectoryKVStore(path, root="/")` from
    `custom://tests.e2e.checkpoint_apps.stores.DirectoryKVStore/<path>?root=<dir>`.
    """

    def __init__(self, path: str, root: str = "/") -> None:
        self.directory = os.path.join(root, path)

    def get_storage_key(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.kv")

    def put(self, key: str, val: bytes) -> bool:
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(val)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.get_storage_key(key))
        return True

    def get(self, key: str) -> Optional[bytes]:
        try:
            with open(self.get_storage_key(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        try:
            os.remove(self.get_storage_key(key))
        except FileNotFoundError:
            pass


class NotAStore:
    """Not a KVStoreBase: `custom://` must refuse it."""

    def __init__(self, path: str) -> None:
        self.path = path
