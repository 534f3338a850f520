"""Whether the Ray cluster this driver joined can grow, and into which node types.

Both shipped cluster paths start with a head that takes no trial and no worker
(``cluster.yaml``: ``min_workers: 0``; the KubeRay manifests: ``replicas: 0``), so the resource
check must tell an autoscaling cluster (workers come for the pending trials) from a fixed one
(a trial that fits no node never runs). Ray keeps no single flag for that; what Ray 2.60
publishes in the GCS, by autoscaler:

- **v1** writes its status under ``__autoscaling_status``. So does the read-only monitor that
  every plain ``ray start --head`` runs; that one names each node ``node_<id>``
  (``format_readonly_node_type``), a real autoscaler by the node type of its config.
- **v2** (the default of ``ray up`` since Ray 2.50, and of KubeRay) writes no such key; the GCS
  says v2 is on (``is_autoscaler_v2``). ``ray up`` and KubeRay start every node with
  ``RAY_NODE_TYPE_NAME`` (so do the autoscaler's own launches), which Ray turns into the node
  label ``ray.io/node-group``; a read-only monitor's hand-started nodes have none.
- The node types an autoscaler can launch are in the GCS only where something reports them
  (``ray._private.state.state.get_cluster_config()``, where Ray Train and Data look); neither
  ``ray up`` nor KubeRay does, and then they are unknown here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Dict, Optional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Autoscaler:
    """An autoscaler of the connected cluster: ``version`` 1 or 2 (0: known only from a
    reported cluster config); ``node_types`` (name -> resources of one node) of the nodes it
    can add, ``None`` when they are not visible from the driver."""
    version: int
    node_types: Optional[Dict[str, Dict[str, float]]] = None


def _v1_running() -> bool:
    """A v1 autoscaler (not the read-only monitor) publishes its status."""
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.autoscaler._private.util import format_readonly_node_type
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    if not raw:
        return False
    report = json.loads(raw).get("autoscaler_report") or {}
    mapping = report.get("node_type_mapping") or {}
    return any(kind != format_readonly_node_type(key) for key, kind in mapping.items())


def _v2_running() -> bool:
    import ray
    from ray._raylet import RAY_NODE_GROUP_KEY
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if not is_autoscaler_v2(fetch_from_server=True):
        return False
    return any(n.get("Alive") and (n.get("Labels") or {}).get(RAY_NODE_GROUP_KEY)
               for n in ray.nodes())


def _reported_node_types() -> Optional[Dict[str, Dict[str, float]]]:
    """Node groups a cluster config in the GCS says can grow (max_count -1: unbounded)."""
    import ray._private.state

    config = ray._private.state.state.get_cluster_config()
    if config is None:
        return None
    groups = {g.name: dict(g.resources) for g in config.node_group_configs
              if g.max_count != 0 and (g.max_count == -1 or g.max_count > g.min_count)}
    return groups or None


def autoscaler() -> Optional[Autoscaler]:
    """The connected cluster's autoscaler, or ``None`` when it has none that adds nodes (or
    the GCS cannot say: then the cluster is taken as fixed)."""
    checks = (("cluster config", _reported_node_types), ("v2", _v2_running),
              ("v1", _v1_running))
    found = {}
    for name, check in checks:
        try:
            found[name] = check()
        except Exception as e:  # an older or newer GCS without these keys
            logger.debug("autoscaler check %s failed: %s", name, e)
            found[name] = None
    types = found["cluster config"]
    version = 2 if found["v2"] else 1 if found["v1"] else 0
    if version == 0 and types is None:
        return None
    return Autoscaler(version, types)
