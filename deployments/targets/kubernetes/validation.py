"""Validate manifests against the real Kubernetes schemas (tests and the manifests export check).

Built-in kinds use the strict JSON schemas (unknown fields refused) that the `kubernetes-validate`
package ships for each Kubernetes minor version, read from its files with cached validators; the
HTTPRoute uses the Gateway API schema vendored in `schema/` (see its README), closed the same
way. `kubernetes-validate` is a development dependency: this module
imports it only when called.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
HTTPROUTE_SCHEMA = SCHEMA_DIR / "httproute-gateway.networking.k8s.io-v1.json"
DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"
OBJECT_META_REF = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta#"
# The oldest Kubernetes minor version the manifests must be valid for.
MINIMUM_KUBERNETES = "1.29"


class ManifestInvalid(Exception):
    """A manifest does not match its schema; the message says where."""


def kubernetes_versions() -> list[str]:
    """The versions manifests are checked against: the minimum supported and the newest known."""
    import kubernetes_validate

    newest = ".".join(kubernetes_validate.latest_version().split(".")[:2])
    return sorted({MINIMUM_KUBERNETES, newest}, key=lambda text: tuple(map(int, text.split("."))))


def _closed(schema: Any) -> Any:
    """Every object schema with properties refuses unknown fields (strict field validation)."""
    if isinstance(schema, dict):
        result = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in result
            and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")
        ):
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def _rewrite_references(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: (
                f"{DEFINITIONS_URI}#/$defs/{value.removesuffix('#')}"
                if key == "$ref" and value == OBJECT_META_REF
                else _rewrite_references(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rewrite_references(item) for item in schema]
    return schema


@functools.cache
def _definitions(version: str) -> dict[str, Any]:
    from importlib.resources import files

    import kubernetes_validate

    folder = files(kubernetes_validate).joinpath("kubernetes-json-schema")
    path = folder.joinpath(f"v{version}.0-local-strict", "_definitions.json")
    return json.loads(path.read_text())


@functools.cache
def _builtin_validator(version: str, api_version: str, kind: str):
    """A cached validator for a built-in kind, from kubernetes-validate's strict schemas (the
    package's own `validate` re-reads its 1.4 MB definitions on every call)."""
    from importlib.resources import files

    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    group_version = api_version.split("/")
    name = f"{kind.lower()}-{'-'.join([group_version[0].split('.')[0], *group_version[1:]])}"
    folder = files(kubernetes_validate).joinpath(
        "kubernetes-json-schema", f"v{version}.0-local-strict"
    )
    path = folder.joinpath(f"{name}.json")
    if not path.is_file():
        raise ManifestInvalid(f"kubernetes-validate has no schema for {api_version} {kind}.")
    definitions = Resource.from_contents(_definitions(version))
    registry = Registry().with_resource(DEFINITIONS_URI, definitions)
    return jsonschema.Draft202012Validator(json.loads(path.read_text()), registry=registry)


@functools.cache
def _httproute_validator(version: str):
    import jsonschema
    from referencing import Registry, Resource

    schema = _closed(_rewrite_references(json.loads(HTTPROUTE_SCHEMA.read_text())))
    definitions = Resource.from_contents(_definitions(version))
    registry = Registry().with_resource(DEFINITIONS_URI, definitions)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_manifest(manifest: dict[str, Any], version: str = MINIMUM_KUBERNETES) -> None:
    """Raise ManifestInvalid unless the object matches its kind's schema at this version."""
    name = f"{manifest.get('kind')}/{(manifest.get('metadata') or {}).get('name')}"
    api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
    if api_version == "gateway.networking.k8s.io/v1":
        validator = _httproute_validator(version)
    else:
        validator = _builtin_validator(version, api_version, kind)
    errors = sorted(
        validator.iter_errors(copy.deepcopy(manifest)),
        key=lambda error: [str(part) for part in error.absolute_path],
    )
    if errors:
        error = errors[0]
        where = ".".join(str(part) for part in error.absolute_path)
        raise ManifestInvalid(f"{name} (Kubernetes {version}): {where}: {error.message}")
