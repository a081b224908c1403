"""Cross-file checks of the deployment files that no schema can express.

Run by scripts/check-deploy.sh with the check venv's Python (PyYAML). Prints one line
per check and exits non-zero when any fails. Each check names the files it relates:

- k8s/kustomization.yaml lists every manifest of k8s/ except the *.example.yaml ones
  and the custom resources (k8s/servicemonitor.yaml: `kubectl apply -k` must work on a
  cluster without the Prometheus operator's CRDs), and every listed file exists;
- the nginx upstream lists exactly the compose replica services;
- nginx's client_max_body_size equals server.max_body_bytes of config/default.toml;
- nginx's upstream keepalive_timeout is shorter than server.keepalive_drain_secs;
- shutdown timing: Kubernetes' terminationGracePeriodSeconds and Compose's
  stop_grace_period exceed preStop sleep + server.prestop_delay_secs +
  server.shutdown_timeout_secs, so a replica is never killed mid-drain;
- the requestState key ring: every compose replica reads the same mrtr.keys_file from
  the volume the one-shot key service writes (and waits for it), none has a key in the
  file; the Deployment takes it from a required Secret, never the ConfigMap;
- the Deployment loads the ConfigMap and Secret it names, probes /readyz and /healthz;
- the ServiceMonitor selects the Service (its labels, namespace and a port it names) and
  scrapes /metrics.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
failures: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    for d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    raise SystemExit(f"FAIL no {kind} {name}")


def seconds(value: object) -> float:
    """Compose durations ("30s", "1m30s") or plain numbers of seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(value))
    if not parts:
        raise ValueError(f"not a duration: {value!r}")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    for number, unit in parts:
        total += float(number) * scale[unit]
    return total


