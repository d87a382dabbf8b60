#!/usr/bin/env bash
# Set up everything aviary needs on a Debian machine: the real servers and the
# peers from Debian, an unprivileged service account, and a virtual
# environment with the Python packages. Idempotent; quick when already done.
#
#   ./setup.sh            install what is missing
#   ./setup.sh --check    only report what is missing (exit 1 if anything is)
#   ./setup.sh --lock     re-resolve pyproject.toml's Python packages into setup/python.lock
set -euo pipefail
cd "$(dirname "$0")"

# Real servers and benchmark peers, as Debian packages (see ../shared/references/SERVERS.md):
# one setup/<part>.packages file per protocol or tool, a package a line, # comments.
mapfile -t DEBIAN_PACKAGES < <(cat setup/*.packages | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)
SERVICE_USER=aviary
VENV=.venv
PYTHON=${PYTHON:-python3}
# The exact Python packages installed: pyproject.toml says what we need, the lock
# what we install, so two machines set up a month apart run the same code.
LOCK=setup/python.lock

say() { printf 'setup: %s\n' "$*" >&2; }

missing_packages() {
  local p
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

stamp_of_project() { cat pyproject.toml "$LOCK" | sha256sum | cut -d' ' -f1; }

if [[ "${1:-}" == "--lock" ]]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  say "resolving pyproject.toml's packages in a scratch environment"
  "$PYTHON" -m venv "$scratch/venv"
  "$scratch/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$scratch/venv/bin/python" -m pip install -q --disable-pip-version-check '.[dev]'
  {
    echo "# Python packages installed by ./setup.sh; regenerate with ./setup.sh --lock"
    "$scratch/venv/bin/python" -m pip freeze --disable-pip-version-check --exclude aviary
  } > "$LOCK"
  say "wrote $LOCK ($(grep -vc '^#' "$LOCK") packages)"
  exit 0
fi

if [[ "${1:-}" == "--check" ]]; then
  rc=0
  m=$(missing_packages); [[ -z "$m" ]] || { say "missing Debian packages: $m"; rc=1; }
  id "$SERVICE_USER" >/dev/null 2>&1 || { [[ $EUID -ne 0 ]] || { say "missing user $SERVICE_USER"; rc=1; }; }
  [[ -f "$VENV/.aviary-stamp" && "$(cat "$VENV/.aviary-stamp")" == "$(stamp_of_project)" ]] || { say "virtual environment missing or stale"; rc=1; }
  exit $rc
fi

# 1. Debian packages.
missing=$(missing_packages | tr '\n' ' ')
if [[ -n "${missing// /}" ]]; then
  if [[ $EUID -ne 0 ]]; then
    say "missing Debian packages: $missing; run as root, or: sudo apt-get install $missing"
    exit 1
  fi
  say "installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. The account servers drop to when started by root (cctools' chirp_server
#    refuses to run as root without one).
if [[ $EUID -eq 0 ]] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
  say "creating service user $SERVICE_USER"
  useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 3. The virtual environment, rebuilt only when pyproject.toml changed.
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f "$VENV/.aviary-stamp" || "$(cat "$VENV/.aviary-stamp")" != "$(stamp_of_project)" ]]; then
  say "installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$LOCK"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e '.[dev]'
  if ! "$VENV/bin/python" -m pip check --disable-pip-version-check >/dev/null; then
    say "$LOCK lacks packages pyproject.toml asks for; run ./setup.sh --lock"
    "$VENV/bin/python" -m pip check --disable-pip-version-check >&2 || true
    exit 1
  fi
  stamp_of_project > "$VENV/.aviary-stamp"
fi
# 4. What apt cannot do alone (servers unpacked privately, keys, configs): setup/<part>.sh
#    (tools built on request, like setup/parrot/build.sh, live in subdirectories),
#    each idempotent, run in name order with the venv's python on PATH.
for hook in setup/*.sh; do
  [[ -e "$hook" ]] || continue
  PATH="$PWD/$VENV/bin:$PATH" bash "$hook" || { say "$hook failed"; exit 1; }
done
# 5. Bytecode for the checkout's own modules (an editable install leaves none): where
#    PYTHONDONTWRITEBYTECODE is set, every `aviary run` would compile them again, a tenth
#    of a second before the program starts. Up-to-date files are skipped.
"$VENV/bin/python" -m compileall -q -j 0 -x '/(\.venv|\.git|\.hypothesis|build)/' . >/dev/null \
  || { say "compiling the project's bytecode failed"; exit 1; }
say "ready: $VENV/bin/aviary"
