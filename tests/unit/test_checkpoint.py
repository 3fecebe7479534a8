"""Checkpoint backends and validation (issue #7), without a cluster.

file:// atomicity (including a process killed between the temp write and the
rename), round trips through file://, custom:// and gs:// (an in-memory fsspec
filesystem registered for the `gs` protocol), and every way a checkpoint can be
unusable: truncated, corrupt, not ours, or from an incompatible version.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from ray_serving_ext._private import checkpoint as ckpt
from ray_serving_ext._private import constants
from ray_serving_ext._private.build import build_app
from ray_serving_ext._private.checkpoint import (
    CHECKPOINT_MAGIC,
    CheckpointError,
    CheckpointManager,
    FsspecKVStore,
    LocalFileKVStore,
    decode_checkpoint,
    encode_checkpoint,
    make_checkpoint_manager,
    preflight_checkpoint,
)
from ray_serving_ext._private.constants import CHECKPOINT_FORMAT_VERSION, CHECKPOINT_KEY
from tests.e2e.checkpoint_apps import apps
from tests.e2e.checkpoint_apps.stores import DirectoryKVStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORE = "tests.e2e.checkpoint_apps.stores"


def _state(greeting: str = "hello") -> dict:
    built = build_app(apps.greeter_app(greeting), "greeter", "/greeter")
    return {"owner_job_id": None, "applications": [{"built": built, "config": None, "deployed_at": 1.0}]}


def _greeting(state: dict) -> str:
    spec = state["applications"][0]["built"].deployments[0]
    return spec.config["user_config"]["greeting"]


# ---- public API ---------------------------------------------------------------------


def test_public_kvstorebase_is_the_one_checked():
    from ray_serving_ext.checkpoint import CheckpointError as PublicError
    from ray_serving_ext.checkpoint import KVStoreBase

    assert KVStoreBase is ckpt.KVStoreBase and PublicError is CheckpointError
    assert issubclass(DirectoryKVStore, KVStoreBase)


@pytest.mark.parametrize(
    "url",
    ["/tmp/x", "ftp://host/x", "redis://localhost/0", "file:/tmp/x", "", "s3:/bucket"],
)
def test_unknown_scheme_lists_supported(url):
    with pytest.raises(ValueError) as info:
        make_checkpoint_manager(url)
    for scheme in ("file://", "s3://", "gs://", "custom://"):
        assert scheme in str(info.value)


@pytest.mark.parametrize("url", ["file://", "s3://", "gs:///", "custom://", "custom://NoModule/x"])
def test_malformed_urls(url):
    with pytest.raises(ValueError):
        make_checkpoint_manager(url)


# ---- file:// --------------------------------------------------------------------------


def test_file_round_trip_save_load_clear(tmp_path):
    directory = tmp_path / "nested" / "ckpt"
    manager = make_checkpoint_manager(f"file://{directory}")
    assert manager.where == f"file://{directory / CHECKPOINT_KEY}"
    assert manager.load() is None
    preflight_checkpoint(manager)  # empty: fine, and leaves no probe behind
    manager.save(_state("v1"))
    manager.save(_state("v2"))
    assert _greeting(manager.load()) == "v2"
    assert sorted(os.listdir(directory)) == [CHECKPOINT_KEY]
    copy = pickle.loads(pickle.dumps(manager))  # the controller gets it pickled
    assert _greeting(copy.load()) == "v2"
    copy.clear()
    assert manager.load() is None and os.listdir(directory) == []
    manager.clear()  # no error when absent


def test_file_relative_path_is_resolved_where_start_is_called(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manager = make_checkpoint_manager("file://rel/dir")
    os.chdir("/")  # the controller runs elsewhere: the path must already be absolute
    manager.save(_state())
    assert (tmp_path / "rel" / "dir" / CHECKPOINT_KEY).is_file()


def test_file_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        make_checkpoint_manager(f"file://{target}")


def test_file_write_fsyncs_then_renames(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    LocalFileKVStore(str(tmp_path)).put("k", b"v")
    assert events == ["fsync", "replace", "fsync"]  # data, rename, directory


def test_failed_rename_keeps_old_checkpoint_and_no_temp(tmp_path, monkeypatch):
    manager = make_checkpoint_manager(f"file://{tmp_path}")
    manager.save(_state("old"))
    before = (tmp_path / CHECKPOINT_KEY).read_bytes()

    def crash(src, dst):
        raise OSError("disk gone between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(CheckpointError, match="Could not write"):
        manager.save(_state("new"))
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT_KEY).read_bytes() == before
    assert _greeting(manager.load()) == "old"
    assert os.listdir(tmp_path) == [CHECKPOINT_KEY]


def test_process_killed_between_temp_write_and_rename(tmp_path):
    """A real crash: the writer dies after the temp file is complete, before os.replace."""
    manager = make_checkpoint_manager(f"file://{tmp_path}")
    manager.save(_state("old"))
    before = (tmp_path / CHECKPOINT_KEY).read_bytes()
    script = textwrap.dedent(f"""
        import os
        from ray_serving_ext._private.checkpoint import make_checkpoint_manager
        from tests.unit.test_checkpoint import _state
        os.replace = lambda src, dst: os._exit(17)  # killed right before the rename
        make_checkpoint_manager({f"file://{tmp_path}"!r}).save(_state("new"))
    """)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, timeout=120, capture_output=True)
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    leftovers = [name for name in os.listdir(tmp_path) if name != CHECKPOINT_KEY]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")  # the complete temp file, never renamed
    assert (tmp_path / CHECKPOINT_KEY).read_bytes() == before
    assert _greeting(manager.load()) == "old"
    manager.save(_state("newer"))  # the next write is unaffected by the stray temp file
    assert _greeting(manager.load()) == "newer"


# ---- custom:// ------------------------------------------------------------------------


def test_custom_round_trip(tmp_path):
    url = f"custom://{STORE}.DirectoryKVStore/ckpt/a?root={tmp_path}"
    manager = make_checkpoint_manager(url)
    assert isinstance(manager.store, DirectoryKVStore)
    assert manager.store.directory == os.path.join(str(tmp_path), "ckpt/a")
    assert url in manager.where
    preflight_checkpoint(manager)
    manager.save(_state("custom"))
    assert (tmp_path / "ckpt" / "a" / f"{CHECKPOINT_KEY}.kv").is_file()
    assert _greeting(pickle.loads(pickle.dumps(manager)).load()) == "custom"
    manager.clear()
    assert manager.load() is None


def test_custom_class_must_subclass_kvstorebase():
    with pytest.raises(TypeError, match="KVStoreBase"):
        make_checkpoint_manager(f"custom://{STORE}.NotAStore/x")


@pytest.mark.parametrize(
    "url, match",
    [
        ("custom://no_such_module_xyz.Store/x", "cannot import"),
        (f"custom://{STORE}.Missing/x", "no attribute"),
        ("custom://JustAName/x", "importable.module.Class"),
    ],
)
def test_custom_bad_class_paths(url, match):
    with pytest.raises(ValueError, match=match):
        make_checkpoint_manager(url)


# ---- gs:// and s3:// through fsspec -----------------------------------------------------


@pytest.fixture
def memory_gs(monkeypatch):
    """An in-memory filesystem registered for gs:// (its own store, undone after the test)."""
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.memory import MemoryFileSystem

    class MemoryGCS(MemoryFileSystem):
        protocol = ("gs", "gcs")
        store: dict = {}
        pseudo_dirs = [""]

    from fsspec.registry import _registry

    monkeypatch.setitem(_registry, "gs", MemoryGCS)  # records what to restore after the test
    fsspec.register_implementation("gs", MemoryGCS, clobber=True)
    MemoryGCS.clear_instance_cache()
    return MemoryGCS


