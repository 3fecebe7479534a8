"""Public checkpoint API: implement `KVStoreBase` for a ``custom://`` checkpoint backend.

    from ray_serving_ext.checkpoint import KVStoreBase

    class MyStore(KVStoreBase):
        def __init__(self, path: str, **options: str): ...
        def get_storage_key(self, key: str) -> str: ...
        def put(self, key: str, val: bytes) -> bool: ...   # atomic: old or new value, whole
        def get(self, key: str) -> bytes | None: ...
        def delete(self, key: str) -> None: ...

    serve.start(detached=True, checkpoint_path="custom://my_module.MyStore/some/path?opt=1")

``custom://importable.module.Class/path?k=v`` instantiates ``Class("some/path", k="v")``
in the process calling ``serve.start`` and pickles it to the controller, so the module
must be importable on the head node too. See `KVStoreBase` for the contract.
"""

from ray_serving_ext._private.checkpoint import CheckpointError, KVStoreBase

__all__ = ["CheckpointError", "KVStoreBase"]
