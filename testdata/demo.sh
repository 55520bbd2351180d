#!/usr/bin/env bash
# The end-to-end demo (`make demo`): $1 is the pybuild binary, PYBUILD_ROOT the state root.
# Builds an offline busybox rootfs, imports it as busybox:latest, builds an example image on it
# (testdata/contexts/multistage), runs it and lists the images.
set -euo pipefail
PYBUILD=${1:?usage: demo.sh PATH/TO/pybuild}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=$(dirname "$PYBUILD")/python
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "+ python3 testdata/mkbusybox.py --tar busybox.tar"
"$PY" "$HERE/mkbusybox.py" --tar "$WORK/busybox.tar"
"$PYBUILD" rmi busybox:latest >/dev/null 2>&1 || true  # a re-run replaces, leaving no <none>
echo "+ pybuild import --change 'CMD [\"sh\"]' busybox.tar busybox:latest"
"$PYBUILD" import --change 'CMD ["sh"]' "$WORK/busybox.tar" busybox:latest
echo "+ pybuild build -t demo-app:latest testdata/contexts/multistage"
"$PYBUILD" build --progress=plain -t demo-app:latest "$HERE/contexts/multistage"
echo "+ pybuild run --rm demo-app:latest"
"$PYBUILD" run --rm demo-app:latest
echo "+ pybuild images"
"$PYBUILD" images
