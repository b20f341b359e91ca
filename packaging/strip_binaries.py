"""Strip symbol tables and debug info from the shared libraries of a built folder (Linux).

    python packaging/strip_binaries.py DIST

libpython (~17 MB of debug info), Python's extension modules, kiwisolver, Pillow's
modules and torch's libraries (~90 MB of symbol tables) ship with symbols nothing uses
at run time. ``strip --strip-unneeded`` keeps the dynamic symbol table, so loading and
linking are unchanged.

What is never stripped: the program itself (PyInstaller appends its archive to the
executable) and auditwheel's bundled libraries (``*.libs/``): those were rewritten by
patchelf, and strip turns numpy's OpenBLAS into "ELF load command address/offset not
page-aligned". Every stripped file is checked the way the dynamic loader checks it (each
PT_LOAD segment's file offset and address agree modulo its alignment); a file that fails
the check gets its original back. Prints the megabytes saved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _has_symbols(path: Path) -> bool:
    out = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True).stdout
    return any(f" {name}" in out for name in (".symtab", ".debug_info", ".debug_line"))


def loads_cleanly(path: Path) -> bool:
    """The loader's own condition on PT_LOAD segments: offset == address (mod alignment,
    and mod the page size)."""
    proc = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        return False
    loads = 0
    for line in proc.stdout.splitlines():
        parts = line.split()
        if not parts or parts[0] != "LOAD":
            continue
        loads += 1
        offset, vaddr, align = int(parts[1], 16), int(parts[2], 16), int(parts[-1], 16)
        for a in (align, 4096):
            if a > 1 and offset % a != vaddr % a:
                return False
    return loads > 0


def strip_folder(dist: Path) -> int:
    exe_names = {"mnist-desktop", "mnist-desktop.exe"}
    saved = 0
    with tempfile.TemporaryDirectory(prefix="strip-") as tmp:
        backup = Path(tmp) / "orig"
        for root, dirs, files in os.walk(dist):
            dirs[:] = [d for d in dirs if not d.endswith(".libs")]
            for name in files:
                path = Path(root) / name
                if path.is_symlink() or (path.parent == dist and name in exe_names):
                    continue
                if not (".so" in name or name.endswith(".pyd")) or not _is_elf(path):
                    continue
                if not _has_symbols(path):
                    continue
                before = path.stat().st_size
                shutil.copy2(path, backup)
                ok = subprocess.run(["strip", "--strip-unneeded", str(path)],
                                    capture_output=True).returncode == 0
                if not ok or not loads_cleanly(path):
                    shutil.copy2(backup, path)
                    print(f"strip_binaries: kept {path.relative_to(dist)} unstripped")
                    continue
                saved += before - path.stat().st_size
    return saved


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    if shutil.which("strip") is None or shutil.which("readelf") is None:
        print("strip_binaries: no strip/readelf (binutils); folder left as it is")
        return 0
    saved = strip_folder(Path(argv[0]))
    print(f"strip_binaries: {saved / 1e6:.0f} MB of symbols and debug info removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
