"""The rendered Kubernetes manifests: valid against the schemas, and consistent with each other and with pushgate.

Every overlay is rendered with `kubectl kustomize`; core kinds are validated
with kubernetes-validate (strict, offline), custom resources against the
strict schemas in deploy/schemas/. The invariants are the ones a broken
deployment would violate silently: a grace period shorter than the drain, a
probe on a path or port pushgate does not serve, a ServiceMonitor that
scrapes nothing, a root container.
"""

import json
import re

import jsonschema
import kubernetes_validate
import pytest

from support import (
    K8S,
    KUBE_VERSIONS,
    OVERLAYS,
    ROOT,
    admin_port,
    by_name,
    config,
    container,
    container_port,
    drain_timeout,
    one,
    pod_spec,
    render,
    volume_by_name,
)

SCHEMAS = ROOT / "deploy" / "schemas"
overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def crd_schema_file(doc):
    group, _, version = doc["apiVersion"].rpartition("/")
    return SCHEMAS / f"{group}_{doc['kind'].lower()}_{version}.json"


def is_custom(doc):
    group = doc["apiVersion"].rpartition("/")[0]
    return group.endswith("coreos.com") or group == "keda.sh"


@overlays
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_core_objects_validate_against_kubernetes_schemas(overlay, version):
    for doc in render(overlay):
        if is_custom(doc):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} on {version}: {e.message}")


@overlays
def test_custom_resources_validate_against_vendored_crd_schemas(overlay):
    custom = [d for d in render(overlay) if is_custom(d)]
    assert {d["kind"] for d in custom} >= {"ServiceMonitor", "PrometheusRule"}
    for doc in custom:
        path = crd_schema_file(doc)
        assert path.exists(), f"no schema for {doc['apiVersion']} {doc['kind']} in deploy/schemas"
        validator = jsonschema.Draft202012Validator(json.loads(path.read_text()))
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{overlay}: {doc['kind']}/{doc['metadata']['name']}:\n" + "\n".join(errors)


def test_crd_schemas_reject_unknown_fields():
    """The vendored schemas are strict: a misspelt field is an error, not ignored."""
    so = one(render("example"), "ScaledObject")
    typo = json.loads(json.dumps(so))
    typo["spec"]["minReplicaCont"] = 2
    validator = jsonschema.Draft202012Validator(json.loads(crd_schema_file(so).read_text()))
    assert any("minReplicaCont" in e.message for e in validator.iter_errors(typo))


