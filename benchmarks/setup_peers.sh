#!/usr/bin/env bash
# Build the benchmark environment: one virtual environment holding metadapt and the peer
# libraries it is compared with (learn2learn 0.2.0, higher 0.2.1, TorchOpt 0.7.3) plus JAX for
# the jit+vmap reference, so that every contender is timed against the same torch build.
#
#     bash benchmarks/setup_peers.sh [VENV]        # default .venv-bench
#
# learn2learn 0.2.0 ships only a source archive whose generated C files do not compile on
# Python 3.11 (they include longintrepr.h); we regenerate them with a current Cython and build
# without isolation. learn2learn imports torchvision, and torch 2.14.1 + torchvision 0.29.1 is
# the pair that installs and imports together here.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-bench}
PY=${PYTHON:-python3.11}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q torch==2.14.1 torchvision==0.29.1
$PIP install -q "cython>=3" numpy scipy tqdm requests higher==0.2.1 torchopt==0.7.3 jax jaxlib

if ! "$VENV/bin/python" -c "import learn2learn" 2>/dev/null; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  $PIP download -q --no-deps --no-build-isolation --no-binary learn2learn learn2learn==0.2.0 -d "$work"
  tar -xzf "$work"/learn2learn-0.2.0.tar.gz -C "$work"
  src="$work/learn2learn-0.2.0"
  rm -rf "$src/.eggs"   # the archive carries an old Cython egg; build with the venv's Cython
  find "$src/learn2learn" -name '*.pyx' -print0 | while IFS= read -r -d '' pyx; do
    rm -f "${pyx%.pyx}.c"
    "$VENV/bin/cython" -3 "$pyx"
  done
  # learn2learn's runtime needs gym and qpth only for its RL and QP modules, which its top-level
  # import pulls in; gsutil (dataset downloads) is not needed to time meta-learning steps.
  # gym 0.26 asks for numpy<2, which JAX cannot use; it imports fine beside numpy 2
  $PIP install -q --no-deps "gym<0.27" gym-notices cloudpickle qpth
  $PIP install -q --no-build-isolation --no-deps "$src"
fi
$PIP install -q --no-deps -e .
$PIP install -q pyyaml matplotlib pillow "numpy>=2"

"$VENV/bin/python" - <<'EOF'
import importlib
for name in ["torch", "torchvision", "learn2learn", "higher", "torchopt", "jax", "metadapt"]:
    module = importlib.import_module(name)
    print(f"{name} {getattr(module, '__version__', '?')}")
EOF
