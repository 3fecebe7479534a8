"""The README's config example is a real file that validates, and its commands exist."""

import os

from ray_serving_ext.config_file import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_readme_config_example_is_the_tested_file():
    readme = _read("README.md")
    example = _read("examples", "serve_config.yaml")
    assert example.strip() in readme, "README must show examples/serve_config.yaml verbatim"
    schema = load_config_file(os.path.join(ROOT, "examples", "serve_config.yaml"))
    assert [a.name for a in schema.applications] == ["hello", "classifier"]


def test_readme_setup_commands_point_at_real_files():
    readme = _read("README.md")
    assert "python examples/hello.py" in readme
    assert "bash ci/test.sh" in readme
    assert os.path.exists(os.path.join(ROOT, "ci", "test.sh"))
    assert "bash benchmarks/run.sh" in readme
