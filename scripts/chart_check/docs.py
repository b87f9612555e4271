"""What the docs promise: the YAML values examples in the chart README and docs/*.md must install, the chart
README must list every value (scripts/chart_readme.py), and the commands the docs tell operators to run
(`tokend keygen`, `tokend hash-secret`) must do what the docs and the ci values files say.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from .proc import run
from .render import CHART, ROOT, values_yaml
from .report import CheckError, R, expect
from .tokend import (CI_ADMIN_HASH, CI_ADMIN_SECRET, CI_CLIENT_HASH, CI_CLIENT_SECRET, CI_LOGIN_APP_HASH,
                     CI_LOGIN_APP_SECRET, check_config, hash_secret, keygen)


def doc_pages() -> list[Path]:
    """The pages whose values examples are checked: the chart README and every docs/*.md."""
    return [p for p in [CHART / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()]


def doc_examples() -> list[tuple[str, dict]]:
    """The YAML values examples in the docs (doc_pages): what the docs tell people to write must install.
    Every ```yaml block counts; those whose top-level keys are not all chart values (other YAML: manifests,
    tokend settings) are ignored; a block that does not parse is reported as a failed check."""
    keys = set(values_yaml())
    out = []
    for page in doc_pages():
        name = page.relative_to(ROOT)
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)):
            try:
                data = list(yaml.safe_load_all(block))
            except yaml.YAMLError as e:  # what people copy must at least parse: a failed check
                with R.check(f"docs: {name} example {i + 1} parses as YAML"):
                    raise CheckError(f"```yaml block {i + 1} of {name}: {e}") from None
                continue
            if len(data) == 1 and isinstance(data[0], dict) and data[0] and set(data[0]) <= keys:
                out.append((f"docs: {name} example {i + 1}", data[0]))
    return out


def readme_lists_every_value() -> None:
    import chart_readme  # scripts/chart_readme.py, next to this package

    text = (CHART / "values.yaml").read_text()
    documented = chart_readme.documented_keys(text)
    missing = chart_readme.undocumented(yaml.safe_load(text), documented)
    expect(not missing, f"values.yaml keys without a `# --` description: {missing}")
    readme = (CHART / "README.md").read_text()
    absent = [k for k in documented if f"| `{k}` |" not in readme]
    expect(not absent, f"helm/tokend/README.md does not list {absent}: run python3 scripts/chart_readme.py")
    r = run([sys.executable, ROOT / "scripts" / "chart_readme.py", "--check"])
    expect(r.returncode == 0, r.stderr.strip() or r.stdout.strip())


def documented_commands(binary: Path, tmp: Path) -> None:
    """What the chart docs tell operators to run: keys from keygen load, hashes match the ci files."""
    for alg in ("RS256", "ES256", "EdDSA"):
        key = tmp / f"{alg}.pem"
        keygen(binary, alg, key)
        expect(key.read_text().startswith("-----BEGIN PRIVATE KEY-----"), f"keygen --alg {alg} wrote no PKCS#8 PEM")
        cfg = tmp / f"{alg}.toml"
        cfg.write_text(f'issuer = "http://x"\n[signing]\nalgorithm = "{alg}"\nkey_file = "{key}"\n')
        r = check_config(binary, cfg)
        expect(r.returncode == 0, f"check-config rejects a keygen --alg {alg} key: {r.stdout}{r.stderr}")
    r = hash_secret(binary, CI_CLIENT_SECRET)
    expect(r.returncode == 0 and r.stdout.strip() == CI_CLIENT_HASH,
           f"hash-secret printed {r.stdout.strip()!r}, want {CI_CLIENT_HASH}")
    # admin.tokenHash and loginApp.tokenHash in ci/full-values.yaml are `printf %s <secret> | tokend hash-secret`.
    full = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    for what, secret, want, value in (("admin", CI_ADMIN_SECRET, CI_ADMIN_HASH, full["admin"]["tokenHash"]),
                                      ("login app", CI_LOGIN_APP_SECRET, CI_LOGIN_APP_HASH,
                                       full["loginApp"]["tokenHash"])):
        r = hash_secret(binary, secret)
        expect(r.returncode == 0 and r.stdout.strip() == want == value,
               f"hash-secret of the CI {what} secret printed {r.stdout.strip()!r}; full-values.yaml has {value}")
