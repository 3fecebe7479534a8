"""Where the controller keeps its goal state, so a restarted controller finds it.

The goal state is applications and their deployment specs, never live
replica state: replicas are rediscovered by name. By default it lives in the
Ray cluster's own key-value store (GCS), which lives as long as the cluster.
With `serve.start(checkpoint_path=URL)` it lives outside the cluster, so a
brand-new cluster started with the same URL restores every application:

- ``file://DIR``: a directory on the head node (absolute, ``~/``, or relative to
  the working directory of the process that calls ``serve.start``). The
  checkpoint is the file ``DIR/serve-controller-checkpoint``, replaced
  atomically (temp file in DIR, fsync, ``os.replace``, fsync of DIR).
- ``s3://bucket/prefix`` and ``gs://bucket/prefix``: the object
  ``bucket/prefix/serve-controller-checkpoint`` through fsspec (s3fs, gcsfs),
  written in one PUT: object stores replace whole objects atomically.
- ``custom://importable.module.Class/path?k=v``: ``Class(path, k="v")``, a
  subclass of ``KVStoreBase``.

Code shipped through a runtime_env (``working_dir`` / ``py_modules`` uploaded
to the cluster as ``gcs://_ray_pkg_<hash>.zip``) lives in the cluster's GCS
and dies with it, so an external checkpoint also keeps each referenced package
under the key ``runtime-env-package-<name>`` (written before the checkpoint
that references it) and uploads it into the new cluster's GCS on load.

Every checkpoint is an envelope: a magic line, a JSON header (format version,
package version, payload size and SHA-256) and the pickled state. A truncated,
corrupt or incompatible checkpoint raises CheckpointError naming its location.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib
import json
import logging
import os
import re
import tempfile
import urllib.parse
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ray import cloudpickle

from ray_serving_ext._private.constants import (
    CHECKPOINT_FORMAT_VERSION, CHECKPOINT_KEY, KV_NAMESPACE, VERSION, STORAGE_OPTIONS_ENV,
    checkpoint_storage_options_json, s3_endpoint_url,
)

logger = logging.getLogger("ray_serving_ext.controller")

CHECKPOINT_MAGIC = b"RAY_SERVING_EXT_CHECKPOINT\n"
SUPPORTED_SCHEMES = ("file://", "s3://", "gs://", "custom://")
EXTRA_HINT = "pip install 'ray_serving_ext[checkpoint]'"
_FSSPEC_PACKAGES = {"s3": "s3fs", "gs": "gcsfs"}


class KVStoreBase(abc.ABC):
    """A key-value store for the controller's checkpoint. Subclass it for custom backends.

    For ``custom://importable.module.Class/path?key=value`` the class is
    imported and instantiated as ``Class(path, key="value")``: ``path`` is
    everything after the first ``/`` up to ``?`` (may be ``""``), and every
    query parameter becomes a string keyword argument. The instance is created
    in the process that calls ``serve.start`` (which reads the checkpoint to
    validate it) and pickled to the controller on the head node, so the
    module must be importable there too and the instance must be picklable
    (open connections lazily, not in ``__init__``).

    Keys are short ASCII names without ``/``: ``serve-controller-checkpoint``
    (the goal state), ``runtime-env-package-<name>`` (code shipped in a
    runtime_env) and ``serve-controller-checkpoint-preflight`` (a write probe
    written and deleted by ``serve.start``). Values are opaque bytes.
    """

    @abc.abstractmethod
    def get_storage_key(self, key: str) -> str:
        """The backend's name for `key` (used in messages)."""

    @abc.abstractmethod
    def put(self, key: str, val: bytes) -> bool:
        """Store val under key, atomically: readers see the old or the new value, whole.

        Return True on success; False or an exception means nothing was stored.
        """

    @abc.abstractmethod
    def get(self, key: str) -> Optional[bytes]:
        """The value under key, or None when there is none."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove key (no error when absent)."""


class RayInternalKVStore(KVStoreBase):
    """The GCS key-value store of the running Ray cluster (dies with the cluster)."""

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


