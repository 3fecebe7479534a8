import os
import sys

# Make `tests` importable as a package and the repo root importable by replicas.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
