# Sourced by scripts/*.sh: installs what vmlab needs on a Debian/Ubuntu machine, skipping what is there.
# System: OpenSSH (client for tunnels, server for tests), QEMU + debootstrap + debian-archive-keyring (checks what
# debootstrap downloads) + genisoimage (local provider). For the tests (vmlab_test_packages): podman + runc +
# slirp4netns (container provider), skopeo and docker-registry (image export and push, tested against a registry
# the tests start on 127.0.0.1).
# Python: a virtualenv in .venv with vmlab installed editable (plus test extras when asked).

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

vmlab_system_packages() {
  local want=(openssh-client openssh-server qemu-system-x86 qemu-utils debootstrap debian-archive-keyring
              genisoimage e2fsprogs ca-certificates curl "$@")
  local missing=()
  for pkg in "${want[@]}"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "vmlab: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

vmlab_test_packages() {
  # Debian's docker-registry would start a registry on :5000 of every interface where systemd runs: its unit is
  # masked before the install (so it never starts), and the tests start their own on 127.0.0.1
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] \
     && ! dpkg-query -W -f '${Status}' docker-registry 2>/dev/null | grep -q "install ok installed"; then
    $SUDO systemctl mask docker-registry.service >/dev/null 2>&1 || true
  fi
  vmlab_system_packages podman runc crun slirp4netns skopeo buildah docker-registry
}

vmlab_python_env() {  # $1: pip extras, e.g. "[test]" or ""
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$1"
}

# Test servers from npm, installed into .tools/ in the checkout (gitignored): Azurite (the Azure Blob emulator) and
# configurable-http-proxy (JupyterHub's proxy, for the hub recipe's login tests).
AZURITE_VERSION="3.37.0"
CHP_VERSION="5.3.0"
vmlab_test_tools() {
  if ! command -v npm >/dev/null 2>&1; then
    vmlab_system_packages nodejs npm
  fi
  if [ ! -x .tools/node_modules/.bin/azurite-blob ] \
     || ! grep -q "\"version\": \"$AZURITE_VERSION\"" .tools/node_modules/azurite/package.json 2>/dev/null; then
    echo "vmlab: installing azurite $AZURITE_VERSION into .tools/"
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
  fi
  if [ ! -x .tools/node_modules/.bin/configurable-http-proxy ] \
     || ! grep -q "\"version\": \"$CHP_VERSION\"" .tools/node_modules/configurable-http-proxy/package.json 2>/dev/null; then
    echo "vmlab: installing configurable-http-proxy $CHP_VERSION into .tools/"
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --loglevel=error "configurable-http-proxy@$CHP_VERSION" >/dev/null
  fi
}
