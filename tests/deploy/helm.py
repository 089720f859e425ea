"""Checks the Helm chart with the Helm SDK: strict lint; renders with default values and with every
optional feature on; each manifest must pass `kubernetes-validate --strict` for Kubernetes 1.30 and
the newest version it bundles. kubernetes-validate has no schema for custom resources (it only
warns), so those are validated by validate-crds.mjs against their operator's CRD schema instead.
Also checks that bad values are refused. Exits 1 on any failure.

Usage: helm.py CHART_DIR NODE_TOOLS_DIR"""

import os
import subprocess
import sys
import tempfile

import helm_python as helm

KUBERNETES_VERSIONS = ["1.30.0", None]  # None: kubernetes-validate's newest bundled schemas

ALL_FEATURES = {
    "replicaCount": 2,
    "engine": "nats",
    "nats": {"url": "nats://nats.messaging:4222", "replicas": 3, "tokenSecret": "nats-token", "credentialsSecret": "nats-creds"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "podDisruptionBudget": {"enabled": True},
    "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
    "dashboards": {"enabled": True},
    "tracing": {"otlpEndpoint": "http://otel-collector.observability:4317"},
    "config": {
        "extraEnv": {"GRPC_CHAT_MAX_ROOMS_PER_CHAT": "32"},
        "corsAllowedOrigins": "https://chat.example.com",
        "wsAllowedOrigins": "https://chat.example.com",
    },
    "serviceAccount": {"annotations": {"example.com/role": "chat"}},
    "podAnnotations": {"example.com/team": "chat"},
    "imagePullSecrets": [{"name": "registry"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
    "tls": {"secret": "chat-tls", "clientAuth": True},
    "auth": {"keysSecret": "chat-jwt", "jwksKey": "jwks.json", "audience": "grpc-chat", "allowAnonymous": "public-*:sub"},
}


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


CUSTOM_RESOURCES = {"ServiceMonitor"}


def validate_custom_resource(path, node_tools):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validate-crds.mjs")
    result = subprocess.run(["node", script, path], cwd=node_tools, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"{path}: {result.stdout}{result.stderr}")


def validate(name, manifests, work, node_tools):
    kinds = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt") or not text.strip():
            continue
        path = os.path.join(work, f"{name}-{os.path.basename(template)}")
        with open(path, "w") as handle:
            handle.write(text)
        kind = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("kind:"))
        kinds.append(kind)
        if kind in CUSTOM_RESOURCES:
            validate_custom_resource(path, node_tools)
            continue
        for version in KUBERNETES_VERSIONS:
            command = ["kubernetes-validate", "--strict", path]
            if version:
                command[1:1] = ["-k", version]
            result = subprocess.run(command, capture_output=True, text=True)
            output = result.stdout + result.stderr
            if result.returncode != 0 or "WARN" in output:
                fail(f"{name} {template} for Kubernetes {version or 'newest'}:\n{output}")
    print(f"{name}: {', '.join(kinds)} valid for Kubernetes {' and '.join(v or 'newest' for v in KUBERNETES_VERSIONS)}")
    return kinds


def main():
    chart_dir, node_tools = sys.argv[1], sys.argv[2]
    report = helm.lint(chart_dir, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        fail(f"helm lint --strict: {problems}")
    print("helm lint --strict: ok")

    chart = helm.Chart.load(chart_dir)
    with tempfile.TemporaryDirectory() as work:
        defaults = validate(
            "defaults", chart.render({}, name="chat", namespace="chat", is_install=True), work, node_tools
        )
        everything = validate(
            "all-features",
            chart.render(ALL_FEATURES, name="chat", namespace="chat", is_install=True),
            work,
            node_tools,
        )
        rendered = "\n".join(chart.render(ALL_FEATURES, name="chat", namespace="chat", is_install=True).values())
    for wanted in [
        "GRPC_CHAT_TLS_CERT: /etc/grpc-chat/tls/tls.crt",
        "GRPC_CHAT_TLS_CLIENT_CA: /etc/grpc-chat/tls/ca.crt",
        'GRPC_CHAT_JWT_JWKS_FILE: "/etc/grpc-chat/auth/jwks.json"',
        "secretName: chat-tls",
        "secretName: chat-jwt",
        "path: /healthz",
    ]:
        if wanted not in rendered:
            fail(f"all-features render lacks {wanted!r}")
    if set(defaults) != {"ConfigMap", "Deployment", "Service", "ServiceAccount"}:
        fail(f"unexpected default kinds {defaults}")
    for kind in ["ServiceMonitor", "PodDisruptionBudget", "HorizontalPodAutoscaler"]:
        if kind not in everything:
            fail(f"{kind} missing with every feature on")

    for bad, phrase in [
        ({"terminationGracePeriodSeconds": 10}, "must exceed preStopSleepSeconds"),
        ({"config": {"logFormat": "xml"}}, "logFormat"),
        ({"replicas": 3}, "replicas"),
        ({"replicaCount": 2}, "set engine: nats"),
        ({"autoscaling": {"enabled": True}}, "set engine: nats"),
        ({"engine": "redis"}, "engine"),
    ]:
        try:
            chart.render(bad, name="chat", namespace="chat", is_install=True)
        except helm.HelmError as error:
            if phrase not in str(error):
                fail(f"{bad} refused, but without naming {phrase!r}: {error}")
        else:
            fail(f"{bad} was accepted")
    print("bad values refused: ok")


if __name__ == "__main__":
    main()
