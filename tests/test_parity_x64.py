"""The golden fixtures in float64 (jax_enable_x64), run as users run the checker: the strict
float64 rule (docs/parity.md). A file of its own so that the test workers, which take whole
files, run it beside test_parity.py's float32 run instead of after it."""

from helpers import GOLDEN, assert_every_key_checked_and_passed, run_checker


def test_golden_fixtures_pass_with_every_key_checked_float64():
    rc, out = run_checker(*GOLDEN, "--x64")
    assert rc == 0, out
    assert_every_key_checked_and_passed(GOLDEN, out)
