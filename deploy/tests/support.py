"""Shared helpers of the deploy tests: rendering the overlays, reading the config and the Dockerfile."""

import functools
import pathlib
import re
import subprocess
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("example", "example-hpa")
# The oldest Kubernetes the manifests target (the preStop sleep action is on
# by default from 1.30) and the newest whose schemas kubernetes-validate has.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
CONFIG_PATH_IN_CONFIGMAP = "pushgate.toml"


@functools.cache
def render(overlay: str) -> tuple:
    """The objects `kubectl kustomize` renders for an overlay (kustomize v5 inside kubectl)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def one(docs, kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def by_name(docs, kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def pod_spec(docs) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def container(docs) -> dict:
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["pushgate"]
    return containers[0]


def config(docs) -> dict:
    """The pushgate config inside the rendered ConfigMap the Deployment mounts."""
    volume = volume_by_name(docs, "config")
    cm = by_name(docs, "ConfigMap", volume["configMap"]["name"])
    return tomllib.loads(cm["data"][CONFIG_PATH_IN_CONFIGMAP])


def volume_by_name(docs, name: str) -> dict:
    found = [v for v in pod_spec(docs)["volumes"] if v["name"] == name]
    assert len(found) == 1, f"no volume named {name}"
    return found[0]


def admin_port(cfg: dict) -> int:
    """The port of `[admin] listen` (default 0.0.0.0:9090, as common.md fixes it)."""
    listen = cfg.get("admin", {}).get("listen", "0.0.0.0:9090")
    assert listen != "off", "the admin server must be on: probes and metrics need it"
    return int(listen.rsplit(":", 1)[1])


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def seconds(humantime: str) -> float:
    """Seconds of a humantime duration as pushgate's config takes them ("25s", "1m30s", "500ms")."""
    parts = re.findall(r"(\d+)\s*(ms|s|m|h)", humantime)
    assert parts and "".join(n + u for n, u in parts) == humantime.replace(" ", ""), humantime
    return sum(int(n) * _UNITS[u] for n, u in parts)


def drain_timeout(cfg: dict) -> float:
    """`[daemon] drain_timeout`, default 25s (config/pushgate.example.toml)."""
    return seconds(cfg.get("daemon", {}).get("drain_timeout", "25s"))


def container_port(ctr: dict, port) -> int:
    """A probe's or Service's port (a name or a number) as the container's port number."""
    for p in ctr.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    raise AssertionError(f"port {port!r} is not a port of container {ctr['name']}")


# --- Dockerfile ---------------------------------------------------------------


def dockerfile_instructions(text: str) -> list:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined, out = "", []
    for line in text.splitlines():
        stripped = line.strip()
        if not joined and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            joined += stripped[:-1] + " "
            continue
        joined += stripped
        word, _, rest = joined.partition(" ")
        out.append((word.upper(), rest.strip()))
        joined = ""
    return out


def final_stage(instructions: list) -> list:
    starts = [i for i, (w, _) in enumerate(instructions) if w == "FROM"]
    return instructions[starts[-1] :]


def dockerignore_allows(patterns: list, path: str) -> bool:
    """Whether a context path survives .dockerignore (the subset used here:
    `*`, `!dir/`, `dir/`, `name`; the last matching line wins; a directory
    pattern covers everything below it)."""
    import fnmatch

    allowed = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern == "*" or any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            allowed = negate
    return allowed


def dockerignore_patterns() -> list:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
