"""Listing the inputs of a batch run: :func:`collect_files`."""

from __future__ import annotations

import os
from typing import Callable, Iterable


def collect_files(paths: Iterable[str | bytes | os.PathLike], recursive: bool = True,
                  errors: list[tuple[str, str]] | None = None,
                  should_cancel: Callable[[], bool] | None = None) -> list[str]:
    """List the image files under ``paths`` as plain strings, in a deterministic order.

    Parameters
    ----------
    paths
        Files and folders; ``bytes`` paths are decoded with the file-system encoding
        (``surrogateescape``), so names that are not valid UTF-8 still work.
    recursive
        Descend into sub-folders.
    errors
        Receives ``(path, reason)`` for missing paths, unreadable folders and symlink loops.
    should_cancel
        Checked every 1,000 files; the listing so far is returned when it says True.

    Returns
    -------
    list of str
        About 100 bytes per file (a ``str`` each, no ``Path`` objects), so 200,000 files
        cost some 20 MB.
    """
    from mnist_desktop.core.data import iter_image_paths

    out: list[str] = []
    for n, p in enumerate(iter_image_paths([os.fsdecode(p) for p in paths], recursive=recursive,
                                           errors=errors)):
        out.append(p)
        if should_cancel is not None and n % 1000 == 999 and should_cancel():
            break
    return out
