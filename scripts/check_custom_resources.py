"""Manifests of custom resources against the OpenAPI schema of their vendored CRD.

    check_custom_resources.py CRD_FILE MANIFEST...

Run by scripts/check-deploy.sh with the check venv's Python (PyYAML, jsonschema): the
Kubernetes schemas of kubernetes-validate know no custom resource, so each object of the
CRD's kind in MANIFEST is validated here against `openAPIV3Schema` of the CRD version it
names. Strict like `kubectl apply`'s default field validation: a field the schema does
not declare is an error (the API server would prune it, or refuse it under strict field
validation). Kubernetes' own extensions (x-kubernetes-list-type, int-or-string) are not
evaluated; CEL rules (`x-kubernetes-validations`) are not either, and a CRD that has
them is reported as such.

A vendored CRD is pinned by content: the first lines of check-deploy.sh's step name the
upstream file and its git blob id, passed here as --blob; a copy edited by hand fails.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path

import jsonschema
import yaml


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def strict(schema: dict) -> dict:
    """`schema` with unknown fields refused wherever it lists the known ones."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


# What the API server requires of any object's metadata, beyond the CRD's `type: object`.
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("crd")
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--blob", help="the git blob id the CRD file must have")
    args = parser.parse_args()

    crd_bytes = Path(args.crd).read_bytes()
    if args.blob and git_blob_id(crd_bytes) != args.blob:
        print(f"FAIL {args.crd} is not the vendored upstream file (blob {args.blob})")
        return 1
    crd = yaml.safe_load(crd_bytes)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    versions = {
        f"{group}/{v['name']}": v["schema"]["openAPIV3Schema"]
        for v in crd["spec"]["versions"]
        if v.get("served")
    }
    source = crd["metadata"].get("annotations", {}).get("operator.prometheus.io/version", "")
    print(f"{kind} ({', '.join(versions)}) from {args.crd}" + (f", version {source}" if source else ""))
    unevaluated = sorted(
        {key for key in ("x-kubernetes-validations",) if key in crd_bytes.decode()}
    )
    if unevaluated:
        print(f"note: not evaluated here: {', '.join(unevaluated)}")

    problems = 0
    checked = 0
    for manifest in args.manifests:
        for doc in yaml.safe_load_all(Path(manifest).read_text()):
            if not doc or doc.get("kind") != kind:
                continue
            checked += 1
            name = f"{manifest}: {kind} {doc.get('metadata', {}).get('name')}"
            schema = versions.get(doc.get("apiVersion"))
            if schema is None:
                print(f"FAIL {name}: apiVersion {doc.get('apiVersion')} is not one of {sorted(versions)}")
                problems += 1
                continue
            schema = strict(schema)
            schema["properties"]["metadata"] = METADATA
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
            )
            for error in errors:
                path = ".".join(str(p) for p in error.path) or "(object)"
                print(f"FAIL {name}: {path}: {error.message}")
            problems += len(errors)
            if not errors:
                print(f"ok   {name}")
    if checked == 0:
        print(f"FAIL no {kind} in {args.manifests}")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
