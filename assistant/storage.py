"""Writing artifacts safely: atomic files and folders, locked appends, per-corpus locks.

Every artifact is written to a temporary name beside its target and renamed into place, so a
reader (or a process killed half-way) never sees a half-written file. What two processes could
write at once (answer caches, votes, labels, a build folder) is guarded by a `filelock` lock file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from assistant.errors import AssistantError, LockedError


class UnreadableText(ValueError):
    """A text file the tool reads cannot be used as text; `line` and the message say where and the fix."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class NotUTF8(UnreadableText):
    """Bytes that are not UTF-8."""


class NotRegularFile(UnreadableText):
    """A named pipe, device or socket where a file belongs: reading it could block forever or never end."""


class TooLarge(UnreadableText):
    """A file over the size the caller allows (bounded memory for untrusted input)."""


def open_regular(path: Path):
    """`path` opened for binary reading, refused unless it is a regular file. The check is made on
    the opened descriptor (fstat), opened without blocking, so a named pipe swapped in after a stat
    cannot hang the reader. (A folder raises IsADirectoryError, a missing file FileNotFoundError.)"""
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device")
        raise NotRegularFile(1, f"is {kind}, not a regular file; replace it with a file or remove it")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_utf8(path: Path, max_bytes: int | None = None) -> str:
    """A text file's content, without a leading byte-order mark (Notepad and Excel write one; it is
    never content, and left in it hides a first `# heading` or breaks the first JSON line).
    NotUTF8 names the first bad byte, its offset and the iconv fix; NotRegularFile refuses a pipe or
    device; TooLarge a file over `max_bytes`. (A folder raises IsADirectoryError, a missing file
    FileNotFoundError, as open() does.)"""
    with open_regular(path) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(1, f"larger than {max_bytes / 1e6:g} MB; split it or remove it")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise NotUTF8(line, f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); convert it, e.g. "
                            f"iconv -f latin1 -t utf-8 '{path.name}' > fixed && mv fixed '{path.name}'") from None


class NotWritable(AssistantError):
    """A folder the tool must write (a runs folder, a lock beside a file) cannot be written: read-only,
    full, or a file where a folder belongs. One line, naming the folder and the fix."""


@contextmanager
def writable(folder: Path) -> Iterator[None]:
    """Turn an OSError of creating files in `folder` (read-only, full, no permission) into one
    NotWritable line instead of a traceback from deep inside a library."""
    try:
        yield
    except (Timeout, FileNotFoundError):  # not about writability: the caller's business
        raise
    except OSError as e:
        raise NotWritable(f"cannot write in {folder} ({e.strerror or e}); make it writable (or free space), or set "
                          "runs_dir in corpus.yaml to a folder that is") from None


class _Lock(FileLock):
    """A FileLock whose failure to create its lock file is one NotWritable line."""

    def acquire(self, *args, **kwargs):
        with writable(Path(self.lock_file).parent):
            return super().acquire(*args, **kwargs)


def lock_for(path: Path, timeout: float = -1) -> FileLock:
    """The lock guarding `path` (a sibling `.<name>.lock` file); blocks until free by default."""
    with writable(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    return _Lock(str(path.parent / f".{path.name}.lock"), timeout=timeout)


@contextmanager
def hold_lock(lock: FileLock, what: str) -> Iterator[FileLock]:
    """Hold `lock`, acquired at once or failing with one line saying who holds it: a second build
    of the same corpus stops with exit 2 instead of sharing (and deleting) the first one's work."""
    try:
        with writable(Path(lock.lock_file).parent):
            lock.acquire()
    except Timeout:
        raise LockedError(f"locked: {what} ({lock.lock_file}); wait for it to finish, then run the command "
                          "again") from None
    try:
        yield lock
    finally:
        lock.release()


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and one rename (fsynced)."""
    with writable(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_json(path: Path, data, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append rows to a JSONL file under its lock, fsynced: safe across processes and kills
    (a line cut by a kill is skipped by `read_jsonl`)."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not lines:
        return
    with lock_for(path), writable(path.parent):
        with open(path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


def read_json(path: Path) -> dict | None:
    """A JSON file written by atomic_write_json, or None when missing or unreadable (not built)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON object line of `path` ([] when missing); torn or foreign lines are skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # torn, or nested past Python's stack
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def atomic_dir(target: Path, build: Callable[[Path], None], replace: bool = False) -> Path:
    """Run `build(tmp_dir)` and move the result to `target` in one rename.

    Without `replace`, an existing `target` is kept (a concurrent process that finished first won
    the race, and its result is as good). With `replace`, the old folder is swapped out only once
    the new one is complete, and put back if the swap fails.
    """
    if target.exists() and not replace:
        return target
    with writable(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        if replace:  # replacing callers hold the target's lock: leftovers are nobody's work in progress
            recover_swap(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        build(tmp)
        if replace and target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.exists():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def recover_swap(target: Path) -> None:
    """Put back the folder a killed `atomic_dir(replace=True)` had moved aside just before its swap
    (the only moment the target is missing), and drop leftovers of killed builds. Call it only
    while holding the lock that guards `target`."""
    if not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        os.replace(olds.pop(), target)
    for p in [*olds, *target.parent.glob(f".{target.name}.tmp-*")]:
        shutil.rmtree(p, ignore_errors=True)


def atomic_new_dir(parent: Path, stem: str, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp_dir)` and rename the result to the first free name of `stem`, `stem-2`, ...:
    two processes writing at the same second each get their own folder, never a shared temp one."""
    with writable(parent):
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=parent))
    tmp.chmod(0o755)
    try:
        build(tmp)
        for n in range(1, 10_000):
            final = parent / (stem if n == 1 else f"{stem}-{n}")
            if final.exists():
                continue
            try:
                os.rename(tmp, final)  # fails when another process took the name meanwhile
                return final
            except OSError:
                continue
        raise OSError(f"no free folder name for {stem} in {parent}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
