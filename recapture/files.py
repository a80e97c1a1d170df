"""Writing files so that a failed or cancelled run never leaves a half-written one behind, never replaces
a file it must not (``publish_new``), and gives finished files the permissions any new file gets; reading
a safetensors header to tell a damaged weight file by its name (``safetensors_keys``)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Callable, Iterator, Sequence


def _new_temporary(path: Path) -> tuple[Path, int]:
    """A new empty hidden file next to ``path`` (same suffix: writers such as PyAV pick the format from
    it), created as ``open()`` creates files, 0o666 less the umask of the moment (ComfyUI's own outputs get
    those permissions), without touching the umask; returns it and that mode. Writers that replace the
    file (safetensors writes its own temporary file) lose the mode: ``_finish`` sets it again."""
    for _ in range(100):
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"no free temporary name next to {path}")


def _finish(tmp: Path, mode: int) -> None:
    os.chmod(tmp, mode)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary file lives in the same folder (same filesystem, so the rename is atomic) and keeps
    the target's suffix (writers such as PyAV pick the format from it). On any exception it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _new_temporary(path)
    try:
        yield tmp
        _finish(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish_new(write: Callable[[Sequence[Path]], None], names: Callable[[int], Sequence[Path]],
                attempts: int = 10_000) -> list[Path]:
    """Writes a set of files that must never replace an existing file, even one created while they were
    being written (another run saving under the same name): returns where they went.

    ``write`` fills temporary files (one per name, next to ``names(1)``); then each set of names
    ``names(1)``, ``names(2)``... is tried in turn. A name is taken with a hard link, which fails instead of
    replacing when the name exists (where the filesystem has no hard links, an exclusive create reserves
    it); when one name of a set is taken, the links made for the set are undone and the next set tried.
    A failed ``write`` leaves nothing behind."""
    first = [Path(p) for p in names(1)]
    for p in first:
        p.parent.mkdir(parents=True, exist_ok=True)
    temporaries: list[tuple[Path, int]] = []
    try:
        for p in first:
            temporaries.append(_new_temporary(p))
        write([tmp for tmp, _ in temporaries])
        for tmp, mode in temporaries:
            _finish(tmp, mode)
        for n in range(1, attempts + 1):
            targets = first if n == 1 else [Path(p) for p in names(n)]
            placed: list[Path] = []
            for (tmp, _), target in zip(temporaries, targets):
                if not _place_without_replacing(tmp, target):
                    break
                placed.append(target)
            else:
                return targets
            for (tmp, _), target in zip(temporaries, placed):  # this set is partly taken: give back ours
                if not tmp.exists():  # placed by renaming (no hard links): move it back
                    os.replace(target, tmp)
                elif os.path.samefile(tmp, target):
                    target.unlink()
        raise FileExistsError(f"{first[0]} and {attempts - 1} numbered names after it are all taken: remove some "
                              "of those files")
    finally:
        for tmp, _ in temporaries:
            tmp.unlink(missing_ok=True)


def _place_without_replacing(tmp: Path, target: Path) -> bool:
    """Puts ``tmp``'s content at ``target`` unless ``target`` exists (then False); never replaces a file."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError as e:  # no hard links here (FAT, some network shares): reserve the name, then fill it
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    os.replace(tmp, target)  # replaces only the empty file reserved just now
    return True


def safetensors_keys(path: str | os.PathLike, shown: str | None = None) -> list[str]:
    """The tensor names of a ``.safetensors`` file, read from its header alone (no weights are read).

    Raises a ``ValueError`` naming the file (as ``shown``, by default with its folder) and the fix when the
    header cannot be read or holds no tensor: a download cut short or a file damaged on disk."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    shown = shown or (f"{path.parent.name}/{path.name}" if path.parent.name else path.name)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{shown} is damaged or incomplete ({e}): download it again") from e
    if not keys:
        raise ValueError(f"{shown} is damaged or incomplete (it holds no weights): download it again")
    return keys
