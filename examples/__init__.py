"""Small, runnable ray_serving_ext examples.

Each module builds an application named ``app`` at import time, so it can be
deployed from Python (``serve.run(examples.hello.app)``) or run as a script
(``python examples/hello.py``), which serves it on http://127.0.0.1:8000.
"""
