#!/usr/bin/env bash
# Re-pin deploy/docker/sidecar-requirements.txt: resolve pyproject's runtime dependencies plus the
# `gpu` extra (NVML) for the image's Python and platform, without installing anything.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
py="${CUSTOS_PYTHON:-$HOME/.cache/custos/venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$py" - "$here/pyproject.toml" > "$work/reqs.in" <<'PY'
import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(d["project"]["dependencies"] + d["project"]["optional-dependencies"]["gpu"]))
PY
"$py" -m pip install -q --dry-run --ignore-installed --report "$work/report.json" --python-version 3.12 \
  --platform manylinux2014_x86_64 --only-binary=:all: --target "$work/t" -r "$work/reqs.in"
"$py" - "$work/report.json" "$here/deploy/docker/sidecar-requirements.txt" <<'PY'
import json, sys
import re
pins = sorted((re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(), i["metadata"]["version"]) for i in json.load(open(sys.argv[1]))["install"])
head = ("# Exact versions of the sidecar image's Python dependencies (pyproject `dependencies` + the `gpu` extra\n"
        "# for NVML; never torch). Regenerate with: deploy/tools/lock-sidecar.sh\n")
open(sys.argv[2], "w").write(head + "".join(f"{n}=={v}\n" for n, v in pins))
print(f"pinned {len(pins)} packages")
PY
