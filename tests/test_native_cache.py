"""A damaged native-kernel cache (a truncated or overwritten library under $ASCEND_NB_HOME/kernels) is
built again once, at set-up and at load, and a build that cannot happen is named as the cause."""

import os
import shutil
import subprocess
import sys

import pytest

from ascend_nb import device as devices, native

pytestmark = pytest.mark.skipif(not (devices.cpu_features().avx2 and devices.cpu_features().fma),
                                reason="the native kernels need AVX2 + FMA")


@pytest.fixture()
def damaged_home(tmp_path):
    """A copy of this machine's built avx2 kernels in a fresh ASCEND_NB_HOME, its library cut to 1 KiB."""
    assert native.load_native("avx2"), native.failure("avx2")
    built = native.build_dir("avx2")  # this checkout's build (a long-used home holds older ones beside it)
    copy = tmp_path / "kernels" / built.name
    shutil.copytree(built, copy)
    library = copy / "ascend_nb_cpu_avx2.so"
    library.write_bytes(library.read_bytes()[:1024])
    return tmp_path, library


def _python(code: str, home, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ASCEND_NB_HOME": str(home), **env})


@pytest.mark.heavy  # a full build of one library (the first run's set-up, which CI does every time, builds them all)
def test_a_truncated_library_is_rebuilt_once_and_then_used(damaged_home):
    home, library = damaged_home
    done = _python("from ascend_nb import native; print(native.load_native('avx2'))", home)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert "are damaged (they no longer match their checksum): building them again" in done.stderr
    assert library.stat().st_size > 100_000  # a real library again
    again = _python("from ascend_nb import native; print(native.load_native('avx2'))", home)
    assert again.stdout.strip() == "True" and again.stderr == ""  # loaded as is, nothing rebuilt or warned
    assert sorted(p.name for p in (home / "kernels").iterdir()) == [library.parent.name]  # nothing left aside


def test_when_the_rebuild_fails_the_forced_path_names_the_real_cause(damaged_home):
    home, library = damaged_home
    code = ("from ascend_nb import device\n"
            "device.place('cpu', 'float32', 'accelerated', kernels='cpu-avx2-gemv')")
    done = _python(code, home, CXX="/nonexistent/c++")  # no compiler for the rebuild
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "kernel path 'cpu-avx2-gemv' needs the native avx2 kernels, which could not be built here" in last
    assert "cannot run on this CPU" not in done.stderr
