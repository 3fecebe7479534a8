"""Annotated types and validators shared by the option schemas (`config.py`)
and the config-file schema (`config_file.py`), and the rules both apply:
route prefixes, import paths, `num_replicas`, replica placement.

Pure pydantic and stdlib: it imports nothing else from the package, so both
schema modules (and the controller) can import it without a cycle.
"""

from __future__ import annotations

import importlib
import json
from typing import Annotated, Any, Callable, Iterable, List, Optional, Tuple

from ray_serving_ext._private.constants import DIRECT_INGRESS_DEFAULT
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationInfo, field_validator

MAX_REPLICAS_PER_NODE_MAX_VALUE = 100  # Ray Serve's upper bound.
DEFAULT_KEEP_ALIVE_TIMEOUT_S = 90  # Ray Serve's uvicorn keep-alive default.
PLACEMENT_GROUP_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
NUM_REPLICAS_AND_AUTOSCALING_ERROR = (
    "Manually setting num_replicas is not allowed when autoscaling_config is provided."
)


def _reject_bool(value: Any) -> Any:
    """Refuse ``True``/``False`` where a count is expected (bool is an int subclass)."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got the boolean {value}")
    return value


def _check_queue_limit(value: int) -> int:
    if value < 1 and value != -1:
        raise ValueError("max_queued_requests must be -1 (no limit) or a positive integer")
    return value


def _check_bundles(value: List[dict]) -> List[dict]:
    if not value:
        raise ValueError("placement_group_bundles must contain at least one bundle")
    for i, bundle in enumerate(value):
        if any(v < 0 for v in bundle.values()):
            raise ValueError(f"bundle {i} has a negative resource: {bundle}")
    return value


def _check_strategy(value: str) -> str:
    if value not in PLACEMENT_GROUP_STRATEGIES:
        raise ValueError(
            f"placement_group_strategy must be one of {list(PLACEMENT_GROUP_STRATEGIES)}, "
            f"got {value!r}"
        )
    return value


def json_serializable(field: str) -> Callable[[Any], Any]:
    """A validator: its value back if None or JSON-serializable, else ValueError naming `field`."""

    def check(value: Any) -> Any:
        if value is not None:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{field} is not JSON-serializable: {e}") from None
        return value

    return check


check_json_serializable = json_serializable("user_config")


# An ``int`` that does not silently accept booleans (``num_replicas: yes`` in YAML).
Int = Annotated[int, BeforeValidator(_reject_bool)]
QueueLimit = Annotated[Int, AfterValidator(_check_queue_limit)]
Bundles = Annotated[list[dict[str, float]], AfterValidator(_check_bundles)]
Strategy = Annotated[str, AfterValidator(_check_strategy)]
ReplicasPerNode = Annotated[Int, Field(ge=1, le=MAX_REPLICAS_PER_NODE_MAX_VALUE)]


def check_num_replicas(value: Any) -> Any:
    """Return `value` if it is a valid user-given ``num_replicas``: None (not
    given), ``"auto"`` or an int >= 1 (not a bool). Else raise ValueError."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'num_replicas must be an int or "auto", got {value!r}')
    if value < 1:
        raise ValueError(f"num_replicas is expected to be larger than 0, got {value}")
    return value


def check_replicas_per_node(max_replicas_per_node: Optional[int], bundles: Optional[list]) -> None:
    """Raise ValueError if ``max_replicas_per_node`` is set together with
    placement group bundles (Ray Serve's rule)."""
    if max_replicas_per_node is not None and bundles:
        raise ValueError(
            "Setting max_replicas_per_node is not allowed when "
            "placement_group_bundles is provided."
        )


