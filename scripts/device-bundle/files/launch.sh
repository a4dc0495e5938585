# Sourced by the device bundle's launchers (m3, bench, golden, conformance, build-addon.sh): finds the
# bundle, unpacks its Node.js on first use, and points the project at the bundle's own files.
M3_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
NODE="$M3_HOME/node/bin/node"
if [ ! -x "$NODE" ]; then
  # into a temporary name first: two launchers starting at once must not run a half-written binary
  tmp="$NODE.tmp.$$"
  if command -v xz >/dev/null 2>&1; then
    xz -dc "$NODE.xz" >"$tmp"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$NODE.xz" >"$tmp"
  fi || { rm -f "$tmp"; echo "m3: error: could not unpack $NODE.xz (needs xz or python3)" >&2; exit 1; }
  chmod +x "$tmp" && mv -f "$tmp" "$NODE"
fi
# `node` on PATH for what the addon build runs (binding.gyp calls node); children of the tools use the
# same binary through process.execPath.
export PATH="$M3_HOME/node/bin:$PATH"
export M3_SHARED_DIR="${M3_SHARED_DIR:-$M3_HOME/shared}"
export M3_GOLDEN_DIR="${M3_GOLDEN_DIR:-$M3_SHARED_DIR/golden}"
export M3_TORCH_ADDON="${M3_TORCH_ADDON:-$M3_HOME/native/build/Release/m3_torch.node}"
