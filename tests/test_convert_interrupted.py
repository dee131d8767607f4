"""A conversion killed mid-way (real subprocess, real signals) leaves nothing, and never races or eats its source."""

import shutil
import signal
import subprocess
import sys
import time

import pytest

from ascend_nb.convert.sources.baichuan2 import convert_baichuan2
from ascend_nb.convert.sources.bin_to_safetensors import convert_bin_to_safetensors
from ascend_nb.errors import AscendNbError
from tests.tiny_checkpoints import make_tiny_baichuan2, partial_outputs, state_dict_of


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_tiny_baichuan2(tmp_path_factory.mktemp("src") / "baichuan2")


def _start_conversion(src, dst) -> subprocess.Popen:
    """`ascend-nb convert baichuan2 SRC DST` in a child, frozen (SIGSTOP) as soon as its temporary
    directory exists (it lives through the logits verification, which takes seconds)."""
    # the default action for the signals sent, also where this test runs under nohup (whose ignored SIGHUP a child
    # inherits, and a conversion rightly keeps ignoring) or as a background job of a shell (an ignored SIGINT)
    child = subprocess.Popen([sys.executable, "-m", "ascend_nb", "convert", "baichuan2", str(src), str(dst), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGHUP, signal.SIGINT)])
    deadline = time.monotonic() + 120
    while not list(dst.parent.glob(f".{dst.name}.partial-*")):
        assert child.poll() is None, f"the conversion ended before it could be interrupted: {child.stderr.read()}"
        assert time.monotonic() < deadline, "the conversion never started writing"
        time.sleep(0.01)
    child.send_signal(signal.SIGSTOP)
    return child


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["kill-9", "SIGTERM", "SIGHUP", "SIGINT"])
def test_killed_conversion_leaves_nothing_and_the_next_one_succeeds(source, tmp_path, sig):
    dst = tmp_path / "out"
    child = _start_conversion(source, dst)
    if sig == signal.SIGKILL:  # while it runs, a second conversion into the same place is refused
        with pytest.raises(AscendNbError, match="another conversion is writing .*out right now"):
            convert_baichuan2(source, dst, progress=False, verify=False)
    child.send_signal(sig)
    child.send_signal(signal.SIGCONT)  # a caught signal is handled once the child runs again
    child.wait(timeout=60)
    assert child.returncode != 0 and "Traceback" not in child.stderr.read()
    if sig == signal.SIGKILL:
        assert [p.name.split("-")[0] for p in partial_outputs(dst)].count(".out.partial") == 1  # nothing can catch kill -9
    else:
        assert partial_outputs(dst) == []  # cleaned up on the way out
    result = convert_baichuan2(source, dst, progress=False)
    assert result.verification.passed
    assert partial_outputs(dst) == [dst]  # the stale partial directory (kill -9) and the lock are gone


def test_a_run_killed_between_its_renames_gets_the_old_output_back(source, tmp_path):
    """kill -9 after ``dst`` was moved aside and before the new one took its place: the next run restores it."""
    dst = tmp_path / "out"
    convert_bin_to_safetensors(source, dst, progress=False)
    aside = tmp_path / ".out.old-x1y2"
    aside.mkdir()
    dst.rename(aside / "out")
    with pytest.raises(AscendNbError, match="already exists: pass --force"):
        convert_bin_to_safetensors(source, dst, progress=False)
    assert (dst / "model.safetensors").is_file() and partial_outputs(dst) == [dst]


@pytest.mark.parametrize("where", ["parent", "same", "inside"])
def test_force_never_writes_over_or_into_the_source(source, tmp_path, where):
    src = shutil.copytree(source, tmp_path / "models" / "baichuan2")
    dst = {"parent": tmp_path / "models", "same": src, "inside": src / "converted"}[where]
    relation = {"parent": "holds", "same": "is", "inside": "lies inside"}[where]
    with pytest.raises(AscendNbError, match=f"{relation} the source .*could delete the source"):
        convert_bin_to_safetensors(src, dst, force=True, progress=False)
    assert state_dict_of(src).keys() == state_dict_of(source).keys()
    assert sorted(p.name for p in src.iterdir()) == sorted(p.name for p in source.iterdir())