def parse_import_path(path: str) -> Tuple[str, str]:
    """Split ``"module.sub:attr"`` or ``"module.sub.attr"`` into (module, attribute).

    After a colon the attribute may be dotted (``"mod:obj.attr"``). Raises
    ValueError (``Got invalid import path "..."``, saying why) for a non-string
    or malformed path: more than one colon, no separator, or a leading or
    trailing separator.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"Import path must be a non-empty string, got {path!r}.")
    sep = ":" if ":" in path else "."
    problem = None
    if path.count(":") > 1:
        problem = "may have at most one colon"
    elif sep not in path:
        problem = (
            "must contain a dot or colon separating the module from the attribute, "
            'e.g. "module.app" or "module:app"'
        )
    elif path.startswith(sep) or path.endswith(sep):
        problem = f"may not start or end with a {'colon' if sep == ':' else 'dot'}"
    if problem:
        raise ValueError(f'Got invalid import path "{path}". An import path {problem}.')
    module, _, attr = path.partition(":") if sep == ":" else path.rpartition(".")
    return module, attr


def import_attr(import_path: str) -> Any:
    """Import `"module.sub:attr"` or `"module.sub.attr"` and return the attribute.

    After a colon, dots walk nested attributes (`"mod:obj.attr"`). Raises
    ValueError for a malformed path, ImportError / AttributeError (as Python
    does) when the module or attribute does not exist.
    """
    module_name, attr_path = parse_import_path(import_path)
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def route_prefix_clashes(apps: Iterable[Tuple[str, Optional[str]]]) -> List[Tuple[str, str, str]]:
    """The route-prefix clashes among `apps`, given as (name, route_prefix) pairs.

    Each clash is (prefix, holder, newcomer): `newcomer` asks for a prefix that
    `holder`, earlier in `apps`, already has. A None prefix (no HTTP route)
    never clashes, and an application never clashes with itself.
    """
    owners: dict = {}
    clashes: List[Tuple[str, str, str]] = []
    for name, prefix in apps:
        if prefix is None:
            continue
        holder = owners.setdefault(prefix, name)
        if holder != name:
            clashes.append((prefix, holder, name))
    return clashes


def check_ssl_pair(keyfile: Optional[str], certfile: Optional[str]) -> Optional[str]:
    """Return *keyfile*; raise ``ValueError`` unless both or neither are given."""
    if bool(keyfile) != bool(certfile):
        raise ValueError("Both ssl_keyfile and ssl_certfile must be provided together to enable HTTPS.")
    return keyfile


class SSLOptions(BaseModel):
    """The proxy's TLS fields, shared by ``HTTPOptions`` and the config file's
    ``http_options`` (Ray Serve 2.60's names). Key and certificate come together."""

    # ssl_certfile is declared first so the pair check, on ssl_keyfile, sees it.
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = Field(default=None, validate_default=True)
    ssl_keyfile_password: Optional[str] = None
    ssl_ca_certs: Optional[str] = None

    @field_validator("ssl_keyfile")
    @classmethod
    def _ssl_pair(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        return check_ssl_pair(value, info.data.get("ssl_certfile"))


class ProxyAuthOptions(BaseModel):
    """Bearer API keys the proxies require (not in Ray Serve), shared by ``HTTPOptions``
    and the config file's ``http_options``.

    ``api_keys_file`` is a path on each proxy's node holding one key per line
    (blank lines and ``#`` comments ignored); the proxy reads it again within a
    second of it changing, so keys rotate without a restart.
    ``api_keys_env`` names an environment variable of the proxies' processes
    (set where the Ray node starts, e.g. from a Kubernetes Secret) holding
    comma-separated keys. With either set, every request but the probes
    (``/-/healthz``, ``/-/routes``) needs ``Authorization: Bearer <key>``.
    """

    api_keys_file: Optional[str] = None
    api_keys_env: Optional[str] = None

    @field_validator("api_keys_file", "api_keys_env")
    @classmethod
    def _not_blank(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty string or null")
        return value


class ProxyLimitOptions(BaseModel):
    """What one client may ask of a proxy (not in Ray Serve), shared by ``HTTPOptions`` and
    the config file's ``http_options``. Defaults are generous; each may be null (no limit).

    - ``max_request_body_bytes``: a longer body (declared or sent) gets 413.
    - ``max_header_bytes``: a request line plus headers longer than this gets 431.
    - ``header_timeout_s``: a request whose headers have not all arrived this long after
      its first byte gets 408 (slowloris).
    - ``body_timeout_s``: a body that stops arriving for this long gets 408.
    - ``max_connections``: connections one proxy holds at once; one more gets 503 and is closed.
    - ``metrics_endpoint``: whether ``/-/metrics`` is served on the proxies' port.
    """

    max_request_body_bytes: Optional[int] = Field(default=1024 * 1024 * 1024, gt=0)
    max_header_bytes: Optional[int] = Field(default=64 * 1024, gt=0)
    header_timeout_s: Optional[float] = Field(default=30.0, gt=0)
    body_timeout_s: Optional[float] = Field(default=60.0, gt=0)
    max_connections: Optional[int] = Field(default=10_000, gt=0)
    metrics_endpoint: bool = True


class DirectIngressOption(BaseModel):
    """``direct_ingress`` (not in Ray Serve), shared by ``HTTPOptions`` and the config file's
    ``http_options``: the ingress replicas on a proxy's node accept its HTTP connections
    themselves, from the same listening socket, so their own application's requests skip
    the hop through the proxy's process (see README, "Direct ingress"). Off by default;
    ``RAY_SERVE_EXT_DIRECT_INGRESS=1`` in the environment of ``serve.start`` turns the
    default on.
    """

    direct_ingress: bool = Field(default_factory=lambda: DIRECT_INGRESS_DEFAULT)

