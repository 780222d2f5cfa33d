#!/usr/bin/env python3
"""Generate the PrometheusRule of the kustomize base from deploy/prometheus/alerts.yml.

alerts.yml is the one source of the alert rules (plain Prometheus loads it
with `rule_files:`); prometheus-operator needs the same groups wrapped in a
PrometheusRule object. This script writes that object; `--check` exits 1 when
the committed file is not what it would write (scripts/check-deploy.sh runs
it, so the two can never drift apart).

    python3 deploy/tools/gen_prometheusrule.py           # rewrite the file
    python3 deploy/tools/gen_prometheusrule.py --check   # verify only
"""

import argparse
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy" / "prometheus" / "alerts.yml"
TARGET = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by
# deploy/tools/gen_prometheusrule.py: edit alerts.yml and rerun the script.
# What each alert means and what to do: docs/operations.md.
"""


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL), two-space list indent."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _str(dumper, value):
    # PromQL keeps its lines (literal block); prose stays on one line (never
    # folded inside a {{ template }}).
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(alerts_text: str) -> str:
    """The PrometheusRule YAML carrying exactly the groups of `alerts_text`."""
    rules = yaml.safe_load(alerts_text)
    if set(rules) != {"groups"}:
        raise ValueError(f"{SOURCE.name}: expected only 'groups' at the top, got {sorted(rules)}")
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "pushgate",
            "labels": {"app.kubernetes.io/name": "pushgate"},
        },
        "spec": {"groups": rules["groups"]},
    }
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100_000, allow_unicode=True)
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file differs")
    args = parser.parse_args()
    want = render(SOURCE.read_text())
    if args.check:
        have = TARGET.read_text() if TARGET.exists() else ""
        if have != want:
            print(
                f"error: {TARGET.relative_to(ROOT)} is out of date with {SOURCE.relative_to(ROOT)};\n"
                f"       run: python3 deploy/tools/gen_prometheusrule.py",
                file=sys.stderr,
            )
            return 1
        print(f"{TARGET.relative_to(ROOT)} matches {SOURCE.relative_to(ROOT)}")
        return 0
    TARGET.write_text(want)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
