"""The one writer of every result rem writes: claim, probe, refuse, write atomically, rescue.

A command that writes files (``rem unlearn``, ``train``, ``eval --out``, ``discover --out``, ``report``) and
the API's save functions (:func:`rem.save_checkpoint`, :meth:`rem.Ranking.write`) name every file they will
write in one :class:`Output`, *before any work*::

    with Output([out / "model.safetensors", out / "metrics.json"], overwrite=args.overwrite) as result:
        ...                                   # minutes to hours of work
        result.write({out / "model.safetensors": model_bytes, out / "metrics.json": record_text})

Entering the block (:meth:`Output.claim`):

1. refuses a destination that is a folder, that lies under a file, or that is one of the inputs;
2. creates the missing folders and **claims** each file: an exclusive claim file ``.NAME.rem-claim`` beside
   it (created with ``link``, so it is there whole or not at all) holding this process's pid, host and start
   time. A second run into the same place is refused while the first runs; a claim whose process is gone
   (same host, pid dead or reused) is stale and taken over;
3. **proves it can write** there by writing, syncing and removing a small probe file (a permission check
   cannot see a read-only or full file system, or ``/proc``);
4. finishes an interrupted commit of an earlier run (see below), then refuses unless ``overwrite`` if
   *any* of the files exists, naming them all (``h.safetensors`` *and* ``h.json``: a result is its files).

:meth:`Output.write` writes every file to a temporary file beside it and syncs it; only when all are
written does it commit them: it leaves a commit marker ``.NAME.rem-commit`` beside each destination
(listing the group's temporary and final names), renames every temporary file over its destination,
syncs the folders and removes the markers. A run killed during the commit leaves markers; the next
claim of any of these files completes the commit (every temporary file is whole), or, if a temporary file
is gone, removes the incomplete result. A reader never sees a half-written file, and a result is never
left half-written (a model without its ``metrics.json``).

If writing fails after the work (a full disk, a read-only or failing file system), nothing at the
destination changes and the result is not lost: the same files are written into a new folder
``rem-rescued-NAME-TIME-PID`` beside the destination's folder, else in the temporary folder, and the
:class:`~rem.errors.OutputError` (one line) says where, and why the destination failed.

Leaving the block, with or without an error, removes the claims (and the folders the claim created, if
nothing was written into them).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from rem.errors import OutputError

CLAIM = ".{}.rem-claim"
COMMIT = ".{}.rem-commit"
TEMP = ".{}.rem-tmp-{}"
PROBE = ".rem-probe-{}"


def _mode() -> int:
    """The mode a new file gets under the current umask (``mkstemp`` would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def why(e: OSError) -> str:
    """An OSError as words: its message and its errno's name (``No space left on device (ENOSPC)``)."""
    name = errno.errorcode.get(e.errno or 0, "")
    text = e.strerror or str(e) or type(e).__name__
    return f"{text} ({name})" if name else text


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (jiffies since boot, from /proc): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    now = _start_time(pid)
    return started is None or now is None or now == started


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """``data`` into a new file ``path`` (created exclusively), synced to the disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _mode())
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: Path) -> None:
    """Remove ``path`` if it is there, best effort: a leftover temp file, probe or claim is not worth an error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


class Output:
    """The files one run writes, claimed before the work and written together after it (module docs).

    ``paths``: every file the run writes. ``overwrite``: replace an existing result (else refused).
    ``what``: how the error names the destination (an option, e.g. ``--out``). ``inputs``: files the run
    reads that must never be written over (the starting checkpoint, the weights), or a dict of them to the
    words that name them in the error.
    """

    def __init__(
        self,
        paths: Iterable[str | Path],
        *,
        overwrite: bool = False,
        what: str = "output",
        inputs: Iterable[str | Path | None] | dict[str | Path | None, str] = (),
    ):
        self.paths = [Path(p) for p in paths]
        if not self.paths or len({p.absolute() for p in self.paths}) != len(self.paths):
            raise ValueError("an Output needs distinct file paths")
        self.overwrite = overwrite
        self.what = what
        named = inputs.items() if isinstance(inputs, dict) else ((p, "input") for p in inputs)
        self.inputs = [(Path(p), name) for p, name in named if p]
        self._claims: list[Path] = []
        self._created: list[Path] = []
        self.written: list[Path] = []

    # --- before the work ------------------------------------------------------------------------------

    def __enter__(self) -> Output:
        return self.claim()

    def __exit__(self, *exc) -> None:
        self.release()

    def claim(self) -> Output:
        """Steps 1–4 of the module docs; raises :class:`OutputError` (one line) when the run cannot write."""
        try:
            for p in self.paths:
                self._check_kind(p)
            for folder in self._folders():
                self._make_folder(folder)
            for p in sorted(self.paths, key=lambda q: str(q.absolute())):
                self._claim(p)
            for folder in self._folders():
                self._probe(folder)
            for p in self.paths:
                self._finish_commit(p)
            self._refuse_existing()
        except BaseException:
            self.release()
            raise
        return self

    def _folders(self) -> list[Path]:
        return list(dict.fromkeys(p.parent for p in self.paths))

    def _check_kind(self, p: Path) -> None:
        if p.is_dir():
            raise OutputError(f"{self.what} {p} is a folder, not a file")
        if p.name in ("", ".", ".."):
            raise OutputError(f"{self.what} {p} names a folder, not a file")
        for src, name in self.inputs:
            if p.exists() and src.exists() and p.resolve() == src.resolve():
                raise OutputError(f"{self.what} {p} would overwrite the {name} {src}; choose another place")
        anc = p.parent
        while not anc.exists() and anc.parent != anc:
            anc = anc.parent
        if anc.exists() and not anc.is_dir():
            raise OutputError(f"{self.what} {p} cannot be created: {anc} is a file, not a folder")

    def _make_folder(self, folder: Path) -> None:
        missing = []
        f = folder
        while not f.exists() and f.parent != f:
            missing.append(f)
            f = f.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise OutputError(f"{self.what}: cannot create the folder {d}: {why(e)}") from None
            self._created.append(d)

    def _claim(self, p: Path) -> None:
        claim = p.parent / CLAIM.format(p.name)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}
        info["since"] = time.strftime("%Y-%m-%d %H:%M:%S")
        tmp = p.parent / TEMP.format(p.name + ".claim", os.getpid())
        try:
            tmp.unlink(missing_ok=True)
            _write_file(tmp, (json.dumps(info) + "\n").encode())
            for _ in range(2):
                try:
                    os.link(tmp, claim)
                    self._claims.append(claim)
                    return
                except FileExistsError:
                    if not self._stale(claim, p):
                        continue
                    claim.unlink(missing_ok=True)
            raise OutputError(f"{self.what} {p} is being written by another run; try again when it ends")
        except OSError as e:
            raise OutputError(f"{self.what} {p} cannot be written: {why(e)}") from None
        finally:
            _discard(tmp)

    def _stale(self, claim: Path, p: Path) -> bool:
        """True when ``claim`` belongs to a process that is gone; raises naming the live owner otherwise."""
        try:
            owner = json.loads(claim.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return True
        except (OSError, ValueError, KeyError, TypeError):
            raise OutputError(
                f"{self.what} {p} is claimed by {claim}, which is not a claim rem can read; remove it if no run "
                "is writing there"
            ) from None
        if host == socket.gethostname() and not _alive(pid, owner.get("started")):
            return True
        where = "" if host == socket.gethostname() else f" on {host}"
        raise OutputError(
            f"{self.what} {p} is being written by another rem run (pid {pid}{where}, since {owner.get('since', '?')}); "
            f"wait for it to end, or choose another place (remove {claim} only if that run is gone)"
        )

    def _probe(self, folder: Path) -> None:
        probe = folder / PROBE.format(os.getpid())
        try:
            probe.unlink(missing_ok=True)
            _write_file(probe, b"rem probe: this run can write here\n" * 16)
        except OSError as e:
            raise OutputError(f"{self.what}: cannot write into {folder}: {why(e)}") from None
        finally:
            _discard(probe)

    def _refuse_existing(self) -> None:
        existing = [p for p in self.paths if p.exists() or p.is_symlink()]
        if not existing or self.overwrite:
            return
        if len(self.paths) == 1:
            raise OutputError(
                f"{self.what} {existing[0]} exists; give --overwrite to replace it, or choose another file"
            )
        folder = self.paths[0].parent
        names = ", ".join(p.name if p.parent == folder else str(p) for p in existing)
        raise OutputError(
            f"{self.what}: {folder} already holds {names} (files this run writes); give --overwrite to replace "
            f"{'them' if len(existing) > 1 else 'it'}, or choose another place"
        )

    # --- an earlier run's interrupted commit ----------------------------------------------------------

    def _finish_commit(self, p: Path) -> None:
        """Complete (or, if a temporary file is gone, remove) a result an earlier run was killed committing."""
        marker = p.parent / COMMIT.format(p.name)
        if not marker.exists():
            return
        try:
            pairs = [(Path(t), Path(f)) for t, f in json.loads(marker.read_text())["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            pairs = []
        whole = bool(pairs) and all(t.exists() or f.exists() for t, f in pairs)
        try:
            for tmp, final in pairs:
                if whole and tmp.exists():
                    os.replace(tmp, final)
                elif not whole:
                    tmp.unlink(missing_ok=True)
                    if final.parent.joinpath(COMMIT.format(final.name)).exists():
                        final.unlink(missing_ok=True)  # part of the incomplete result: not a result
            for _, final in pairs or [(None, p)]:
                final.parent.joinpath(COMMIT.format(final.name)).unlink(missing_ok=True)
        except OSError as e:
            raise OutputError(f"{self.what} {p}: cannot finish an interrupted earlier write: {why(e)}") from None

    # --- after the work ---------------------------------------------------------------------------------

    def write(self, contents: dict[str | Path, bytes | str]) -> list[Path]:
        """Write every file (``path`` → bytes or text, the same paths as claimed) atomically and together.

        On a failure nothing at the destination changes; the files are rescued elsewhere and
        :class:`OutputError` says where (module docs)."""
        data = {Path(k): _bytes(v) for k, v in contents.items()}
        if set(data) != set(self.paths):
            raise ValueError(f"write() must be given exactly the claimed files {self.paths}, got {list(data)}")
        temps: dict[Path, Path] = {}
        for p in self.paths:
            temps[p] = p.parent / TEMP.format(p.name, os.getpid())
            try:
                temps[p].unlink(missing_ok=True)
                _write_file(temps[p], data[p])
            except OSError as e:
                self._discard_all(temps)
                self._rescue(data, p, e)
        self._commit(temps, data)
        self.written = list(self.paths)
        return self.written

    @staticmethod
    def _discard_all(temps: dict[Path, Path]) -> None:
        for t in temps.values():
            _discard(t)

    def _commit(self, temps: dict[Path, Path], data: dict[Path, bytes]) -> None:
        record = json.dumps({"files": [[str(t.absolute()), str(p.absolute())] for p, t in temps.items()]})
        markers = [p.parent / COMMIT.format(p.name) for p in temps]
        for p, m in zip(temps, markers):
            try:
                m.unlink(missing_ok=True)
                _write_file(m, record.encode())
            except OSError as e:
                self._discard_all({q: q.parent / COMMIT.format(q.name) for q in temps})
                self._discard_all(temps)
                self._rescue(data, p, e)
        try:
            for p, t in temps.items():
                os.replace(t, p)
            for folder in self._folders():
                _sync_dir(folder)
            for m in markers:
                m.unlink(missing_ok=True)
        except OSError as e:
            raise OutputError(
                f"{self.what}: writing {next(iter(temps))} stopped halfway: {why(e)}; the whole result is in the "
                f"temporary files beside it and the next run into the same place completes it"
            ) from None

    def _rescue(self, data: dict[Path, bytes], failed: Path, error: OSError) -> None:
        """Write ``data`` into a new rescue folder (beside the destination's folder, else the temporary
        folder) and raise :class:`OutputError` saying where; the result is never only in memory."""
        first = self.paths[0]
        stems = {p.stem for p in self.paths}
        stem = stems.pop() if len(stems) == 1 else first.parent.absolute().name  # h.*, else the run's folder
        name = f"rem-rescued-{stem or 'result'}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        tried = []
        for base in (first.parent.absolute().parent, Path(tempfile.gettempdir())):
            folder = base / name
            try:
                folder.mkdir(parents=True)
            except OSError as e:
                tried.append(f"{base}: {why(e)}")
                continue
            try:
                for p, b in data.items():
                    _write_file(folder / p.name, b)
                _sync_dir(folder)
            except OSError as e:
                tried.append(f"{base}: {why(e)}")
                for p in data:
                    (folder / p.name).unlink(missing_ok=True)
                folder.rmdir()
                continue
            self.rescued = folder
            names = ", ".join(p.name for p in data)
            raise OutputError(
                f"cannot write {failed}: {why(error)}; nothing there changed and the result ({names}) was saved "
                f"in {folder} instead: move it into {first.parent} when there is room"
            )
        raise OutputError(
            f"cannot write {failed}: {why(error)}, nor rescue the result ({'; '.join(tried)}); free space and run again"
        )

    # --- leaving --------------------------------------------------------------------------------------------

    def release(self) -> None:
        """Remove the claims, and the folders the claim created if nothing was written into them."""
        for c in self._claims:
            _discard(c)
        self._claims = []
        for d in reversed(self._created):
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass
        self._created = []


def claimed(paths, **kw) -> Output:
    """:class:`Output` of ``paths``, claimed (for code that cannot use a ``with`` block; call ``release``)."""
    return Output(paths, **kw).claim()


def write_now(paths_contents: dict[str | Path, bytes | str], **kw) -> list[Path]:
    """Claim, write and release at once: the save functions of the API (no work between claim and write)."""
    with Output(list(paths_contents), **kw) as out:
        return out.write(paths_contents)


def check_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Refuse, before any work and writing nothing, a ``folder`` that is a file or lies under one."""
    folder = Path(folder)
    anc = folder
    while not anc.exists() and anc.parent != anc:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise OutputError(
            f"{what} {folder} is a file, not a folder"
            if anc == folder
            else f"{what} {folder} cannot be created: {anc} is a file, not a folder"
        )
    return folder


def probe_folder(folder: str | Path, what: str = "run folder") -> Path:
    """Create ``folder`` if missing and prove this process can write into it by writing a probe file there;
    raises :class:`OutputError` (one line) otherwise. For folders whose files have their own writers (a
    run folder's results store)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {folder} cannot be created: {why(e)}") from None
    probe = folder / PROBE.format(os.getpid())
    try:
        probe.unlink(missing_ok=True)
        _write_file(probe, b"rem probe\n")
    except OSError as e:
        raise OutputError(f"{what} {folder} cannot be written: {why(e)}") from None
    finally:
        _discard(probe)
    return folder
