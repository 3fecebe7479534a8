"""Apps, a custom KVStoreBase and the driver used by the checkpoint tests (importable by reference)."""
