"""Shrink the ICU data library Qt Core links (libicudata, 32 MB) to what Qt uses (Linux).

    python packaging/slim_icu.py DIST

Everything Qt 6.11 calls in ICU (the undefined ``*_73`` symbols of every library in the
folder) is: collation (ucol_*: QCollator, file-name sorting), code page converters
(ucnv_*: QStringConverter), case mapping (u_strToUpper/Lower) and time zones (ucal_open,
canonical IDs, display names). No break iterators (Qt has its own text boundaries), no
transliteration, no rule-based number spell-out, no display names of languages, regions,
currencies or units (QLocale has its own CLDR tables), no character names (unames.icu).
Those parts are ~60% of the data; ICU's own Data Build Tool exists to leave such parts
out. This removes them (the name trees keep their root and English entries: root.res,
en*.res, pool.res, res_index.res; time-zone display names in other languages fall back to
root's "GMT+01:00" form), keeps everything else (collation, converters, zone rules,
the per-locale main data) and rebuilds the library with the same soname and data symbol.

Needs icupkg (icu-devtools) and a C compiler; without them the folder is left as it is
(and the build prints so). Prints the megabytes saved.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAME_TREES = ("curr", "lang", "region", "unit", "zone", "rbnf")
DROP_TREES = ("translit", "brkitr")
DROP_ITEMS = ("unames.icu",)
KEEP_IN_NAME_TREES = re.compile(r"^(root|pool|res_index|en|en_[A-Za-z0-9_]+)\.res$")


def _symbol(lib: Path) -> tuple[str, int, int]:
    """(name, file offset, size) of the icudtNN_dat object."""
    syms = subprocess.run(["readelf", "-sW", "--dyn-syms", str(lib)], capture_output=True,
                          text=True, check=True).stdout
    m = re.search(r"\s([0-9a-f]+)\s+(0x[0-9a-f]+|\d+)\s+OBJECT\s+GLOBAL\s+DEFAULT\s+\d+\s+(icudt\d+_dat)$",
                  syms, re.M)
    if not m:
        raise RuntimeError(f"no icudt*_dat symbol in {lib}")
    addr, size, name = int(m.group(1), 16), int(m.group(2), 0), m.group(3)
    sections = subprocess.run(["readelf", "-SW", str(lib)], capture_output=True, text=True, check=True).stdout
    for line in sections.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[0].startswith("["):
            try:
                s_addr, s_off, s_size = int(parts[3], 16), int(parts[4], 16), int(parts[5], 16)
            except ValueError:
                continue
            if s_addr <= addr < s_addr + s_size and parts[2] == "PROGBITS":
                return name, s_off + (addr - s_addr), size
    raise RuntimeError(f"{name} is in no section of {lib}")


def removable(items: list[str]) -> list[str]:
    out = []
    for item in items:
        tree, _, leaf = item.rpartition("/")
        if tree in DROP_TREES or item in DROP_ITEMS or (tree in NAME_TREES and not KEEP_IN_NAME_TREES.match(leaf)):
            out.append(item)
    return out


def slim(lib: Path, cc: str) -> int:
    name, offset, size = _symbol(lib)
    soname = lib.name
    with tempfile.TemporaryDirectory(prefix="slim-icu-") as tmp:
        t = Path(tmp)
        pkg = name.removesuffix("_dat") + "l"          # icudt73l: little-endian ASCII
        dat = t / f"{pkg}.dat"
        with open(lib, "rb") as f:
            f.seek(offset)
            dat.write_bytes(f.read(size))
        items = subprocess.run(["icupkg", "-l", str(dat)], capture_output=True, text=True,
                               check=True).stdout.split()
        drop = removable(items)
        if not drop:
            return 0
        (t / "drop.txt").write_text("\n".join(drop) + "\n")
        slim_dat = t / "slim" / f"{pkg}.dat"
        slim_dat.parent.mkdir()
        subprocess.run(["icupkg", "-r", str(t / "drop.txt"), str(dat), str(slim_dat)],
                       capture_output=True, text=True, check=True)
        (t / "data.S").write_text(
            f'\t.section .rodata\n\t.globl {name}\n\t.type {name}, @object\n\t.balign 16\n'
            f'{name}:\n\t.incbin "{slim_dat}"\n\t.size {name}, .-{name}\n'
            '\t.section .note.GNU-stack,"",@progbits\n')
        out = t / soname
        subprocess.run([cc, "-shared", "-nostdlib", f"-Wl,-soname,{soname}", "-Wl,-z,noexecstack",
                        "-o", str(out), str(t / "data.S")], capture_output=True, text=True, check=True)
        if _symbol(out)[2] != slim_dat.stat().st_size:
            raise RuntimeError("rebuilt library lost its data")
        before = lib.stat().st_size
        shutil.copy2(out, lib)
        return before - lib.stat().st_size


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python packaging/slim_icu.py DIST", file=sys.stderr)
        return 2
    cc = shutil.which("cc") or shutil.which("gcc")
    if not sys.platform.startswith("linux") or not shutil.which("icupkg") or not cc or not shutil.which("readelf"):
        print("slim_icu: needs Linux, icupkg (icu-devtools), a C compiler and readelf; ICU data left whole")
        return 0
    libs = sorted(p for p in Path(argv[0]).rglob("libicudata.so.*") if not p.is_symlink())
    saved = 0
    for lib in libs:
        try:
            saved += slim(lib, cc)
        except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
            detail = getattr(e, "stderr", "") or ""
            print(f"slim_icu: {lib.name} left whole: {e} {detail.strip()[:200]}")
    print(f"slim_icu: {saved / 1e6:.0f} MB of ICU display-name data removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