def test_gs_round_trip_through_fsspec(memory_gs):
    manager = make_checkpoint_manager("gs://bucket/serve/prod")
    assert isinstance(manager.store, FsspecKVStore)
    assert manager.where == f"gs://bucket/serve/prod/{CHECKPOINT_KEY}"
    assert manager.load() is None
    preflight_checkpoint(manager)
    manager.save(_state("gs"))
    assert f"/bucket/serve/prod/{CHECKPOINT_KEY}" in memory_gs.store  # one object, written whole
    copy = pickle.loads(pickle.dumps(manager))
    assert copy.store._fs is None  # the filesystem is not pickled, the controller makes its own
    assert _greeting(copy.load()) == "gs"
    memory_gs().pipe_file(f"bucket/serve/prod/{CHECKPOINT_KEY}", b"garbage")
    with pytest.raises(CheckpointError, match="gs://bucket/serve/prod"):
        preflight_checkpoint(manager)
    manager.clear()
    assert manager.load() is None
    manager.clear()


def test_missing_fsspec_backend_names_the_extra(monkeypatch):
    pytest.importorskip("fsspec")
    from fsspec.registry import _registry

    monkeypatch.delitem(_registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs -> ImportError
    with pytest.raises(ImportError, match=r"ray_serving_ext\[checkpoint\]"):
        make_checkpoint_manager("s3://bucket/path")
    monkeypatch.setitem(sys.modules, "fsspec", None)  # no fsspec at all
    with pytest.raises(ImportError, match=r"gs:// checkpoints need fsspec and gcsfs"):
        make_checkpoint_manager("gs://bucket/path")


def test_storage_options_from_env(monkeypatch):
    monkeypatch.setenv(constants.S3_ENDPOINT_ENV, "http://127.0.0.1:9000")
    monkeypatch.setenv(constants.STORAGE_OPTIONS_ENV, json.dumps({"anon": False, "client_kwargs": {"region_name": "x"}}))
    assert ckpt.storage_options_from_env("s3") == {
        "anon": False,
        "client_kwargs": {"region_name": "x", "endpoint_url": "http://127.0.0.1:9000"},
    }
    assert ckpt.storage_options_from_env("gs") == {"anon": False, "client_kwargs": {"region_name": "x"}}
    monkeypatch.setenv(constants.STORAGE_OPTIONS_ENV, "[1]")
    with pytest.raises(ValueError, match="JSON object"):
        ckpt.storage_options_from_env("s3")
    monkeypatch.setenv(constants.STORAGE_OPTIONS_ENV, "{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        ckpt.storage_options_from_env("s3")


def test_s3_store_carries_endpoint_and_pickles(monkeypatch):
    pytest.importorskip("s3fs")
    monkeypatch.setenv(constants.S3_ENDPOINT_ENV, "http://127.0.0.1:1")
    manager = make_checkpoint_manager("s3://bucket/a/b/")
    copy = pickle.loads(pickle.dumps(manager))
    assert copy.store.storage_options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:1"
    assert copy.where == f"s3://bucket/a/b/{CHECKPOINT_KEY}"


# ---- unusable checkpoints -------------------------------------------------------------


def _envelope(payload: bytes, fmt: int = CHECKPOINT_FORMAT_VERSION, version: str | None = None) -> bytes:
    return ckpt._envelope(payload, fmt, version or ckpt.package_version())


GOOD = None


def _good() -> bytes:
    global GOOD
    if GOOD is None:
        GOOD = encode_checkpoint(_state())
    return GOOD


@pytest.mark.parametrize("cut", [0, 5, len(CHECKPOINT_MAGIC), len(CHECKPOINT_MAGIC) + 10, -1, -100])
def test_truncated_checkpoints_are_refused(cut):
    data = _good()
    truncated = data[:cut] if cut >= 0 else data[:cut]
    with pytest.raises(CheckpointError, match=r"/where/it/is.*(truncated|empty)"):
        decode_checkpoint(truncated, "/where/it/is")


def test_flipped_byte_fails_the_checksum():
    data = bytearray(_good())
    data[-10] ^= 0xFF
    with pytest.raises(CheckpointError, match="checksum"):
        decode_checkpoint(bytes(data), "loc")


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x80\x05 not ours at all", "not a ray_serving_ext checkpoint"),
        (pickle.dumps({"format_version": 1, "state": {}}), "not a ray_serving_ext checkpoint"),
        (CHECKPOINT_MAGIC + b"{not json}\n" + b"x", "header"),
        (CHECKPOINT_MAGIC + b'{"format_version": 1}\n', "header"),
    ],
)
def test_foreign_or_broken_headers(data, match):
    with pytest.raises(CheckpointError, match=match):
        decode_checkpoint(data, "loc")


