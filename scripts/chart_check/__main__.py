"""The steps in order (`python -m chart_check`, see the package docstring): lint and render, validate,
negative tests, the chart against the tokend binary; then the summary and the exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

try:
    import grpc  # noqa: F401
    import helm_python  # noqa: F401
    import kubernetes_validate  # noqa: F401
    import yaml  # noqa: F401
    from grpc_health.v1 import health_pb2  # noqa: F401
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"chart-check: missing Python package ({e}); run scripts/chart-check.sh")

from .docs import doc_examples, documented_commands, readme_lists_every_value
from .proc import scratch_dir
from .render import CHART, NOT_RUN, RENDER_ONLY, ROOT, kube_versions, lint, render, validate_k8s, values_sets
from .report import R, Skip, section
from .rules import check_coverage, check_rules
from .runtime import MEMORY_STORE, runtime_check
from .schema import BAD_COMBINATIONS, BAD_VALUES, expect_rejected, schema_is_closed
from .tokend import binary_path, check_binary, check_config_rejects_unknown_key

Renders = dict[str, tuple[dict, list[dict], str]]


def lint_and_render(versions: list[str]) -> Renders:
    """Step 1: every values set is linted for each Kubernetes version and rendered; returns the renders."""
    renders: Renders = {}
    for name, values in values_sets() + RENDER_ONLY + doc_examples():
        for ver in versions:
            with R.check(f"helm lint --strict [{name}] (kube {ver})"):
                lint(values, ver)
        with R.check(f"helm install --dry-run [{name}]"):
            docs, notes = render(values)
            renders[name] = (values, docs, notes)
            print("        " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
    with R.check("ci/*.yaml together switch on every optional resource"):
        check_coverage(renders)
    return renders


def validate(renders: Renders, versions: list[str]) -> None:
    """Step 2: kubernetes-validate and the chart's rules on every render; the README lists every value."""
    for name, (values, docs, notes) in renders.items():
        for ver in versions:
            with R.check(f"kubernetes-validate --strict [{name}] (kube {ver})"):
                skipped = validate_k8s(docs, ver)
                if skipped:
                    print(f"        not validated (custom resources): {', '.join(skipped)}")
        with R.check(f"chart rules [{name}]"):
            check_rules(name, values, docs, notes)
    with R.check("chart README lists every value"):
        readme_lists_every_value()


def negative_tests() -> None:
    """Step 3."""
    with R.check("values.schema.json sets additionalProperties: false on every object"):
        schema_is_closed()
    for label, bad in BAD_VALUES:
        with R.check(f"schema rejects {label}"):
            expect_rejected(bad)
    for label, bad, needle in BAD_COMBINATIONS:
        with R.check(f"templates refuse {label}"):
            expect_rejected(bad, needle)


def against_binary(renders: Renders, binary: Path, keep: bool) -> None:
    """Step 4: the binary's own checks, then every ci/default render run as a pod here."""
    if os.environ.get("CHART_CHECK_SKIP_RUNTIME") == "1":
        with R.check("runtime checks"):
            raise Skip("CHART_CHECK_SKIP_RUNTIME=1")
        return
    usable = f"tokend binary is usable ({binary})"
    with R.check(usable):
        check_binary(binary)
    if not R.ok(usable):
        return
    with R.check("tokend check-config rejects an unknown key"), scratch_dir() as tmp:
        check_config_rejects_unknown_key(binary, tmp)
    with R.check("documented commands: tokend keygen (RS256, ES256, EdDSA) and tokend hash-secret"), scratch_dir() as tmp:
        documented_commands(binary, tmp)
    for name, (values, docs, _) in renders.items():
        if not name.startswith(NOT_RUN):
            runtime_check(name, values, docs, binary, keep)


def main() -> int:
    binary = binary_path()
    keep = os.environ.get("CHART_CHECK_KEEP") == "1"
    print(f"chart-check: chart {CHART.relative_to(ROOT)}, tokend binary {binary}")
    if MEMORY_STORE:
        R.note("CHART_CHECK_STORE=memory: tokend runs on memory://, not on Redis (debugging only)")

    section("1. lint and render")
    lo = hi = None
    with R.check("Chart.yaml kubeVersion maps to Kubernetes versions kubernetes-validate knows"):
        lo, hi = kube_versions()
        print(f"        validating against Kubernetes {lo} and {hi}")
    versions = list(filter(None, dict.fromkeys([lo, hi])))
    renders = lint_and_render(versions)

    section("2. validate manifests")
    validate(renders, versions)

    section("3. negative tests")
    negative_tests()

    section("4. the chart against the tokend binary")
    against_binary(renders, binary, keep)
    return R.summary()


if __name__ == "__main__":
    sys.exit(main())