def nginx_size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    if not m:
        raise ValueError(f"not an nginx size: {value!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def main() -> int:
    defaults = tomllib.loads((ROOT / "config/default.toml").read_text())
    server_defaults = defaults["server"]

    # --- kustomization lists every manifest
    k8s = ROOT / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = list(kustomization.get("resources", []))
    custom = sorted(
        p.name
        for p in k8s.glob("*.yaml")
        if any(d.get("apiVersion", "").startswith("monitoring.coreos.com/") for d in load_all(p))
    )
    manifests = sorted(
        p.name
        for p in k8s.glob("*.yaml")
        if p.name != "kustomization.yaml"
        and not p.name.endswith(".example.yaml")
        and p.name not in custom
    )
    missing = [m for m in manifests if m not in listed]
    check(not missing, "k8s/kustomization.yaml lists every manifest", f"not listed: {missing}")
    needs_crds = [r for r in listed if r in custom]
    check(
        not needs_crds,
        "k8s/kustomization.yaml leaves out the Prometheus operator's custom resources",
        f"listed: {needs_crds}",
    )
    absent = [r for r in listed if not (k8s / r).is_file()]
    check(not absent, "k8s/kustomization.yaml lists only existing files", f"missing: {absent}")
    examples = [r for r in listed if r.endswith(".example.yaml")]
    check(not examples, "k8s/kustomization.yaml leaves the examples out", f"listed: {examples}")

    # --- nginx upstream == compose replicas
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    replicas = sorted(
        name for name, svc in services.items() if svc.get("image") == "stateful-mcp:local"
    )
    nginx = (ROOT / "deploy/nginx.conf").read_text()
    nginx_code = "\n".join(line.split("#", 1)[0] for line in nginx.splitlines())
    upstream = re.search(r"upstream\s+stateful_mcp\s*\{(.*?)\}", nginx_code, re.S)
    servers = sorted(re.findall(r"^\s*server\s+([\w.-]+):8080\b", upstream.group(1), re.M))
    check(
        servers == replicas and len(replicas) >= 2,
        "deploy/nginx.conf upstream lists the docker-compose.yml replicas",
        f"upstream {servers}, compose {replicas}",
    )
    lb_deps = sorted(services["lb"].get("depends_on", {}))
    check(lb_deps == replicas, "docker-compose.yml: lb waits for every replica", f"{lb_deps}")

    # --- body limit
    limit = re.search(r"client_max_body_size\s+(\S+);", nginx_code)
    max_body = server_defaults["max_body_bytes"]
    check(
        limit is not None and nginx_size(limit.group(1)) == max_body,
        f"deploy/nginx.conf client_max_body_size = server.max_body_bytes ({max_body})",
        f"{limit.group(1) if limit else 'unset'}",
    )

    # --- keep-alive: nginx closes idle upstream connections before a draining replica
    # would (closing from the replica's side races nginx's next request on them)
    keepalive = re.search(r"keepalive_timeout\s+(\S+);", upstream.group(1))
    drain_keepalive = server_defaults["keepalive_drain_secs"]
    check(
        keepalive is not None and seconds(keepalive.group(1)) < drain_keepalive,
        f"deploy/nginx.conf upstream keepalive_timeout < server.keepalive_drain_secs ({drain_keepalive})",
        f"{keepalive.group(1) if keepalive else 'unset (nginx default 60s)'}",
    )

    # --- Kubernetes shutdown timing
    deployment = find(load_all(k8s / "deployment.yaml"), "Deployment", "stateful-mcp")
    config_map = find(load_all(k8s / "configmap.yaml"), "ConfigMap", "stateful-mcp-config")
    env = config_map["data"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        pre_stop_secs = float(pre_stop["sleep"]["seconds"])
    elif "exec" in pre_stop and pre_stop["exec"]["command"][0] == "sleep":
        pre_stop_secs = float(pre_stop["exec"]["command"][1])
    else:
        pre_stop_secs = 0.0
    drain = float(
        env.get("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", server_defaults["shutdown_timeout_secs"])
    )
    delay = float(env.get("STATEFUL_MCP__SERVER__PRESTOP_DELAY_SECS", 0))
    grace = float(pod.get("terminationGracePeriodSeconds", 30))
    check(
        grace > pre_stop_secs + delay + drain,
        f"k8s terminationGracePeriodSeconds ({grace:g}) > preStop ({pre_stop_secs:g}) "
        f"+ prestop delay ({delay:g}) + drain ({drain:g})",
    )

    # --- Compose shutdown timing
    for name in replicas:
        svc = services[name]
        svc_env = svc.get("environment", {})
        drain = float(
            svc_env.get("STATEFUL_MCP__SERVER__SHUTDOWN_TIMEOUT_SECS", server_defaults["shutdown_timeout_secs"])
        )
        delay = float(svc_env.get("STATEFUL_MCP__SERVER__PRESTOP_DELAY_SECS", 0))
        grace = seconds(svc.get("stop_grace_period", "10s"))
        check(
            grace > delay + drain,
            f"compose {name}: stop_grace_period ({grace:g}s) > prestop delay ({delay:g}) "
            f"+ drain ({drain:g})",
        )
        check(
            svc_env.get("STATEFUL_MCP__STORE__BACKEND") == "redis",
            f"compose {name}: STATEFUL_MCP__STORE__BACKEND=redis",
        )
    # --- Compose requestState keys: drawn per stack by a one-shot service, never a literal
    key_files = {services[name].get("environment", {}).get("STATEFUL_MCP__MRTR__KEYS_FILE") for name in replicas}
    check(
        len(key_files) == 1 and None not in key_files,
        "compose: every replica has the same STATEFUL_MCP__MRTR__KEYS_FILE",
        f"{sorted(map(str, key_files))}",
    )
    check(
        not any("STATEFUL_MCP__MRTR__KEYS" in services[name].get("environment", {}) for name in replicas),
        "compose: no replica takes STATEFUL_MCP__MRTR__KEYS from the file (a key anyone could read)",
    )
    key_file = next(iter(key_files)) or ""
    key_dir = key_file.rsplit("/", 1)[0]

    def mounts(svc: dict) -> dict[str, str]:
        # Short syntax `volume:/path[:mode]` -> {"/path": "volume"}.
        return {
            v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", []) if isinstance(v, str) and ":" in v
        }

    writers = [
        name
        for name, svc in services.items()
        if name not in replicas and "STATEFUL_MCP_MRTR_KEYS" in svc.get("environment", {})
    ]
    check(len(writers) == 1, "compose: one service writes the requestState key ring", f"{writers}")
    if len(writers) == 1:
        writer = writers[0]
        volume = mounts(services[writer]).get(key_dir)
        check(
            volume is not None and all(mounts(services[name]).get(key_dir) == volume for name in replicas),
            f"compose: every replica mounts {writer}'s volume at {key_dir}",
            f"{writer}: {volume}",
        )
        check(
            all(
                services[name].get("depends_on", {}).get(writer, {}).get("condition")
                == "service_completed_successfully"
                for name in replicas
            ),
            f"compose: every replica starts once {writer} has written the key ring",
        )

    # --- Deployment wiring
    env_from = {
        ("configMap" if "configMapRef" in e else "secret"): (e.get("configMapRef") or e.get("secretRef"))["name"]
        for e in container.get("envFrom", [])
    }
    check(
        env_from.get("configMap") == "stateful-mcp-config",
        "k8s Deployment loads the ConfigMap stateful-mcp-config",
    )
    secrets = {
        d["metadata"]["name"] for d in load_all(k8s / "secret.example.yaml") if d.get("kind") == "Secret"
    }
    check(
        env_from.get("secret") in secrets,
        "k8s Deployment loads a Secret that secret.example.yaml describes",
        f"{env_from.get('secret')} not in {sorted(secrets)}",
    )
    mrtr_ref = next(
        (
            e["valueFrom"]["secretKeyRef"]
            for e in container.get("env", [])
            if e.get("name") == "STATEFUL_MCP__MRTR__KEYS" and "secretKeyRef" in e.get("valueFrom", {})
        ),
        None,
    )
    described = {
        d["metadata"]["name"]: d.get("stringData", {})
        for d in load_all(k8s / "secret.example.yaml")
        if d.get("kind") == "Secret"
    }
    check(
        mrtr_ref is not None
        and not mrtr_ref.get("optional", False)
        and mrtr_ref["key"] in described.get(mrtr_ref["name"], {}),
        "k8s Deployment: STATEFUL_MCP__MRTR__KEYS from a required Secret key secret.example.yaml describes",
        f"{mrtr_ref}",
    )
    check(
        "STATEFUL_MCP__MRTR__KEYS" not in env,
        "k8s ConfigMap: no STATEFUL_MCP__MRTR__KEYS (a secret)",
    )
    check(
        container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and container["livenessProbe"]["httpGet"]["path"] == "/healthz",
        "k8s Deployment: readiness /readyz, liveness /healthz",
    )
    check(
        env.get("STATEFUL_MCP__STORE__BACKEND") == "redis",
        "k8s ConfigMap: STATEFUL_MCP__STORE__BACKEND=redis",
    )

    # --- ServiceMonitor selects the Service
    service = find(load_all(k8s / "service.yaml"), "Service", "stateful-mcp")
    monitor = find(load_all(k8s / "servicemonitor.yaml"), "ServiceMonitor", "stateful-mcp")
    selector = monitor["spec"]["selector"].get("matchLabels", {})
    service_labels = service["metadata"].get("labels", {})
    check(
        bool(selector) and all(service_labels.get(k) == v for k, v in selector.items()),
        "k8s ServiceMonitor selects the stateful-mcp Service by its labels",
        f"selector {selector}, Service labels {service_labels}",
    )
    check(
        monitor["metadata"].get("namespace") == service["metadata"].get("namespace"),
        "k8s ServiceMonitor is in the Service's namespace",
    )
    port_names = {p.get("name") for p in service["spec"]["ports"]}
    endpoints = monitor["spec"]["endpoints"]
    check(
        bool(endpoints)
        and all(e.get("port") in port_names and e.get("path") == "/metrics" for e in endpoints),
        "k8s ServiceMonitor scrapes /metrics on a port the Service names",
        f"{endpoints}, Service ports {sorted(port_names)}",
    )

    print(f"consistency: {len(failures)} failed" if failures else "consistency: all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
