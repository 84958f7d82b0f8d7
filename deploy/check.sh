#!/usr/bin/env bash
# Validates every deployment recipe in deploy/, offline once its tools are installed (PyPI's
# kubernetes-validate, envoy-data-plane and dockerfile in a venv; haproxy, systemd-analyze and
# openssl from the system): the Kubernetes manifests against the official schemas (strict), the
# healthgate configs inside them with `healthgate config validate`, the Envoy bootstrap against
# Envoy's API definitions, the HAProxy config with `haproxy -c`, the systemd unit with
# `systemd-analyze verify`, the Containerfile with BuildKit's parser and a build of its pruned
# context (deploy/validate_container.py). Run by .ci/run.
#
#   deploy/check.sh [path/to/healthgate]   (default: target/debug/healthgate)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/healthgate}")
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python" -c 'import dockerfile' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate envoy-data-plane pyyaml dockerfile
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf -- '--- %s\n' "$*"; }

step "Kubernetes manifests (kubernetes-validate --strict)"
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml

step "healthgate configs in the ConfigMaps (healthgate config validate)"
# The TLS files the sidecar's config names exist only in a cluster: made here, paths rewritten.
tls="$work/tls"
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=healthgate \
  -keyout "$tls/tls.key" -out "$tls/tls.crt" 2>/dev/null
cp "$tls/tls.crt" "$tls/ca.crt"
"$venv/bin/python" - "$work" "$tls" deploy/kubernetes/*.yaml <<'PY'
import sys, yaml
work, tls, files = sys.argv[1], sys.argv[2], sys.argv[3:]
n = 0
for path in files:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "ConfigMap" and "healthgate.toml" in doc.get("data", {}):
            n += 1
            text = doc["data"]["healthgate.toml"].replace("/etc/healthgate/tls", tls)
            with open(f"{work}/{doc['metadata']['name']}.toml", "w") as f:
                f.write(text)
if n == 0:
    sys.exit("no healthgate.toml in any ConfigMap")
PY
for config in "$work"/*.toml; do
  "$bin" config validate "$config"
done

step "Envoy bootstrap (Envoy's API definitions)"
"$venv/bin/python" deploy/validate_envoy.py deploy/envoy/envoy.yaml

step "HAProxy (haproxy -c)"
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
APP=127.0.0.1:8080 HG_ADDR=127.0.0.1 "$haproxy" -c -f deploy/haproxy/haproxy.cfg

step "systemd unit (systemd-analyze verify)"
# verify needs the ExecStart binary to exist: the one just built stands in for /usr/local/bin.
sed "s#/usr/local/bin/healthgate#$bin#" deploy/systemd/healthgate.service >"$work/healthgate.service"
out=$(systemd-analyze verify "$work/healthgate.service" 2>&1) || { echo "$out"; exit 1; }
# It exits 0 on unknown keys and other mistakes, so any word from it is a failure.
if [ -n "$out" ]; then echo "$out"; exit 1; fi
echo "deploy/systemd/healthgate.service: valid"

step "container image (BuildKit's parser, the builder's Rust, the pruned context builds)"
"$venv/bin/python" deploy/validate_container.py deploy/container/Containerfile "$bin"
echo "every recipe is valid"
