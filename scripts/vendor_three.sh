#!/usr/bin/env bash
# Vendors three.js into web/lib/three/ for the camera-path editor (web/camera_editor.js).
#
# The ComfyUI frontend bundles its own three.js privately, so the pack brings its own copy. Users install
# the pack by git clone with no build step, so the files are committed; re-run this to change version.
#
# Files are renamed to .mjs: ComfyUI auto-loads every *.js under web/ as an extension at page load, and
# three (2 MB) should only load when a Camera Trajectory node is on the canvas. three 0.187 ships no
# minified ES module build, so the plain build is used (three.module imports three.core).
set -euo pipefail
VERSION="${1:-0.187.0}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$REPO/web/lib/three"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

(cd "$TMP" && npm pack --silent "three@$VERSION" >/dev/null && tar xzf "three-$VERSION.tgz")
PKG="$TMP/package"
rm -rf "$DEST"
mkdir -p "$DEST"
# three.module.js imports './three.core.js': point it at the renamed file.
sed "s#from './three.core.js'#from './three.core.mjs'#g" "$PKG/build/three.module.js" > "$DEST/three.module.mjs"
cp "$PKG/build/three.core.js" "$DEST/three.core.mjs"
# The controls import the bare specifier 'three', which only an import map resolves: make it relative.
for controls in OrbitControls TransformControls; do
  sed "s#from 'three'#from './three.module.mjs'#g" "$PKG/examples/jsm/controls/$controls.js" > "$DEST/$controls.mjs"
done
cp "$PKG/LICENSE" "$DEST/LICENSE"
cat > "$DEST/README.md" <<README
three.js $VERSION (MIT, see LICENSE), vendored by scripts/vendor_three.sh from the npm package:
build/three.module.js, build/three.core.js and examples/jsm/controls/{Orbit,Transform}Controls.js, renamed to .mjs
(so ComfyUI does not load them as extensions) with their imports made relative. Do not edit by hand.
README

# Fail here, not in a user's browser, if an import was left unresolved.
if grep -nE "from '(three|\./three\.core\.js)'" "$DEST"/*.mjs; then
  echo "vendor_three.sh: an import was not rewritten" >&2
  exit 1
fi
echo "three.js $VERSION vendored into $DEST"
