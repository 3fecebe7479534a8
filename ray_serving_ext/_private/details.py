"""The controller's state as Ray Serve's detail schemas (`schema.ServeInstanceDetails`).

This is what `GET /api/serve/applications/` returns in Ray Serve, and what
dashboards and operators read. Every builder here only reads the managers'
state; the result is validated through the schema before it leaves the
controller, so a field that drifts from the contract fails loudly.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from ray_serving_ext._private.application_state import ApplicationState, ApplicationStateManager
from ray_serving_ext._private.deployment_state import DeploymentState, DeploymentStateManager, required_resources
from ray_serving_ext._private.proxy_state import ProxyStateManager
from ray_serving_ext.config import HTTPOptions
from ray_serving_ext.config_file import DeploymentSchema, HTTPOptionsSchema
from ray_serving_ext.schema import APIType, ServeInstanceDetails

# DeploymentConfig fields that the file's DeploymentSchema does not take as they are stored.
_NOT_IN_FILE_SCHEMA = {"name"}


def replica_details(record: Any) -> Dict[str, Any]:
    return {
        "replica_id": record.replica_id, "state": record.state.value, "pid": record.pid,
        "start_time_s": record.start_time, "node_id": record.node_id or None, "node_ip": record.node_ip or None,
        "actor_id": record.actor_id or None, "actor_name": record.actor_name,
        "log_file_path": record.log_path or None,
    }


def deployment_schema(name: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """The options a deployment runs with, in the config file's DeploymentSchema shape."""
    fields = DeploymentSchema.model_fields
    options = {k: v for k, v in config.items() if k in fields and k not in _NOT_IN_FILE_SCHEMA and v is not None}
    if options.get("autoscaling_config") is not None:
        options.pop("num_replicas", None)  # autoscaling sets the count; the schema takes one or the other
    return {"name": name, **options}


def deployment_details(state: DeploymentState) -> Dict[str, Any]:
    config = state.config.model_dump(mode="json")
    return {
        "name": state.id.name,
        "status": state.status.value,
        "status_trigger": state.trigger.value,
        "message": state.message,
        "deployment_config": deployment_schema(state.id.name, config),
        "target_num_replicas": max(0, int(state.target_num_replicas)),
        "required_resources": required_resources(state.config.ray_actor_options or {}),
        "replicas": [replica_details(r) for r in state.replicas.values()],
    }


def application_details(app: ApplicationState, deployments: DeploymentStateManager) -> Dict[str, Any]:
    states = [(d, deployments.get(d)) for d in app.deployment_ids()]
    return {
        "name": app.name,
        "route_prefix": app.route_prefix,
        "docs_path": None,
        "status": app.status.value,
        "message": app.message,
        "last_deployed_time_s": app.deployed_at,
        "deployed_app_config": app.config,
        "source": (APIType.DECLARATIVE if app.config is not None else APIType.IMPERATIVE).value,
        "deployments": {d.name: deployment_details(s) for d, s in states if s is not None},
        "external_scaler_enabled": app.external_scaler_enabled,
    }


def proxy_details(proxies: ProxyStateManager, actor_id_of: Any) -> Dict[str, Dict[str, Any]]:
    """One entry per node (Ray Serve's shape): its first proxy's actor, the node's status."""
    statuses = proxies.statuses()
    out: Dict[str, Dict[str, Any]] = {}
    for rec in proxies.records():
        out.setdefault(rec.node_id, {"node_id": rec.node_id, "status": statuses[rec.node_id].value,
                                     "actor_id": actor_id_of(rec.actor), "actor_name": rec.actor_name})
    return out


def instance_details(
    *, apps: ApplicationStateManager, deployments: DeploymentStateManager, proxies: ProxyStateManager,
    http_options: HTTPOptions, proxy_location: str, target_capacity: Optional[float],
    controller_info: Dict[str, Any], started_at: float, actor_id_of: Any,
    source: Optional[APIType] = None,
) -> Dict[str, Any]:
    """Everything as a JSON-ready `ServeInstanceDetails` dict (applications of `source` only, if given)."""
    applications: List[ApplicationState] = [a for a in apps.apps.values()]
    if source is not None:
        wanted = APIType(source)
        applications = [a for a in applications
                        if (APIType.DECLARATIVE if a.config is not None else APIType.IMPERATIVE) == wanted]
    http = {k: v for k, v in http_options.model_dump().items() if k in HTTPOptionsSchema.model_fields}
    now = time.time()
    details = {
        "controller_info": controller_info,
        "proxy_location": proxy_location,
        "http_options": http,
        "proxies": proxy_details(proxies, actor_id_of),
        "applications": {a.name: application_details(a, deployments) for a in applications},
        "target_capacity": target_capacity,
        "controller_health_metrics": {"timestamp": now, "controller_start_time": started_at,
                                      "uptime_s": now - started_at},
    }
    # Unset fields stay out, as in Ray Serve's REST API: a null would read as "set to null".
    return ServeInstanceDetails.model_validate(details).model_dump(mode="json", exclude_unset=True)
