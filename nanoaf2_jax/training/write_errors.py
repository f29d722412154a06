"""A run that cannot write (a full disk, a read-only or vanished directory): one line saying what
was being written, where, how much space is free there, and which checkpoint --resume continues
from, instead of orbax's per-thread tracebacks; and no temporary directory left to trip the next
run.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
from pathlib import Path

from .train_config import TrainingError

_ORBAX_TMP = ".orbax-checkpoint-tmp"
# Loggers that report a failed save again from orbax's threads and from asyncio's garbage
# collection of their futures ("Future exception was never retrieved").
_NOISY_LOGGERS = ("absl", "asyncio")


class WriteFailure(TrainingError):
    """Something of the run could not be written; the message is the whole story in one line."""


def free_space(path) -> str:
    """Free space of the filesystem holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown free space"
    if free >= 1 << 30:
        return f"{free / (1 << 30):.1f} GiB free"
    return f"{free / (1 << 20):.1f} MiB free"


def cause_of(err: BaseException) -> str:
    """The reason in a few words: the errno's text where one is known anywhere in the chain
    (orbax wraps tensorstore's error into ValueErrors of several kilobytes)."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return f"{seen.strerror or errno.errorcode.get(seen.errno, seen.errno)} [errno {seen.errno}]"
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        message = os.strerror(code)
        if message in text:
            return f"{message} [errno {code}]"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first if len(first) <= 200 else first[:200] + "..."


def resume_hint(last_step: int | None) -> str:
    if last_step is None:
        return "no checkpoint was completed, so a new run starts from step 0"
    return (f"the last complete checkpoint is step {last_step}: train.py --resume continues "
            "from it once there is room")


def write_failure(what: str, where, err: BaseException, last_step: int | None) -> WriteFailure:
    return WriteFailure(f"cannot write {what} to {where}: {cause_of(err)} ({free_space(where)} "
                        f"there); {resume_hint(last_step)}")


def remove_partial_saves(ckpt_dir, step: int | None = None) -> list[Path]:
    """Delete orbax's temporary directories (of `step`, or all) under `ckpt_dir`: a save that
    failed never committed them, and nothing reads them."""
    removed = []
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return removed
    for entry in ckpt_dir.iterdir():
        if _ORBAX_TMP in entry.name and (step is None or entry.name.split(".", 1)[0] == str(step)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def quiet_orbax():
    """While saving, orbax's threads log and print their own tracebacks of a failure that the
    save then raises anyway; keep them off the terminal (the raised error is reported). On a
    failure they stay quiet: asyncio reports the abandoned futures later, at exit."""
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    hook = threading.excepthook
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    threading.excepthook = lambda args: None
    try:
        yield
    except BaseException:
        raise
    else:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        threading.excepthook = hook
