"""Benchmark harness: ray_serving_ext against Ray Serve and a plain-uvicorn ceiling.

Entry point: ``python -m benchmarks.run`` (see BENCHMARKS.md). Each system is
measured in its own subprocess with its own fresh local Ray, through the
public Serve API only, so the same code measures both systems.
"""
