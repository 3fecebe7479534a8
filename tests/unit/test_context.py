"""`serve.get_replica_context()`'s shape, as Ray Serve 2.60 gives it."""

from ray_serving_ext._private.common import DeploymentID, ReplicaID
from ray_serving_ext.context import ReplicaContext


def test_replica_context_reads_app_deployment_and_tag_from_its_replica_id():
    ctx = ReplicaContext(ReplicaID("abc123", DeploymentID("Model", "app")))
    assert (ctx.app_name, ctx.deployment, ctx.replica_tag) == ("app", "Model", "abc123")
    assert ctx.replica_id.unique_id == "abc123" and ctx.replica_id.deployment_id.name == "Model"
    assert ctx.replica_id.to_full_id_str() == "SERVE_REPLICA::app#Model#abc123"
    assert ctx.rank is None and ctx.world_size == 0