def test_valid_envelope_with_unreadable_or_wrong_state():
    with pytest.raises(CheckpointError, match="cannot be read"):
        decode_checkpoint(_envelope(b"definitely not a pickle"), "loc")
    with pytest.raises(CheckpointError, match="no list of applications"):
        decode_checkpoint(_envelope(pickle.dumps({"apps": 1})), "loc")


def test_other_format_version_is_refused():
    data = _envelope(pickle.dumps({"applications": []}), fmt=CHECKPOINT_FORMAT_VERSION + 1, version="0.1.0")
    with pytest.raises(CheckpointError, match=rf"format {CHECKPOINT_FORMAT_VERSION + 1}.*reads format"):
        decode_checkpoint(data, "loc")


@pytest.mark.parametrize("version, ok", [("0.1.99", True), ("0.2.0", False), ("1.0.0", False), ("dev", False)])
def test_package_version_compatibility(version, ok, monkeypatch):
    monkeypatch.setattr(ckpt, "package_version", lambda: "0.1.0")
    data = _envelope(pickle.dumps({"applications": []}), version=version)
    if ok:
        assert decode_checkpoint(data, "loc") == {"applications": []}
    else:
        with pytest.raises(CheckpointError, match=f"ray_serving_ext {version}.*not compatible"):
            decode_checkpoint(data, "loc")


