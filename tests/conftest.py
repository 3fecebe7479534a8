import os
import sys

# Make `tests` importable as a package and the repo root importable by replicas.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Every Serve instance serves its REST API on 127.0.0.1:8266 unless RAY_SERVE_EXT_ADMIN_PORT
# says otherwise. Tests run many instances and clusters on one machine at once, so theirs is
# off (0) unless a test gives it a free port; tests/unit/test_admin_defaults.py checks the default.
os.environ.setdefault("RAY_SERVE_EXT_ADMIN_PORT", "0")
