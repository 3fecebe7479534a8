"""Application modules imported by import path in the CLI and config-deploy tests."""