def test_release_series():
    assert ckpt.release_series("0.1.3") == (0, 1)
    assert ckpt.release_series("1.4.0rc1") == ckpt.release_series("1.0") == (1,)
    with pytest.raises(ValueError):
        ckpt.release_series("latest")


def test_header_records_versions_and_checksum():
    data = _good()
    header, payload = ckpt._read_header(data, "loc")
    assert header["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert header["package_version"] == ckpt.package_version()
    assert header["size"] == len(payload) and header["sha256"] == hashlib.sha256(payload).hexdigest()


def test_preflight_refuses_corrupt_file_and_changes_nothing(tmp_path):
    manager = make_checkpoint_manager(f"file://{tmp_path}")
    manager.save(_state())
    path = tmp_path / CHECKPOINT_KEY
    path.write_bytes(path.read_bytes()[:-7])
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        preflight_checkpoint(manager)
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    assert path.read_bytes() == before and os.listdir(tmp_path) == [CHECKPOINT_KEY]


class _ReadOnlyStore(DirectoryKVStore):
    def put(self, key: str, val: bytes) -> bool:
        return False


class _BrokenStore(DirectoryKVStore):
    def get(self, key: str):
        raise ConnectionError("backend down")


def test_preflight_and_save_report_unwritable_or_unreadable_stores(tmp_path):
    read_only = CheckpointManager(_ReadOnlyStore(str(tmp_path)), "ro-store")
    with pytest.raises(CheckpointError, match="Cannot write the checkpoint at ro-store"):
        preflight_checkpoint(read_only)
    with pytest.raises(CheckpointError, match="refused"):
        read_only.save(_state())
    with pytest.raises(CheckpointError, match="Could not read the checkpoint at broken.*backend down"):
        preflight_checkpoint(CheckpointManager(_BrokenStore(str(tmp_path)), "broken"))


def test_default_gcs_manager_still_works_with_the_envelope():
    manager = CheckpointManager(ckpt.RayInternalKVStore())
    assert "key-value store" in manager.where
    assert decode_checkpoint(encode_checkpoint({"applications": []}), manager.where) == {"applications": []}


# ---- runtime_env packages (code shipped in a working_dir lives in the lost cluster's GCS) ----

PKG = "gcs://_ray_pkg_0123abcd.zip"


class _RecordingStore(DirectoryKVStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.log: list = []

    def put(self, key: str, val: bytes) -> bool:
        self.log.append(("put", key))
        return super().put(key, val)

    def delete(self, key: str) -> None:
        self.log.append(("delete", key))
        super().delete(key)


def _state_with_package(uri: str = PKG) -> dict:
    state = _state()
    spec = state["applications"][0]["built"].deployments[0]
    spec.config.setdefault("ray_actor_options", {})["runtime_env"] = {"working_dir": uri, "env_vars": {"A": "1"}}
    return state


@pytest.fixture
def fake_gcs(monkeypatch):
    """The connected cluster's GCS key-value store, as a dict."""
    gcs: dict = {}
    monkeypatch.setattr(ckpt, "_ray_connected", lambda: True)
    monkeypatch.setattr(ckpt, "_gcs_get", gcs.get)
    monkeypatch.setattr(ckpt, "_gcs_exists", lambda uri: uri in gcs)
    monkeypatch.setattr(ckpt, "_gcs_put", gcs.__setitem__)
    return gcs


def test_package_uris_are_found_in_deployment_options():
    assert ckpt.package_uris(_state_with_package()) == [PKG]
    assert ckpt.package_uris(_state()) == []
    assert ckpt.package_key(PKG) == "runtime-env-package-_ray_pkg_0123abcd.zip"


def test_packages_are_kept_before_the_checkpoint_and_restored_into_a_new_cluster(tmp_path, fake_gcs):
    fake_gcs[PKG] = b"zip-bytes"
    store = _RecordingStore(str(tmp_path))
    manager = CheckpointManager(store, "rec")
    manager.save(_state_with_package())
    assert store.log == [("put", ckpt.package_key(PKG)), ("put", CHECKPOINT_KEY)]
    manager.save(_state_with_package())  # already kept: not copied again
    assert store.log[-1] == ("put", CHECKPOINT_KEY) and len(store.log) == 3
    fake_gcs.clear()  # the head node is lost; a new cluster has an empty GCS
    restored = pickle.loads(pickle.dumps(manager)).load()
    assert fake_gcs == {PKG: b"zip-bytes"}
    assert ckpt.package_uris(restored) == [PKG]


def test_unreferenced_packages_are_deleted_and_clear_removes_them(tmp_path, fake_gcs):
    fake_gcs.update({PKG: b"one", "gcs://_ray_pkg_other.zip": b"two"})
    manager = CheckpointManager(DirectoryKVStore(str(tmp_path)), "dir")
    manager.save(_state_with_package())
    manager.save(_state_with_package("gcs://_ray_pkg_other.zip"))  # the app was redeployed with new code
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{CHECKPOINT_KEY}.kv", f"{ckpt.package_key('gcs://_ray_pkg_other.zip')}.kv"]
    )
    fresh = CheckpointManager(DirectoryKVStore(str(tmp_path)), "dir")  # e.g. a restarted controller
    fresh.clear()
    assert os.listdir(tmp_path) == []


def test_missing_package_is_a_clear_preflight_error(tmp_path, fake_gcs):
    fake_gcs[PKG] = b"zip"
    manager = make_checkpoint_manager(f"file://{tmp_path}")
    manager.save(_state_with_package())
    os.remove(tmp_path / ckpt.package_key(PKG))
    with pytest.raises(CheckpointError, match=f"references runtime_env package {PKG}"):
        preflight_checkpoint(manager)
    fake_gcs.clear()
    with pytest.raises(CheckpointError, match="missing from the store"):
        manager.load()


def test_package_missing_from_the_cluster_is_skipped_with_a_warning(tmp_path, fake_gcs, caplog):
    manager = make_checkpoint_manager(f"file://{tmp_path}")
    manager.save(_state_with_package())
    assert os.listdir(tmp_path) == [CHECKPOINT_KEY]
    assert "not checkpointed" in caplog.text


def test_cluster_kv_store_does_not_copy_packages(fake_gcs):
    manager = CheckpointManager(ckpt.RayInternalKVStore())
    assert not manager.carries_packages
