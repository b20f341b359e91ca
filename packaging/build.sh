#!/usr/bin/env bash
# Build the installable mnist-desktop program (PyInstaller, one folder) from this checkout.
#   packaging/build.sh [full|lite]      (default full)
# Environment: OUT (default ./dist-packaging, outside the checkout is fine), PYTHON
# (default python3.11), VENV (default $OUT/venv-FLAVOUR; reused when it exists).
# Writes $OUT/mnist-desktop[-lite]-VERSION-linux-x86_64.tar.gz (and .tar.zst when zstd is
# installed), the folder itself, and a freedesktop entry + icon under $OUT/share/;
# prints build time and sizes at the end.
set -euo pipefail
FLAVOUR="${1:-full}"
case "$FLAVOUR" in full|lite) ;; *) echo "usage: $0 [full|lite]" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${OUT:-$ROOT/dist-packaging}" && cd "${OUT:-$ROOT/dist-packaging}" && pwd)"
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-$OUT/venv-$FLAVOUR}"
NAME=mnist-desktop; [ "$FLAVOUR" = lite ] && NAME=mnist-desktop-lite
T0=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
# Pinned runtime (CPU-only torch in the full flavour: pip takes the local CPU wheel), then
# the project itself, non-editable, without its declared deps (torchvision is not shipped).
"$PY" -m pip install -q -r "$ROOT/packaging/requirements-$FLAVOUR.txt"
"$PY" -m pip install -q --no-deps --no-build-isolation "$ROOT" 2>/dev/null || "$PY" -m pip install -q --no-deps "$ROOT"
VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("mnist-desktop"))')"
T1=$(date +%s)

WORK="$OUT/work-$FLAVOUR"
rm -rf "$OUT/$NAME" "$WORK"
# Build from the installed package (not the checkout): what a user gets is what ships.
(cd "$OUT" && FLAVOUR="$FLAVOUR" "$PY" -m PyInstaller --noconfirm --log-level WARN \
   --distpath "$OUT" --workpath "$WORK" "$ROOT/packaging/mnist_desktop.spec")
DIST="$OUT/$NAME"
T2=$(date +%s)

# Symbol tables and debug info (libpython ~17 MB, torch ~90 MB, extension modules): see
# packaging/strip_binaries.py for what is never stripped (the executable, auditwheel libs).
"$PY" "$ROOT/packaging/strip_binaries.py" "$DIST"
# Qt Core's ICU data without the display-name tables Qt never reads (32 -> ~14 MB; see
# packaging/slim_icu.py; skipped with a message where icupkg or a C compiler is missing).
"$PY" "$ROOT/packaging/slim_icu.py" "$DIST"

# freedesktop entry + icon (install: copy share/ into ~/.local/share, edit Exec to the folder)
mkdir -p "$OUT/share/applications" "$OUT/share/icons/hicolor/256x256/apps"
cp "$ROOT/packaging/mnist-desktop.png" "$OUT/share/icons/hicolor/256x256/apps/mnist-desktop.png"
cat > "$OUT/share/applications/$NAME.desktop" <<DESKTOP
[Desktop Entry]
Type=Application
Name=MNIST Desktop$([ "$FLAVOUR" = lite ] && echo " (lite)")
Comment=Recognize handwritten digits
Exec=$DIST/mnist-desktop gui
Icon=mnist-desktop
Terminal=false
Categories=Graphics;Education;
DESKTOP
cp "$ROOT/packaging/mnist-desktop.png" "$DIST/"
cp "$OUT/share/applications/$NAME.desktop" "$DIST/"

ARCH="linux-$(uname -m)"
BASE="$OUT/$NAME-$VERSION-$ARCH"
tar -C "$OUT" -cf - "$NAME" | gzip -6 > "$BASE.tar.gz"
if command -v zstd >/dev/null; then
  # -18 with a 128 MiB window (the most any zstd decodes without --long, so plain
  # `tar --zstd -xf` unpacks it): full 205 -> 185 MB against -10, ~90 s on 2 cores
  # (-19 takes ~9 minutes).
  tar -C "$OUT" -cf - "$NAME" | zstd -q -T0 -18 --long=27 -f -o "$BASE.tar.zst"
fi
T3=$(date +%s)

echo "== $NAME $VERSION ($FLAVOUR) in $DIST"
echo "build time: $((T3 - T0)) s (venv $((T1 - T0)) s, pyinstaller $((T2 - T1)) s, strip+archives $((T3 - T2)) s)"
# Apparent size (the bytes of the files, what the archive holds) and disk use (whole blocks,
# filesystem-dependent).
echo "unpacked: $(du -sm --apparent-size "$DIST" | cut -f1) MiB of files, $(du -sm "$DIST" | cut -f1) MiB on this disk"
for f in "$BASE.tar.gz" "$BASE.tar.zst"; do
  [ -f "$f" ] && echo "$(basename "$f"): $(( $(stat -c %s "$f") / 1000000 )) MB"
done