def _fsync_dir(directory: str) -> None:
    """Make a rename or unlink in `directory` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    """Replace the file at `path` with `data` so a reader sees the old or the new bytes, whole.

    Writes a temp file in the same directory, fsyncs it, renames it over `path`
    with os.replace and fsyncs the directory. On any failure before the rename
    the temp file is removed and `path` is untouched; after a hard crash a
    stray ``.<name>.*.tmp`` file may remain, which readers ignore.
    """
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


class LocalFileKVStore(KVStoreBase):
    """``file://DIR``: each key is the file ``DIR/<key>``; the directory is created on first write."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(os.path.expanduser(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(f"file:// checkpoint path {self.directory!r} exists and is not a directory.")

    def get_storage_key(self, key: str) -> str:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"Invalid checkpoint key {key!r}.")
        return os.path.join(self.directory, key)

    def put(self, key: str, val: bytes) -> bool:
        os.makedirs(self.directory, exist_ok=True)
        atomic_write(self.get_storage_key(key), val)
        return True

    def get(self, key: str) -> Optional[bytes]:
        try:
            with open(self.get_storage_key(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.get_storage_key(key))
            _fsync_dir(self.directory)


def _filesystem_class(protocol: str) -> Any:
    """The fsspec filesystem class for `protocol`; ImportError naming the extra when missing."""
    package = _FSSPEC_PACKAGES.get(protocol, protocol)
    hint = f"{protocol}:// checkpoints need fsspec and {package}: {EXTRA_HINT}"
    try:
        import fsspec
    except ImportError as exc:
        raise ImportError(hint) from exc
    try:
        return fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        raise ImportError(f"{hint} ({exc})") from exc


def storage_options_from_env(protocol: str) -> Dict[str, Any]:
    """fsspec storage options for `protocol` from RAY_SERVE_EXT_CHECKPOINT_STORAGE_OPTIONS
    (a JSON object) and, for s3, RAY_SERVE_EXT_S3_ENDPOINT_URL (as client_kwargs.endpoint_url)."""
    raw = checkpoint_storage_options_json()
    try:
        options = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ValueError(f"{STORAGE_OPTIONS_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise ValueError(f"{STORAGE_OPTIONS_ENV} must be a JSON object, got {type(options).__name__}.")
    endpoint = s3_endpoint_url()
    if protocol == "s3" and endpoint:
        client_kwargs = dict(options.get("client_kwargs") or {})
        client_kwargs.setdefault("endpoint_url", endpoint)
        options["client_kwargs"] = client_kwargs
    return options


class FsspecKVStore(KVStoreBase):
    """``s3://`` / ``gs://`` (any fsspec protocol): each key is the object ``bucket/prefix/<key>``.

    A put is one whole-object write, so readers see the old or the new object.
    Picklable: the filesystem is created lazily and not pickled; the storage
    options (endpoint etc.) travel with the store.
    """

    def __init__(self, protocol: str, root: str, storage_options: Optional[Dict[str, Any]] = None) -> None:
        self.protocol = protocol
        self.root = root.strip("/")
        if not self.root:
            raise ValueError(f"A {protocol}:// checkpoint path needs a bucket: {protocol}://bucket/path.")
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None
        return state

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, created on first use in this process."""
        if self._fs is None:
            self._fs = _filesystem_class(self.protocol)(**self.storage_options)
        return self._fs

    def get_storage_key(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put(self, key: str, val: bytes) -> bool:
        self.fs.pipe_file(self.get_storage_key(key), val)
        return True

    def get(self, key: str) -> Optional[bytes]:
        try:
            return self.fs.cat_file(self.get_storage_key(key))
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.get_storage_key(key))


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used (corrupt, truncated, or from an incompatible version)."""


def package_version() -> str:
    """The version of the running ray_serving_ext."""
    return VERSION


def release_series(version: str) -> Tuple[int, ...]:
    """The part of a version that must match for checkpoints to be compatible:
    (major,) from 1.0 on, (0, minor) before (semver: 0.x minors may break)."""
    match = re.match(r"^\s*(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"Unparseable version {version!r}.")
    major, minor = int(match.group(1)), int(match.group(2))
    return (major,) if major >= 1 else (0, minor)


def _envelope(payload: bytes, format_version: int, pkg_version: str) -> bytes:
    header = {
        "format_version": format_version,
        "package_version": pkg_version,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    return CHECKPOINT_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def encode_checkpoint(state: Dict[str, Any]) -> bytes:
    """The checkpoint bytes for `state`: magic line, JSON header line, pickled state."""
    return _envelope(cloudpickle.dumps(state), CHECKPOINT_FORMAT_VERSION, package_version())


def _read_header(data: bytes, where: str) -> Tuple[Dict[str, Any], bytes]:
    """Split checkpoint bytes into (header, payload); CheckpointError when not a checkpoint."""
    if not data:
        raise CheckpointError(f"The checkpoint at {where} is empty (truncated?) and cannot be used.")
    if not data.startswith(CHECKPOINT_MAGIC):
        if CHECKPOINT_MAGIC.startswith(data):
            raise CheckpointError(f"The checkpoint at {where} is truncated ({len(data)} bytes).")
        raise CheckpointError(f"The file at {where} is not a ray_serving_ext checkpoint, or is corrupt.")
    line, newline, payload = data[len(CHECKPOINT_MAGIC):].partition(b"\n")
    try:
        header = json.loads(line.decode()) if newline else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or not {"format_version", "package_version", "size", "sha256"} <= set(header):
        raise CheckpointError(f"The checkpoint at {where} is corrupt or truncated: its header is unreadable.")
    return header, payload


def _check_compatible(header: Dict[str, Any], where: str) -> None:
    """CheckpointError unless the writer's format version and release series match ours."""
    ours = package_version()
    theirs = str(header["package_version"])
    advice = "Restore it with the version that wrote it, or remove it to start empty."
    if header["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"The checkpoint at {where} was written by ray_serving_ext {theirs} with checkpoint format "
            f"{header['format_version']}; this is ray_serving_ext {ours}, which reads format "
            f"{CHECKPOINT_FORMAT_VERSION}. {advice}"
        )
    try:
        compatible = release_series(theirs) == release_series(ours)
    except ValueError:
        compatible = False
    if not compatible:
        raise CheckpointError(
            f"The checkpoint at {where} was written by ray_serving_ext {theirs}, which is not compatible "
            f"with this ray_serving_ext {ours} (the release series must match). {advice}"
        )


def _check_state(state: Any, where: str) -> Dict[str, Any]:
    apps = state.get("applications") if isinstance(state, dict) else None
    if not isinstance(apps, list) or not all(isinstance(a, dict) and "built" in a for a in apps):
        raise CheckpointError(f"The checkpoint at {where} is corrupt: it holds no list of applications.")
    return state


def decode_checkpoint(data: bytes, where: str) -> Dict[str, Any]:
    """The state in checkpoint bytes, fully validated; CheckpointError naming `where` otherwise.

    Checks, in order: magic and header, format version and release series,
    payload size (truncation), SHA-256 (corruption), unpickling, shape.
    """
    header, payload = _read_header(data, where)
    _check_compatible(header, where)
    if len(payload) != header["size"]:
        raise CheckpointError(
            f"The checkpoint at {where} is truncated or corrupt: {len(payload)} bytes of state, "
            f"expected {header['size']}."
        )
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CheckpointError(f"The checkpoint at {where} is corrupt: its checksum does not match.")
    try:
        state = cloudpickle.loads(payload)
    except Exception as exc:
        raise CheckpointError(f"The checkpoint at {where} is corrupt and cannot be read: {exc!r}") from exc
    return _check_state(state, where)


PACKAGE_KEY_PREFIX = "runtime-env-package-"


def _gcs_get(uri: str) -> Optional[bytes]:
    """The bytes of a gcs:// runtime_env package in the connected cluster, or None."""
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_get(uri)


def _gcs_exists(uri: str) -> bool:
    from ray.experimental import internal_kv

    return bool(internal_kv._internal_kv_exists(uri))


def _gcs_put(uri: str, data: bytes) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(uri, data, overwrite=False)


def _ray_connected() -> bool:
    import ray

    return ray.is_initialized()


def _find_gcs_uris(value: Any, found: Set[str]) -> None:
    if isinstance(value, str):
        if value.startswith("gcs://"):
            found.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _find_gcs_uris(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _find_gcs_uris(item, found)


def package_uris(state: Dict[str, Any]) -> List[str]:
    """Every gcs:// runtime_env package URI the state's applications reference, sorted."""
    found: Set[str] = set()
    for app in state.get("applications", []):
        _find_gcs_uris(app.get("config"), found)
        for spec in getattr(app["built"], "deployments", []):
            _find_gcs_uris(getattr(spec, "config", None), found)
            _find_gcs_uris(getattr(spec, "explicit_options", None), found)
    return sorted(found)


def package_key(uri: str) -> str:
    """The store key of the package at gcs:// `uri`."""
    return PACKAGE_KEY_PREFIX + uri[len("gcs://"):].replace("/", "_")


class CheckpointManager:
    """Saves and loads the goal state through a KVStoreBase. Picklable when its store is.

    With an external store (anything but RayInternalKVStore) the gcs://
    runtime_env packages the state references are kept in the store too, so a
    new cluster can run the same code.
    """

    def __init__(self, store: KVStoreBase, where: str = "the Ray cluster's key-value store") -> None:
        self.store = store
        self.where = where
        self._packages: Set[str] = set()  # URIs this process knows are in the store

    def __repr__(self) -> str:
        return f"CheckpointManager({self.where})"

    def __getstate__(self) -> Dict[str, Any]:
        return {"store": self.store, "where": self.where}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["store"], state["where"])

    @property
    def carries_packages(self) -> bool:
        """Whether runtime_env packages are copied to the store (not needed for the cluster's own KV)."""
        return not isinstance(self.store, RayInternalKVStore)

    def _put(self, key: str, data: bytes, what: str) -> None:
        try:
            ok = self.store.put(key, data)
        except Exception as exc:
            raise CheckpointError(f"Could not write the {what} at {self.where}: {exc!r}") from exc
        if ok is False:
            raise CheckpointError(f"Could not write the {what} at {self.where}: the store refused it.")

    def _save_packages(self, uris: Iterable[str]) -> None:
        """Copy each package not yet in the store from the cluster's GCS into it."""
        for uri in uris:
            if uri in self._packages or not _ray_connected():
                continue
            if self.store.get(package_key(uri)) is None:
                data = _gcs_get(uri)
                if data is None:
                    logger.warning("runtime_env package %s is not in the cluster; not checkpointed.", uri)
                    continue
                self._put(package_key(uri), bytes(data), f"runtime_env package {uri}")
            self._packages.add(uri)

    def save(self, state: Dict[str, Any]) -> None:
        """Replace the checkpoint with `state`, atomically; CheckpointError when the store refuses.

        Packages are written before the checkpoint that references them;
        packages no longer referenced are deleted after it.
        """
        uris = package_uris(state) if self.carries_packages else []
        self._save_packages(uris)
        self._put(CHECKPOINT_KEY, encode_checkpoint(state), "checkpoint")
        for uri in sorted(self._packages - set(uris)):
            self.store.delete(package_key(uri))
            self._packages.discard(uri)

    def _restore_packages(self, state: Dict[str, Any]) -> None:
        """Upload each referenced package missing from the connected cluster's GCS."""
        if not self.carries_packages or not _ray_connected():
            return
        for uri in package_uris(state):
            self._packages.add(uri)
            if _gcs_exists(uri):
                continue
            data = self.store.get(package_key(uri))
            if data is None:
                raise CheckpointError(
                    f"The checkpoint at {self.where} references runtime_env package {uri}, which is "
                    f"missing from the store (key {self.store.get_storage_key(package_key(uri))!r})."
                )
            _gcs_put(uri, bytes(data))
            logger.info("Restored runtime_env package %s from %s.", uri, self.where)

    def load(self, restore_packages: bool = True) -> Optional[Dict[str, Any]]:
        """The saved state, None when there is no checkpoint; CheckpointError when unusable.

        With `restore_packages`, the runtime_env packages it references are
        uploaded into the connected cluster first, so deploying it works there.
        """
        try:
            data = self.store.get(CHECKPOINT_KEY)
        except Exception as exc:
            raise CheckpointError(f"Could not read the checkpoint at {self.where}: {exc!r}") from exc
        if data is None:
            return None
        state = decode_checkpoint(bytes(data), self.where)
        if restore_packages:
            self._restore_packages(state)
        return state

    def check_packages(self, state: Dict[str, Any]) -> None:
        """CheckpointError when a runtime_env package the state references is missing from the store."""
        if not self.carries_packages:
            return
        for uri in package_uris(state):
            try:
                present = self.store.get(package_key(uri)) is not None
            except Exception as exc:
                raise CheckpointError(f"Could not read runtime_env package {uri} at {self.where}: {exc!r}") from exc
            if not present:
                raise CheckpointError(
                    f"The checkpoint at {self.where} references runtime_env package {uri}, which is missing "
                    "from the store."
                )

    def clear(self) -> None:
        """Remove the checkpoint and the packages it references (no error when there is none)."""
        uris: Set[str] = set(self._packages)
        try:
            state = self.load(restore_packages=False)
            uris.update(package_uris(state) if state and self.carries_packages else [])
        except CheckpointError:
            pass  # an unreadable checkpoint is removed all the same
        self.store.delete(CHECKPOINT_KEY)
        for uri in sorted(uris):
            self.store.delete(package_key(uri))
        self._packages.clear()


def _split_url(checkpoint_path: str) -> Tuple[str, str]:
    """(scheme, rest) of a checkpoint URL; ValueError listing the supported schemes otherwise."""
    if not isinstance(checkpoint_path, str):
        raise TypeError(f"checkpoint_path must be a str, got {type(checkpoint_path).__name__}.")
    scheme, sep, rest = checkpoint_path.partition("://")
    scheme = scheme.lower()
    if not sep or f"{scheme}://" not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"Unsupported checkpoint path {checkpoint_path!r}: use one of {', '.join(SUPPORTED_SCHEMES)} "
            "(file://local_dir, s3://bucket/path, gs://bucket/path, custom://importable.module.Class/path)."
        )
    return scheme, rest


def load_custom_store(spec: str, url: str) -> KVStoreBase:
    """Instantiate ``importable.module.Class/path?k=v`` as ``Class(path, k="v")``.

    ValueError when the module or class cannot be found, TypeError when the
    class does not subclass KVStoreBase.
    """
    target, _, rest = spec.partition("/")
    path, _, query = rest.partition("?")
    module_name, _, class_name = target.rpartition(".")
    if not module_name or not class_name:
        raise ValueError(f"{url!r}: a custom checkpoint path is custom://importable.module.Class/path.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{url!r}: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"{url!r}: module {module_name!r} has no attribute {class_name!r}.")
    if not (isinstance(cls, type) and issubclass(cls, KVStoreBase)):
        raise TypeError(
            f"{url!r}: {target} must be a subclass of ray_serving_ext.checkpoint.KVStoreBase, got {cls!r}."
        )
    kwargs = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    return cls(path, **kwargs)


def make_checkpoint_manager(checkpoint_path: str) -> CheckpointManager:
    """A picklable CheckpointManager for a checkpoint URL (see the module docstring for schemes).

    Raises ValueError for an unknown scheme or malformed URL, ImportError naming
    the extra for s3:// or gs:// without fsspec/s3fs/gcsfs, TypeError for a
    custom class that is not a KVStoreBase. Reads nothing from the store.
    """
    scheme, rest = _split_url(checkpoint_path)
    if scheme == "file":
        if not rest:
            raise ValueError("A file:// checkpoint path needs a directory: file:///abs/dir or file://rel/dir.")
        store: KVStoreBase = LocalFileKVStore(rest)
        return CheckpointManager(store, "file://" + store.get_storage_key(CHECKPOINT_KEY))
    if scheme in ("s3", "gs"):
        store = FsspecKVStore(scheme, rest, storage_options_from_env(scheme))
        _filesystem_class(scheme)  # fail here, in the caller, when the extra is missing
        return CheckpointManager(store, f"{scheme}://" + store.get_storage_key(CHECKPOINT_KEY))
    store = load_custom_store(rest, checkpoint_path)
    return CheckpointManager(store, f"{checkpoint_path} (key {store.get_storage_key(CHECKPOINT_KEY)!r})")


def preflight_checkpoint(manager: CheckpointManager) -> None:
    """Raise CheckpointError if the checkpoint cannot be used, before anything is created.

    Reads and fully decodes the checkpoint (when there is one), checks every
    runtime_env package it references is in the store, then checks the
    location is writable by writing and deleting a probe key next to it. A
    failing check leaves the checkpoint untouched.
    """
    state = manager.load(restore_packages=False)
    if state:
        manager.check_packages(state)
    probe = CHECKPOINT_KEY + "-preflight"
    try:
        if manager.store.put(probe, b"") is False:
            raise RuntimeError("the store refused a write")
        manager.store.delete(probe)
    except Exception as exc:
        raise CheckpointError(f"Cannot write the checkpoint at {manager.where}: {exc!r}") from exc
    if state:
        names = [getattr(app["built"], "name", "?") for app in state["applications"]]
        logger.info("Checkpoint at %s holds %d application(s): %s", manager.where, len(names), names)
