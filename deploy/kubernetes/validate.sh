#!/usr/bin/env bash
# Validates the Kubernetes manifests with `kubernetes-validate --strict` (PyPI; it ships the
# API schemas, so it runs offline once installed): the rendered base and every overlay when
# `kubectl` (its built-in kustomize) is here, otherwise each manifest file as written. Checked
# against the oldest Kubernetes we claim (1.30: native gRPC probes, autoscaling/v2, policy/v1)
# and the newest the validator knows.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${CARGO_TARGET_DIR:-target}/kubernetes-venv"
requirement="kubernetes-validate==1.37.0"
if [ "$(cat "$venv/installed" 2>/dev/null)" != "$requirement" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
  echo "$requirement" > "$venv/installed"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
files=()
if command -v kubectl >/dev/null 2>&1; then
  for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
    name="$(basename "$dir")"
    kubectl kustomize "$dir" > "$out/$name.yaml"
    files+=("$out/$name.yaml")
  done
else
  echo "kubectl not found: validating the manifest files one by one (generated ConfigMaps unchecked)"
  for file in deploy/kubernetes/base/*.yaml deploy/kubernetes/overlays/*/*.yaml; do
    case "$(basename "$file")" in
      kustomization.yaml | otel-collector-config.yaml) ;;
      *) files+=("$file") ;;
    esac
  done
fi
# Not rendered on purpose (created once by hand), checked all the same.
files+=(deploy/kubernetes/base/secret.example.yaml)

for version in 1.30.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${files[@]}"
done
echo "kubernetes manifests valid (${#files[@]} files; Kubernetes 1.30 and 1.37, strict)"
