"""Fault tests reuse the deployment fixtures: real ONNX versions, local targets, process cleanup."""

from tests.deployments.conftest import (  # noqa: F401  (fixtures)
    adder_model,
    dev_target,
    runtime_processes,
    system,
    versions,
)
