"""The persistent compilation cache of the commands (nanoaf2_jax/cli/compilation_cache.py): where
it lives, that a second process reads what the first compiled and writes nothing, that 'off'
writes nothing anywhere, and that each command hands its --compilation-cache to it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train
from nanoaf2_jax.cli import compilation_cache, evaluate as evaluate_cli, sample as sample_cli
from nanoaf2_jax.cli.compilation_cache import ENV_VAR, default_cache_dir, resolve_cache_dir

from helpers import REPO

# A small jitted program (compiled in milliseconds, so only cached if the threshold lets small
# programs in), then the cache's own counters: JAX records a monitoring event per compilation
# that asks the cache, per hit, and (named cache_misses) per entry it writes after a miss.
_PROBE = """
import json, sys
import jax, jax.numpy as jnp
from nanoaf2_jax.cli.compilation_cache import enable_compilation_cache
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
path = enable_compilation_cache(sys.argv[1] if len(sys.argv) > 1 else None)
float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.arange(12.0).reshape(3, 4)))
print(json.dumps({"dir": None if path is None else str(path),
                  "asked": events.count("/jax/compilation_cache/compile_requests_use_cache"),
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "written": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _probe_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in (ENV_VAR, "JAX_COMPILATION_CACHE_DIR",
                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), HOME=str(tmp_path / "home"),
               XDG_CACHE_HOME=str(tmp_path / "xdg"), **extra)
    return env


def _start(env, *args):
    return subprocess.Popen([sys.executable, "-c", _PROBE, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def _files(directory: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_cache_location_follows_option_then_environment_then_xdg(tmp_path, monkeypatch):
    for var in (ENV_VAR, "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "nanoaf2_jax" / "jax-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == default_cache_dir() == tmp_path / "xdg" / "nanoaf2_jax" / "jax-cache"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert resolve_cache_dir() == tmp_path / "jax"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "ours"))
    assert resolve_cache_dir() == tmp_path / "ours"
    assert resolve_cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_cache_dir("off") is None
    monkeypatch.setenv(ENV_VAR, "OFF")
    assert resolve_cache_dir() is None
    assert resolve_cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"  # the option wins


def test_a_second_process_reads_the_cache_and_off_writes_nothing(tmp_path):
    unwritable = tmp_path / "a_file"
    unwritable.write_text("not a directory")
    # Independent runs side by side (each mostly starts Python and JAX): the first fill of the
    # default location, 'off' beating JAX's own variable, and a cache that cannot be made.
    first = _start(_probe_env(tmp_path))
    off = _start(_probe_env(tmp_path / "o", **{ENV_VAR: "off",
                                               "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "o" / "jax")}))
    broken = _start(_probe_env(tmp_path / "b"), unwritable / "cache")
    first, _ = _finish(first)
    default = tmp_path / "xdg" / "nanoaf2_jax" / "jax-cache"
    # Every program, however small, is kept: with JAX's default (1 s) none of these would be.
    assert first["dir"] == str(default) and first["hits"] == 0
    assert first["written"] == first["asked"] >= 1
    written = _files(default)
    # The compiled programs only: the IGSO3 table (test below) is written at its first use, and
    # this program draws no IGSO3 noise.
    assert len(written) == first["written"], written

    second, _ = _finish(_start(_probe_env(tmp_path, **{ENV_VAR: str(default)})))
    assert second == {"dir": str(default), "asked": first["asked"], "hits": first["asked"], "written": 0}
    assert _files(default) == written  # nothing new, nothing rewritten

    off, _ = _finish(off)
    assert off == {"dir": None, "asked": 0, "hits": 0, "written": 0}
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*-cache"))
    assert not list(tmp_path.glob("o/**/nanoaf2-igso3-*"))  # off: the table is not written either
    broken, err = _finish(broken)
    assert broken == {"dir": None, "asked": 0, "hits": 0, "written": 0}
    assert "compilation cache" in err and "compiling without it" in err
    assert not any((tmp_path / "b").rglob("*-cache"))


@pytest.mark.parametrize("main, argv", [
    (train.main, ["--data-dir", "/nonexistent/structures"]),
    (sample_cli.main, ["--checkpoint", "/nonexistent/ckpt", "--sequence", "ACDE"]),
    (evaluate_cli.main, ["--checkpoint", "/nonexistent/ckpt", "--data-dir", "/nonexistent"]),
])
def test_each_command_sets_up_the_cache_from_its_option(main, argv, tmp_path, monkeypatch, capsys):
    seen = []
    module = sys.modules[main.__module__]
    assert module.enable_compilation_cache is compilation_cache.enable_compilation_cache
    monkeypatch.setattr(module, "enable_compilation_cache", seen.append)
    try:
        main([*argv, "--compilation-cache", str(tmp_path / "c")])
    except SystemExit:
        pass  # the missing input ends the command; the cache was set up before it
    capsys.readouterr()
    assert seen == [str(tmp_path / "c")]


def test_igso3_quantile_table_is_kept_beside_the_compiled_programs(tmp_path, monkeypatch):
    """The IGSO3 quantile table (1-4 s of numpy at every trace of a train step) is computed once
    per cache directory, at its first use: written there under a digest of what defines it, read
    back equal by a later process without computing, computed again (and rewritten whole) from a
    damaged file; and the pure module computes it itself when no source is set."""
    import numpy as np
    from nanoaf2_jax.diffusion import se3

    computed = se3._compute_igso3_quantile_table()
    calls = []
    monkeypatch.setattr(se3, "_compute_igso3_quantile_table", lambda: calls.append(1) or computed)
    saved = se3._table_source
    file = compilation_cache.igso3_table_file(tmp_path)
    assert file.parent == tmp_path and file.name.startswith("nanoaf2-igso3-quantiles-")

    def start():  # a new process with the cache in tmp_path
        se3.set_igso3_table_source(lambda: compilation_cache.cached_igso3_table(tmp_path))
        return se3.igso3_quantile_table()

    try:
        se3.set_igso3_table_source(lambda: compilation_cache.cached_igso3_table(tmp_path))
        assert not calls and not file.exists()  # nothing read or computed before the first use
        np.testing.assert_array_equal(start(), computed)
        assert len(calls) == 1 and file.exists() and not list(tmp_path.glob("*.tmp-*"))
        np.testing.assert_array_equal(start(), computed)
        assert len(calls) == 1  # read back, not computed
        file.write_bytes(file.read_bytes()[:1000])  # a writer killed mid-file
        np.testing.assert_array_equal(start(), computed)
        assert len(calls) == 2 and np.array_equal(np.load(file), computed)
        se3.set_igso3_table_source(None)  # no source: computed here
        np.testing.assert_array_equal(se3.igso3_quantile_table(), computed)
        assert len(calls) == 3
        se3.set_igso3_table_source(lambda: computed[:10])
        with pytest.raises(ValueError, match="expected"):
            se3.igso3_quantile_table()
    finally:
        se3.set_igso3_table_source(saved)
