"""Checks the tokend Helm chart without a cluster (run it through scripts/chart-check.sh, which runs
`python -m chart_check` with PYTHONPATH=scripts in the venv target/chart-venv).

1. lint (strict) and render the chart with the default values, with each helm/tokend/ci/*.yaml, with a few
   inline values sets, and with every YAML values example in helm/tokend/README.md and docs/*.md;
2. validate every rendered manifest with kubernetes-validate (strict) for the oldest and the newest
   Kubernetes version the chart claims (Chart.yaml kubeVersion), skipping only custom-resource kinds;
   plus the chart's own rules (hardening, probes, ports, nothing secret in the ConfigMap, ...);
3. negative tests: the values schema rejects wrong types and unknown keys, the templates refuse
   unsafe combinations;
4. runs the tokend binary ($TOKEND_BIN, default target/debug/tokend) on what the chart renders: the
   ConfigMap and Secrets are written to a temporary folder laid out like the pod's mounts (mount
   paths rewritten into it, listen ports replaced by free ports, the store URL pointed at a local
   redis-server; nothing else changed; Secrets that come from outside the chart (existingSecret) get
   stand-ins made with `tokend keygen`, and TLS certificates from a throwaway CA made with openssl),
   `tokend check-config` must accept it, `tokend serve` must pass every probe exactly as the kubelet
   sends it (gRPC, HTTP, HTTPS without verification, TCP), and the Service's targetPorts must lead to
   the container ports and to the ports tokend listens on. A rediss:// store gets a TLS-only
   redis-server (with client-certificate auth when the chart mounts a client certificate); the admin
   listener is checked with `tokend admin list-clients`, the login app's authentication on
   tokend.v1.AuthorizationService with a raw gRPC call, TLS and mTLS with real callers.

Prints one line per check and ends with `chart-check: N passed, M failed`; exits 1 on any failure.
Environment: TOKEND_BIN (binary to run), CHART_CHECK_SKIP_RUNTIME=1 (skip step 4, reported as skipped),
CHART_CHECK_STORE=memory (debugging a build without the Redis backend: run with memory://, no outage test),
CHART_CHECK_NO_METRICS=1 (debugging a build without /metrics: that check is skipped),
CHART_CHECK_KEEP=1 (keep the temporary pod folders). Skipped checks are listed in the summary.

Modules: __main__ (the steps in order), report (check lines, summary), proc (processes, ports, scratch
folders, polling), render (the chart, helm lint/install, kubernetes-validate), docs (doc examples, the
README's values table, documented commands), rules (the chart's own rules), schema (step 3), tokend (what
the checks know about tokend), pki and redis (stand-ins for TLS Secrets and the store), pod (the pod's
files and environment on this machine), probes (kubelet-style probes, callers), runtime and api (step 4).
"""
