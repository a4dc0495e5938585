#!/usr/bin/env bash
# Builds the torch addon (native/build/Release/m3_torch.node) for this machine through native/build.js, the
# script `npm install` runs, on the bundle's Node.js: against the libtorch of an installed PyTorch
# ($M3_PYTHON, $PYTHON, /usr/bin/python3 or python3 that can `import torch`), $LIBTORCH_DIR, or Debian's
# libtorch-dev. node-gyp when `make` is there, else g++ directly (M3_TORCH_DIRECT=1 forces that).
# Prints build.js's one line; exit code 1 when no addon came out of it.
set -u
. "$(dirname "$(readlink -f "$0")")/lib/launch.sh"
# the bundle's node-gyp and Node headers, not those of an npm this may be started under
unset npm_config_node_gyp npm_config_nodedir
"$NODE" "$M3_HOME/native/build.js" || exit 1
[ -f "$M3_HOME/native/build/Release/m3_torch.node" ]