@overlays
def test_grace_period_covers_prestop_pause_and_drain(overlay):
    docs = render(overlay)
    spec, ctr = pod_spec(docs), container(docs)
    pause = ctr["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = drain_timeout(config(docs))
    grace = spec["terminationGracePeriodSeconds"]
    # Kubernetes counts the preStop hook inside the grace period; leave at
    # least 5 s to requeue what is left and close the broker connection.
    assert pause >= 3, "endpoints need a few seconds to drop the pod"
    assert grace >= pause + drain + 5, f"grace {grace}s < preStop {pause}s + drain {drain}s + 5s"


@overlays
def test_probes_hit_real_endpoints_on_the_admin_port(overlay):
    docs = render(overlay)
    ctr, port = container(docs), admin_port(config(docs))
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container_port(ctr, ctr[probe]["httpGet"]["port"]) == port, probe


@overlays
def test_service_selects_the_pods_and_targets_the_admin_port(overlay):
    docs = render(overlay)
    svc, deploy = by_name(docs, "Service", "pushgate"), one(docs, "Deployment")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [admin] = [p for p in svc["spec"]["ports"] if p["name"] == "admin"]
    assert container_port(container(docs), admin["targetPort"]) == admin_port(config(docs))


@overlays
def test_servicemonitor_scrapes_the_service_admin_port(overlay):
    docs = render(overlay)
    svc, sm = by_name(docs, "Service", "pushgate"), one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["metadata"].get("namespace") == svc["metadata"].get("namespace")
    service_ports = {p["name"] for p in svc["spec"]["ports"]}
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports, f"ServiceMonitor port {endpoint['port']} not on the Service"
        assert endpoint["port"] == "admin" and endpoint.get("path", "/metrics") == "/metrics"


@overlays
def test_disruption_budget_covers_the_pods_and_leaves_one_up(overlay):
    docs = render(overlay)
    pdb = one(docs, "PodDisruptionBudget")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert min_replicas(docs) >= 2, "with one replica the budget blocks every node drain"


def min_replicas(docs):
    kinds = {d["kind"] for d in docs}
    if "ScaledObject" in kinds:
        return one(docs, "ScaledObject")["spec"]["minReplicaCount"]
    if "HorizontalPodAutoscaler" in kinds:
        return one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    return one(docs, "Deployment")["spec"]["replicas"]


@overlays
def test_exactly_one_autoscaler_owns_the_replica_count(overlay):
    docs = render(overlay)
    scalers = [d for d in docs if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")]
    assert len(scalers) == 1, "KEDA and an HPA would fight over the replicas"
    deploy = one(docs, "Deployment")
    assert "replicas" not in deploy["spec"], "a fixed replicas field is reset on every apply"
    target = scalers[0]["spec"]["scaleTargetRef"]
    assert target["name"] == deploy["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"


def test_keda_scales_on_every_configured_input_queue():
    docs = render("example")
    so, cfg = one(docs, "ScaledObject"), config(docs)
    inputs = {q["name"] for q in cfg["amqp"]["inputs"]}
    triggers = so["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"rabbitmq"}
    assert {t["metadata"]["queueName"] for t in triggers} == inputs
    for t in triggers:
        assert t["metadata"]["mode"] == "QueueLength" and int(t["metadata"]["value"]) > 0
        auth = by_name(docs, "TriggerAuthentication", t["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            secret = by_name(docs, "Secret", ref["name"])
            assert ref["key"] in secret.get("data", {}), f"Secret {ref['name']} has no key {ref['key']}"


@overlays
def test_pod_runs_as_non_root_with_a_read_only_root(overlay):
    docs = render(overlay)
    spec, ctx = pod_spec(docs), container(docs)["securityContext"]
    pod_ctx = spec["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and ctx["runAsNonRoot"] is True
    assert pod_ctx["runAsUser"] != 0 and pod_ctx["runAsGroup"] != 0
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert pod_ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False


@overlays
def test_config_is_mounted_where_the_container_reads_it(overlay):
    docs = render(overlay)
    ctr = container(docs)
    env = {e["name"]: e for e in ctr["env"]}
    path = env["PUSHGATE_CONFIG"]["value"]
    mount = next(m for m in ctr["volumeMounts"] if m["name"] == "config")
    assert path == f"{mount['mountPath']}/pushgate.toml"
    assert "url" not in config(docs).get("amqp", {}), "the broker password belongs in a Secret"
    assert env["PUSHGATE_AMQP__URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"


def secret_files(cfg):
    """Every `*_file` key of the config: (dotted key, path)."""
    out = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif key.endswith("_file"):
                out.append((prefix + key, value))

    walk(cfg, "")
    return out


@overlays
def test_every_key_file_is_a_mounted_secret_key(overlay):
    docs = render(overlay)
    ctr, files = container(docs), secret_files(config(docs))
    assert files, "the example config names its key files"
    for key, path in files:
        mounts = [m for m in ctr["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
        assert len(mounts) == 1, f"{key} = {path} is not under exactly one volume mount"
        volume = volume_by_name(docs, mounts[0]["name"])
        assert "secret" in volume, f"{key} must come from a Secret"
        secret = by_name(docs, "Secret", volume["secret"]["secretName"])
        item = path[len(mounts[0]["mountPath"].rstrip("/")) + 1 :]
        assert item in secret.get("data", {}), f"{key}: Secret {secret['metadata']['name']} has no key {item}"
        assert path.startswith("/var/run/secrets/pushgate/")


def test_example_secrets_are_placeholders_not_keys():
    folder = K8S / "components" / "example-secrets" / "secrets"
    files = sorted(folder.iterdir())
    assert files
    for f in files:
        text = f.read_text()
        assert "PLACEHOLDER" in text, f"{f.name} must say it is a placeholder"
        assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text), f"{f.name} holds key material"
