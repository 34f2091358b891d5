#!/usr/bin/env bash
# Validates the manifests against the Kubernetes OpenAPI schemas bundled in the kubernetes-validate package
# (no cluster needed) and records the result in validation.txt.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
{
  echo "# kubernetes-validate $(python3 -m pip show kubernetes-validate | awk '/^Version/ {print $2}'), $(date -u +%Y-%m-%d)"
  python3 -m kubernetes_validate --strict k8s/encode-job.yaml k8s/serve.yaml 2>&1
} | tee validation.txt
