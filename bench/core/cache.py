"""The user cache and atomic writes.

Everything sparsebench stores (downloaded GGUF files, dequantized models, attributions, SAEs)
lives under one directory: ``$SPARSEBENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/sparsebench``,
else ``~/.cache/sparsebench``. Writers never leave a half-written file: they write to a
temporary sibling and rename it into place, so an interrupted run leaves either the old entry
or nothing. They never delete what the user owns: a file write refuses a directory target, and
a directory is replaced only when it is an entry of the cache.

Every cache entry is verified when read: model files against the sha256 in their manifest,
attribution entries (:func:`save_checked` / :func:`load_checked`) against a sha256 of their
content stored inside them, SAE entries against the file hashes in their manifest. A corrupt
entry raises :class:`CorruptEntryError`; its reader logs a warning and rebuilds it.

Processes share the cache (pytest-xdist workers, Ray tasks on one machine). A rename is atomic,
so a reader sees a whole entry or none, and two writers of one entry each rename a complete
one. An entry that is costly to build (a GGUF fetch, a model conversion, local SAEs) is built
under :func:`cache_lock`, so a second process waits for the first instead of building it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.core.env import cache_override

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The cache root (not created here)."""
    root = cache_override()
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sparsebench"


def check_cache_usable() -> Path:
    """The cache root takes new files (created if missing), or a BadInputError names it, the
    variable that sets it and the fix; checked before a run does any work."""
    from bench.core.checks import check_writable_parent
    from bench.core.env import CACHE_VAR

    root = cache_root()
    source = f"{CACHE_VAR}={root}" if cache_override() else f"the cache {root}"
    check_writable_parent(root / "entry", f"{source} (set {CACHE_VAR} to a writable directory)")
    return root


