"""Ray Serve 2.60's public API, compared with ray_serving_ext's: a ratchet (no cluster needed).

What counts as public in a `ray.serve` module:
- a module with `__all__`: the names in it, except those starting with `_`
  (Ray lists `_run`/`_run_many` there, but by Python's convention they are private);
- a module without `__all__`: the names in its namespace (defined there or
  imported into it) whose object carries Ray's `@PublicAPI` annotation (any
  stability), which is what Ray's API reference is generated from.
A name exists here when the matching `ray_serving_ext` module (same dotted path)
has an attribute of that name.

What counts as an accepted parameter: the named parameters of the function
(for `serve.deployment`, whose options arrive as `**options`, the options it
validates: `config.deployment_option_names()`), and the fields of the pydantic
models.

Every missing name or parameter must be listed in `DELIBERATELY_LEFT_OUT`
(with the reason) or in `NOT_YET`; every `NOT_YET` entry must still be
missing, so the list shrinks as work lands and cannot hide what exists.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Dict, List, Set

import pytest

rs = pytest.importorskip("ray.serve", reason="ray[serve] 2.60 is not installed: nothing to compare against")

import ray_serving_ext as serve  # noqa: E402
from ray_serving_ext import config, config_file  # noqa: E402

MODULES = ["", ".config", ".schema", ".exceptions", ".handle", ".request_router", ".metrics",
           ".autoscaling_policy"]

DELIBERATELY_LEFT_OUT: Dict[str, str] = {}

_TODO = "issue 13, not implemented yet"
_NOT_YET_NAMES: Dict[str, List[str]] = {}  # module -> names still missing
_NOT_YET_PARAMS: Dict[str, List[str]] = {}  # callable or schema -> parameters still missing
NOT_YET: Dict[str, str] = {
    **{f"{module}.{name}": _TODO for module, names in _NOT_YET_NAMES.items() for name in names},
    **{f"{target}({param})": _TODO for target, params in _NOT_YET_PARAMS.items() for param in params},
}


def _is_public_api(obj: Any) -> bool:
    kind = getattr(obj, "_annotated_type", None)
    return getattr(obj, "_annotated", None) == getattr(obj, "__name__", None) and \
        getattr(kind, "value", None) == "PublicAPI"


def _public_names(module: Any) -> List[str]:
    """The module's public names, by the rule in this file's docstring."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return [n for n in names if not n.startswith("_")]
    return [n for n, obj in vars(module).items() if not n.startswith("_") and _is_public_api(obj)]


def _missing_names() -> Set[str]:
    missing = set()
    for suffix in MODULES:
        theirs = importlib.import_module(f"ray.serve{suffix}")
        try:
            ours = importlib.import_module(f"ray_serving_ext{suffix}")
        except ImportError:
            ours = None
        missing |= {f"ray.serve{suffix}.{n}" for n in _public_names(theirs) if not hasattr(ours, n)}
    return missing


def _params(fn: Callable[..., Any]) -> Set[str]:
    return {name for name, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _fields(model: Any) -> Set[str]:
    fields = getattr(model, "model_fields", None)
    return set(fields if isinstance(fields, dict) else model.__fields__)


def _compared() -> Dict[str, tuple]:
    """target -> (Ray Serve's parameter names, ours); None for ours when the target is missing."""
    from ray.serve import schema as rsch
    from ray.serve.handle import DeploymentHandle as TheirHandle

    run_many = getattr(serve, "run_many", None)
    return {
        "serve.deployment": (_params(rs.deployment) - {"_func_or_class"},
                             set(config.deployment_option_names())),
        "serve.run": (_params(rs.run), _params(serve.run)),
        "serve.run_many": (_params(rs.run_many), _params(run_many) if run_many else None),
        "serve.start": (_params(rs.start), _params(serve.start)),
        "serve.batch": (_params(rs.batch), _params(serve.batch)),
        "DeploymentHandle.options": (_params(TheirHandle.options), _params(serve.DeploymentHandle.options)),
        "HTTPOptions": (_fields(rs.HTTPOptions), _fields(config.HTTPOptions)),
        **{name: (_fields(getattr(rsch, name)), _fields(getattr(config_file, name)))
           for name in ("ServeDeploySchema", "ServeApplicationSchema", "DeploymentSchema", "HTTPOptionsSchema")},
    }


def _missing_params() -> Set[str]:
    missing = set()
    for target, (theirs, ours) in _compared().items():
        if ours is None:
            if f"ray.serve.{target.split('.')[-1]}" not in NOT_YET:
                missing.add(f"{target}(*)")
            continue
        missing |= {f"{target}({param})" for param in theirs - ours}
    return missing


def test_every_missing_name_and_parameter_is_listed():
    missing = _missing_names() | _missing_params()
    unlisted = sorted(missing - set(NOT_YET) - set(DELIBERATELY_LEFT_OUT))
    assert not unlisted, f"Ray Serve 2.60 has these and ray_serving_ext does not (add them or list them): {unlisted}"


def test_not_yet_entries_are_still_missing():
    missing = _missing_names() | _missing_params()
    landed = sorted(set(NOT_YET) - missing)
    assert not landed, f"These exist now: remove them from NOT_YET in {__file__}: {landed}"


def test_lists_are_disjoint_and_give_reasons():
    assert not set(NOT_YET) & set(DELIBERATELY_LEFT_OUT)
    assert all(isinstance(reason, str) and reason for reason in DELIBERATELY_LEFT_OUT.values())


def test_the_rule_finds_known_names():
    """The comparison is not vacuous: it sees names both sides have, and catches a fake one."""
    names = _missing_names()
    assert "ray.serve.deployment" not in names and "ray.serve.metrics.Counter" not in names
    assert "deployment" in _public_names(rs) and "Counter" in _public_names(importlib.import_module("ray.serve.metrics"))
    assert "BackPressureError" in _public_names(importlib.import_module("ray.serve.exceptions"))
    theirs, ours = _compared()["serve.batch"]
    assert "batch_size_fn" in theirs and "batch_size_fn" in ours
