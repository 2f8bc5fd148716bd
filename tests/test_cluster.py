"""``cluster.yaml`` is valid for Ray's cluster launcher and keeps the cluster private."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_rays_own_validation() -> None:
    validate_config(prepare_config(_config()))


def test_a_misspelled_key_fails_the_same_validation() -> None:
    config = _config()
    config["available_node_types"]["gpu"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(config))


def test_nodes_run_the_pinned_ray_on_gpus() -> None:
    image = _config()["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{ray.__version__}-py3") and image.endswith("-gpu")


def test_only_ssh_is_open_and_the_dashboard_and_mlflow_stay_private() -> None:
    config = _config()
    (rule,) = config["provider"]["security_group"]["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
    assert all(r["CidrIp"].endswith("/32") for r in rule["IpRanges"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "mlflow server --host $(hostname -I" in head and "0.0.0.0" not in head
    autoscaling = config["available_node_types"]["gpu"]
    assert autoscaling["min_workers"] == 0 and autoscaling["max_workers"] >= 1