def cache_dir(*parts: str) -> Path:
    """The cache root (or a sub-directory of it), created on demand."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class CorruptEntryError(ValueError):
    """A cache entry whose content does not match its stored checksum (or has none)."""


def _inside_cache(path: Path) -> bool:
    try:
        path.resolve().relative_to(cache_root().resolve())
    except ValueError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Temporaries of ``target`` left by writers that were killed (their pid is gone)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)-[A-Za-z0-9_]+\.tmp$")
    for d in target.parent.glob(f".{glob_escape(target.name)}.*.tmp"):
        m = pattern.match(d.name)
        if m and d.is_dir() and not d.is_symlink() and not pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            log.info("removed %s, left by an interrupted write", d)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def atomic_path(target: Path, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    ``kind``: ``"file"`` or ``"dir"``, what will be written (``None``: whatever the body makes).
    A file never replaces a directory: with ``kind="file"`` an existing directory ``target``
    is refused before the body runs (``IsADirectoryError``), and in any case before anything
    is renamed. A directory replaces an existing one only inside the cache (a corrupt entry
    being rebuilt); elsewhere it is refused (``FileExistsError``): nothing that sparsebench
    did not create is ever removed. On an exception the temporary is removed and ``target`` is
    left untouched; a temporary left by a killed writer (its pid is gone) is removed by the next
    write to the same target.
    """
    target = Path(target)
    if kind not in (None, "file", "dir"):
        raise ValueError(f"atomic_path kind must be 'file', 'dir' or None, not {kind!r}")
    if kind == "file" and target.is_dir():
        raise IsADirectoryError(
            f"{target} is a directory; refusing to replace it with a file "
            f"(give a file path, e.g. {target / 'result.json'})"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    prefix = f".{target.name}.{os.getpid()}-"  # the pid tells a later run whether it is stale
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        wrote_dir = tmp_target.is_dir() and not tmp_target.is_symlink()
        if target.is_dir() and not target.is_symlink():
            if not wrote_dir:
                raise IsADirectoryError(
                    f"{target} is a directory; refusing to replace it with a file"
                )
            if not _inside_cache(target):
                raise FileExistsError(
                    f"{target} exists and is not a sparsebench cache entry; refusing to replace "
                    "a directory sparsebench did not create"
                )
            shutil.rmtree(target)
        os.replace(tmp_target, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def cache_lock(target: Path, what: str = "") -> Iterator[None]:
    """Hold an exclusive cross-process lock on ``target`` (a cache entry) for the body.

    Builders of an entry (a local SAE, a dequantized model, a fetched GGUF) take it, then look
    for the entry again: whoever comes second waits, finds it finished and builds nothing. The
    lock is ``fcntl.flock`` on ``.<name>.lock`` beside the entry (POSIX; the file is kept,
    removing it would let a third process lock a different file). The kernel drops it when
    its holder exits, so a killed builder never blocks the next one. ``what`` names the entry
    in the log line written while waiting."""
    import fcntl

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            log.warning("waiting for process %s, which is building %s", holder, what or str(target))
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to the file ``path`` (atomic). A path naming a directory (an
    existing one, or a string ending in '/') and non-finite numbers are refused first."""
    from bench.core.finite import nonfinite_fields

    if str(path).endswith(("/", os.sep)):
        raise IsADirectoryError(f"{path} ends with '/'; a JSON output must be a file path")
    if bad := nonfinite_fields(data):
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"refusing to write {path}: non-finite values: {shown}")
    try:
        with atomic_path(Path(path), kind="file") as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    except OSError as err:
        if isinstance(err, IsADirectoryError | FileExistsError):
            raise
        raise OSError(
            err.errno,
            f"could not write {path} ({err.strerror or err}): free space on its disk "
            "or give another directory; nothing was half-written",
        ) from None


# -- checksummed entries -------------------------------------------------------------------------

CHECKSUM_KEY = "sha256"


def content_sha256(payload: dict[str, Any]) -> str:
    """sha256 of a dict of tensors (dtype, shape and bytes), None and JSON-able values; the
    value under ``CHECKSUM_KEY`` is left out. Independent of device and of pickling."""
    import torch

    h = hashlib.sha256()
    for key in sorted(k for k in payload if k != CHECKSUM_KEY):
        value = payload[key]
        h.update(f"\0{key}\0".encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"tensor {t.dtype} {tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True).encode())
    return h.hexdigest()


def save_checked(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``payload`` atomically to ``path``, with its content sha256 inside."""
    import torch

    data = {**payload, CHECKSUM_KEY: content_sha256(payload)}
    with atomic_path(Path(path), kind="file") as tmp:
        torch.save(data, tmp)


def load_checked(path: Path, map_location: Any = None) -> dict[str, Any]:
    """The payload saved by :func:`save_checked`; ``CorruptEntryError`` if it cannot be read,
    has no checksum or does not match it (a bit flip that still unpickles is caught here)."""
    import torch

    try:
        data = torch.load(path, map_location=map_location)
    except Exception as err:  # any damage that breaks unpickling
        raise CorruptEntryError(f"{path}: unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or CHECKSUM_KEY not in data:
        raise CorruptEntryError(f"{path}: has no checksum (written by an older version?)")
    got = content_sha256(data)
    if got != data[CHECKSUM_KEY]:
        raise CorruptEntryError(
            f"{path}: content sha256 {got[:12]}… does not match the stored "
            f"{str(data[CHECKSUM_KEY])[:12]}…"
        )
    return {k: v for k, v in data.items() if k != CHECKSUM_KEY}


def files_sha256(directory: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative posix path -> digest)."""
    return {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file() and p.relative_to(directory).as_posix() not in exclude
    }


def verify_files(directory: Path, expected: Any) -> str | None:
    """Why the files under ``directory`` do not match ``expected`` (path -> sha256), or None."""
    if not isinstance(expected, dict) or not expected:
        return "no file checksums recorded"
    for name, digest in expected.items():
        path = Path(directory) / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != digest:
            return f"{name} does not match its sha256"
    return None
