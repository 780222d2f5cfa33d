"""What can be checked of the Dockerfile without a Docker engine, and the alert rules against pushgate's metric names.

The image cannot be built on these machines (no Docker engine). So: the
build command is the one CI's scripts run, every COPY source exists and
survives .dockerignore, every file the Rust sources compile in is copied, the
runtime user is numeric and not root and matches the pods' runAsUser, the
config path and port agree with the manifests.
"""

import importlib.util
import re

import pytest
import yaml

from support import (
    ROOT,
    admin_port,
    config,
    container,
    dockerfile_instructions,
    dockerignore_allows,
    dockerignore_patterns,
    final_stage,
    pod_spec,
    render,
)

BUILD_COMMAND = "cargo build --release --locked --bin pushgate"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = dockerfile_instructions(DOCKERFILE)
FINAL = final_stage(INSTRUCTIONS)


def test_dockerfile_runs_the_same_build_command_as_ci():
    runs = [args for word, args in INSTRUCTIONS if word == "RUN"]
    assert any(BUILD_COMMAND in r for r in runs), f"no RUN with `{BUILD_COMMAND}`"
    # scripts/check-deploy.sh runs `cargo metadata --locked` (the lock file is
    # current) and names this same string; the README says a release build is
    # not part of CI.
    assert BUILD_COMMAND in (ROOT / "scripts" / "check-deploy.sh").read_text()


def copy_sources():
    """Context paths of every COPY that reads the build context (not --from)."""
    out = []
    for word, args in INSTRUCTIONS:
        if word in ("COPY", "ADD"):
            parts = [p for p in args.split() if not p.startswith("--")]
            if any(p.startswith("--from") for p in args.split()):
                continue
            out.extend(parts[:-1])
    return out


def test_every_copy_source_exists_and_is_in_the_build_context():
    sources = copy_sources()
    assert {"Cargo.toml", "Cargo.lock", "src"} <= set(sources)
    patterns = dockerignore_patterns()
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: no such file in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert dockerignore_allows(patterns, rel), f"COPY {src}: .dockerignore excludes {rel}"
    assert not dockerignore_allows(patterns, "target/release/pushgate")
    assert not dockerignore_allows(patterns, ".git/config")


def test_files_compiled_in_are_copied():
    """include_str!/include_bytes! targets (the simulators' dev certificates) are in the context."""
    copied = [ROOT / s for s in copy_sources()]
    found = 0
    for rs in list((ROOT / "src").rglob("*.rs")) + list((ROOT / "loadtest" / "src").rglob("*.rs")):
        for rel in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', rs.read_text()):
            target = (rs.parent / rel).resolve()
            found += 1
            assert target.exists(), f"{rs}: {rel} missing"
            assert any(target == c or c in target.parents for c in copied), (
                f"{rs.relative_to(ROOT)} compiles in {rel}, which the Dockerfile does not COPY"
            )
    assert found, "expected the simulators' include_str! files"


def test_runtime_image_is_distroless_and_not_root():
    [(_, base)] = [i for i in FINAL if i[0] == "FROM"]
    assert base.startswith("gcr.io/distroless/cc-debian12:nonroot")
    users = [args for word, args in FINAL if word == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and (not gid or (gid.isdigit() and int(gid) != 0))
    pod = pod_spec(render("example"))["securityContext"]
    assert pod["runAsUser"] == int(uid)


def test_runtime_stage_copies_only_the_binary():
    copies = [args for word, args in FINAL if word in ("COPY", "ADD")]
    assert copies == ["--from=build /usr/local/bin/pushgate /usr/local/bin/pushgate"]
    entry = [args for word, args in FINAL if word == "ENTRYPOINT"]
    cmd = [args for word, args in FINAL if word == "CMD"]
    assert entry == ['["/usr/local/bin/pushgate"]'] and cmd == ['["run"]']


def test_image_config_path_and_port_match_the_manifests():
    docs = render("example")
    envs = dict(a.split("=", 1) for w, a in FINAL if w == "ENV")
    ctr_env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert envs["PUSHGATE_CONFIG"] == ctr_env["PUSHGATE_CONFIG"]
    exposed = [int(a.split("/")[0]) for w, a in FINAL if w == "EXPOSE"]
    assert exposed == [admin_port(config(docs))]


# --- alert rules --------------------------------------------------------------

# common.md / design.md: the metric names pushgate exports (fixed contract).
METRICS = {
    "pushgate_jobs_received_total",
    "pushgate_notifications_total",
    "pushgate_provider_request_duration_seconds",
    "pushgate_inflight_requests",
    "pushgate_connections",
    "pushgate_throttle_wait_seconds",
    "pushgate_retries_total",
    "pushgate_dead_lettered_total",
    "pushgate_token_invalidations_total",
    "pushgate_impressions_total",
    "pushgate_clicks_total",
    "pushgate_credentials_alert",
    "pushgate_build_info",
    "pushgate_ready",
    "pushgate_broker_connected",
    "pushgate_queue_consumers",
    "pushgate_jobs_acked_total",
    "pushgate_jobs_requeued_total",
    "pushgate_jobs_redelivered_total",
    "pushgate_throttle_device_keys",
    "pushgate_throttle_slowdown",
    "pushgate_campaigns_tracked",
    "pushgate_campaigns_stopped",
    "pushgate_events_rejected_total",
    "pushgate_campaign_impressions_total",
    "pushgate_campaign_clicks_total",
    "pushgate_campaign_delivered_total",
}
HISTOGRAMS = {"pushgate_provider_request_duration_seconds", "pushgate_throttle_wait_seconds"}
SERIES = METRICS | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "absent", "histogram_quantile",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
}  # fmt: skip


def alert_rules():
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def metric_names(expr: str) -> set:
    """Identifiers of an expression that are series names (not functions, keywords, labels)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return words - PROMQL_WORDS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_uses_only_pushgate_metrics(rule):
    names = metric_names(rule["expr"])
    assert names, "an alert with no metric"
    assert names <= SERIES, f"not pushgate metrics: {sorted(names - SERIES)}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_text_and_a_runbook_section(rule):
    assert rule["labels"]["severity"] in ("critical", "warning")
    notes = rule["annotations"]
    assert notes["summary"] and notes["description"]
    anchor = rule["alert"].lower()
    assert notes["runbook"] == f"docs/operations.md#{anchor}"
    headings = re.findall(r"^#+\s+(.+?)\s*$", (ROOT / "docs" / "operations.md").read_text(), re.M)
    assert rule["alert"] in headings, f"docs/operations.md has no section {rule['alert']}"


def test_metric_filter_sees_non_pushgate_names():
    assert metric_names('sum by (pod) (rate(up{job="x"}[5m])) / kube_pod_info') == {"up", "kube_pod_info"}


def test_prometheusrule_carries_exactly_the_alerts_file():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "deploy" / "tools" / "gen_prometheusrule.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text()
    assert committed == gen.render(gen.SOURCE.read_text()), "run python3 deploy/tools/gen_prometheusrule.py"
    rendered = [d for d in render("example") if d["kind"] == "PrometheusRule"]
    alerts = yaml.safe_load(gen.SOURCE.read_text())["groups"]
    assert [d["spec"]["groups"] for d in rendered] == [alerts]
