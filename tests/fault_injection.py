"""Run train.py with a fault planted (tests only): python tests/fault_injection.py FAULT ARGS...

FAULT is one of
  kill-before-commit:STEP  SIGKILL once step STEP's files are written, before orbax renames
                           its temporary directory into place (the commit)
  kill-after-commit:STEP   SIGKILL after the commit of STEP, before its checksum manifest
  kill-in-export           SIGKILL halfway through writing final_model.* (its temporary file)
  enospc-in-save:STEP      the save of STEP fails as on a full disk (tensorstore's error)
  enospc-in-metrics        the first metrics.jsonl write fails with ENOSPC
Each kill is a real SIGKILL of this process: no finally blocks, no atexit, as with kill -9.
"""

import errno
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _kill():
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def plant(fault: str):
    kind, _, arg = fault.partition(":")
    if kind == "kill-before-commit":
        from orbax.checkpoint._src.path import atomicity

        original = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self, *args, **kwargs):
            if self.get().name.startswith(f"{arg}.orbax-checkpoint-tmp"):
                _kill()
            return await original(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif kind == "kill-after-commit":
        from nanoaf2_jax.training import manifest

        original_write = manifest.write

        def write(step_dir):
            if Path(step_dir).name == arg:
                _kill()
            return original_write(step_dir)

        manifest.write = write
    elif kind == "kill-in-export":
        def half_write(obj_or_file, f=None, **arrays):  # write_torch_state_dict(sd, f), np.savez(f, ...)
            f = f if f is not None else obj_or_file
            f.write(b"PK\x03\x04" + b"\0" * 4096)  # the start of a zip, as both would write
            f.flush()
            _kill()

        import numpy as np

        from nanoaf2_jax.model import convert

        np.savez = half_write
        convert.write_torch_state_dict = half_write  # the .pt writer, as convert calls it
    elif kind == "enospc-in-save":
        from orbax.checkpoint._src.path import atomicity

        original = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self, *args, **kwargs):
            if self.get().name.startswith(f"{arg}.orbax-checkpoint-tmp"):
                raise ValueError(
                    'RESOURCE_EXHAUSTED: Error writing "params/d/0" in OCDBT database: Failed to '
                    f"write 866 bytes to file 31: {os.strerror(errno.ENOSPC)} [os_error_code='28']")
            return await original(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif kind == "enospc-in-metrics":
        from nanoaf2_jax.training import metrics_log

        def _write(self, record):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        metrics_log.MetricsLog._write = _write
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    plant(sys.argv[1])
    import train

    sys.argv = [str(REPO / "train.py"), *sys.argv[2:]]
    sys.exit(train.main(sys.argv[1:]))
