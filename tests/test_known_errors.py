"""Known error signatures: every row against its own sample, real public logs, the doctor's checks, CLI, box.

The log fixtures in tests/fixtures/logs/ are excerpts of error output quoted in public issues (the
first line of each names the issue and the row it must map to).
"""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ascend_nb import doctor
from ascend_nb.cli import build_parser, main
from ascend_nb.cli import doctor as doctor_cli
from ascend_nb.doctor import known_errors
from ascend_nb.doctor.checks import Request, evaluate
from ascend_nb.errors import AscendNbError
from ascend_nb.ui.explain_box import ExplainBox
from tests.test_doctor import SMALL, probe

LOGS = Path(__file__).resolve().parent / "fixtures" / "logs"
TABLE = known_errors.signatures()
REQUIRED = ("libhccl.so", "Failed to load the backend extension: torch_npu", "_ZNK6AsdOps3Ops18GetOperationByNameERKSs",
            "libtorch_npu.so: undefined symbol", "DT_BFLOAT16", "ret is -8005", "500001", "EI0002", "EI0006", "507014",
            "507015", "Cannot re-initialize NPU in forked subprocess", "/dev/davinci_manager", "sp_model",
            "NPU out of memory", "triton")


def _log(path: Path) -> tuple[str, str, str]:
    """(source, expected signature, log text) of a fixture."""
    lines = path.read_text().splitlines()
    source = lines[0].removeprefix("# source: ")
    expected = lines[1].removeprefix("# expected: ")
    return source, expected, "\n".join(lines[2:])


def test_the_table_has_30_real_signatures_each_with_a_public_source():
    assert len(TABLE) >= 30
    assert TABLE["signature"].is_unique
    assert all(re.fullmatch(r"https://(github\.com|www\.hiascend\.com)/\S+", s) for s in TABLE["source"])
    assert all(TABLE[c].str.strip().all() for c in ("signature", "pattern", "cause", "fix", "sample"))
    samples = "\n".join(TABLE["sample"])
    assert [r for r in REQUIRED if r not in samples] == []


@pytest.mark.parametrize("index", range(len(TABLE)), ids=list(TABLE["signature"]))
def test_every_row_matches_its_own_sample_and_no_other_row_matches_it_as_specifically(index):
    row = TABLE.iloc[index]
    found = doctor.explain(row["sample"])
    assert found.iloc[0]["signature"] == row["signature"]
    own = known_errors._specificity(row["pattern"], row["sample"])
    rivals = [other["signature"] for i, other in TABLE.iterrows()
              if i != index and known_errors._specificity(other["pattern"], row["sample"]) >= own]
    assert rivals == []


@pytest.mark.parametrize("path", sorted(LOGS.glob("*.txt")), ids=lambda p: p.stem)
def test_real_logs_map_to_the_right_row(path):
    source, expected, text = _log(path)
    found = doctor.explain(text)
    assert list(found.columns) == ["signature", "cause", "fix", "check", "source"]
    assert found.iloc[0]["signature"] == expected
    assert source.startswith("https://github.com/")


def test_no_match_is_an_empty_frame_pointing_at_the_doctor_and_blank_text_is_refused():
    found = doctor.explain("Everything worked, the capital of France is Paris.")
    assert found.empty and list(found.columns) == list(known_errors.COLUMNS)
    assert "ascend-nb doctor" in found.attrs["message"]
    with pytest.raises(AscendNbError, match="nothing to explain"):
        doctor.explain("  \n")


def test_check_names_are_rows_the_doctor_writes():
    names = {c.name for c in evaluate(probe("310p_cann80", "310p.txt"), Request(model_bytes=SMALL))}
    linked = set(TABLE["check"]) - {""}
    assert linked - names == set() and len(linked) >= 8


def test_the_doctors_failed_checks_map_to_the_same_rows():
    checks = evaluate(probe("310p_cann80", "310p.txt"), Request(model_bytes=SMALL, dtype="bfloat16"))
    failed = {c.name for c in checks if c.status == "fail"}
    assert {"bf16 on NPU", "toolkit set_env.sh"} <= failed
    found = doctor.explain_checks(checks)
    assert {"aclnnCast ... not implemented for DT_BFLOAT16 (EZ1001)", "libhccl.so: cannot open shared object file"} \
        <= set(found["signature"])
    assert "undefined symbol (version mismatch)" not in set(found["signature"])  # only each check's best match
    broken = evaluate(probe("broken_driver", "dcmi_failed.txt"), Request(model_bytes=SMALL))
    assert "dcmi module initialize failed. ret is -8005" in set(doctor.explain_checks(broken)["signature"])


def test_cli_explain_file_stdin_json_and_bad_input(tmp_path, monkeypatch, capsys):
    log = LOGS / "vllm_ascend_2698_dcmi.txt"
    assert main(["doctor", "--explain", str(log)]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # a log shorter than what explain reads gets no note
    assert out.startswith("1. dcmi module initialize failed. ret is -8005") and "confirm: ascend-nb doctor" in out
    assert main(["doctor", "--explain", str(LOGS / "sglang_28628_torch_npu_pair.txt"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [set(r) for r in rows][0] == {"signature", "cause", "fix", "check", "source"}
    assert [r["signature"] for r in rows] == ["libtorch_npu.so: undefined symbol", "undefined symbol (version mismatch)"]

    stdin(monkeypatch, io.BytesIO(b"all fine here"))
    assert main(["doctor", "--explain", "-"]) == 1
    assert "ascend-nb doctor" in capsys.readouterr().out
    for bad, words in ((str(tmp_path / "missing.log"), "is not a file"), ("-", "nothing to explain")):
        stdin(monkeypatch, io.BytesIO(b""))
        assert main(["doctor", "--explain", bad]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1



def stdin(monkeypatch, raw: io.RawIOBase | io.BytesIO) -> None:
    """Make ``raw`` the process's stdin, as a real one is: text over a binary buffer."""
    buffer = raw if isinstance(raw, io.BytesIO) else io.BufferedReader(raw)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(buffer, encoding="utf-8"))


class Pipe(io.RawIOBase):
    """A pipe (not seekable) that hands out ``chunks`` as they are made, so the test never holds the whole log."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.pending = (chunk for chunk in chunks if chunk), b""  # an empty read is the end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.pending:
            self.pending = next(self.chunks, b"")
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n


# whole lines with multibyte characters and bytes that are not UTF-8, as real logs have
FILLER = "INFO step 1234: loss 1.2345, 日志正常 ".encode() + b"\xff\xfe\n"
SIGNATURE_LINE = (TABLE.iloc[0]["sample"] + "\n").encode()
LONG_MIB = 40  # ten times what explain reads


def long_log(head: bytes = b"", tail: bytes = b"") -> Iterator[bytes]:
    """``head``, about LONG_MIB MiB of filler lines, then ``tail``: a long log, made block by block."""
    block = FILLER * 4096
    yield head
    for _ in range((LONG_MIB << 20) // len(block) + 1):
        yield block
    yield tail


def write_log(path: Path, chunks: Iterator[bytes]) -> Path:
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    return path


def explain_traced(monkeypatch, argv: list[str]) -> tuple[int, str, int]:
    """(exit code, the text handed to the matcher, peak bytes Python allocated) of ``ascend-nb`` with ``argv``."""
    build_parser()  # the command modules are imported before memory is traced
    seen = []
    original = known_errors.explain
    monkeypatch.setattr(known_errors, "explain", lambda text: seen.append(text) or original(text))
    tracemalloc.start()
    try:
        code = main(argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return code, seen[0], peak


@pytest.mark.parametrize("source", ["file", "stdin pipe"])
def test_explain_reads_only_the_tail_of_a_long_log_and_says_so(source, tmp_path, monkeypatch, capsys):
    chunks = long_log(tail=SIGNATURE_LINE)
    if source == "file":
        name = str(write_log(tmp_path / "long.log", chunks))
    else:
        stdin(monkeypatch, Pipe(chunks))
        name = "-"
    code, text, peak = explain_traced(monkeypatch, ["doctor", "--explain", name])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith(f"1. {TABLE.iloc[0]['signature']}\n")
    # the matcher saw at most the last TAIL_BYTES, from the first whole line on (no character cut in two)
    assert len(text) <= doctor_cli.TAIL_BYTES and text.startswith(FILLER.decode("utf-8", "replace"))
    assert text.endswith(SIGNATURE_LINE.decode())
    assert peak < 8 * doctor_cli.TAIL_BYTES  # the whole log would take 40 MiB as bytes, more as text
    assert re.fullmatch(r"ascend-nb doctor: note: read the last 4 MiB of 40(\.\d+)? MiB \(error lines are at the "
                        r"end of a log\)\n", err)


def test_a_signature_only_before_the_tail_is_not_found_and_the_note_says_what_was_read(tmp_path, capsys):
    log = write_log(tmp_path / "long.log", long_log(head=SIGNATURE_LINE))
    assert main(["doctor", "--explain", str(log), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert "read the last 4 MiB of 40" in err and err.count("\n") == 1


def test_the_doctors_text_report_lists_the_known_errors_of_its_failed_rows(monkeypatch, capsys):
    from tests.test_doctor import ASCEND_VARS, FIXTURES, clean_env

    for name in ASCEND_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", clean_env("dcmi_failed.txt")["PATH"])
    monkeypatch.setenv("NPU_SMI_SAMPLE", str(FIXTURES / "npu_smi" / "dcmi_failed.txt"))
    assert main(["doctor", "--ascend-root", str(FIXTURES / "broken_driver")]) == 1
    known = capsys.readouterr().out.split("Known errors these rows cause")[1]
    assert "[npu-smi] dcmi module initialize failed. ret is -8005  (https://github.com/vllm-project/vllm-ascend/issues/2698)" \
        in known


def test_explain_box_text_area_button_and_report():
    box = ExplainBox()
    box.text.value = (LOGS / "vllm_ascend_4502_fork.txt").read_text()
    box.button.click()
    assert box.summary().startswith("Cannot re-initialize NPU in forked subprocess -> use spawn")
    assert "<table" in box.result.value and 'href="https://github.com/vllm-project/vllm-ascend/issues/4502"' in box.result.value
    box.text.value = "nothing wrong"
    box.button.click()
    assert "ascend-nb doctor" in box.summary() and "<table" not in box.result.value
    box.text.value = ""
    box.button.click()
    assert "nothing to explain" in box.result.value
    assert box.checks_button.disabled
    report = doctor.Report(evaluate(probe("broken_driver", "dcmi_failed.txt"), Request(model_bytes=SMALL)))
    with_report = ExplainBox(report)
    with_report.checks_button.click()
    assert "dcmi module initialize failed. ret is -8005" in with_report.summary()


def test_no_failed_check_means_nothing_to_explain():
    """An empty table with headers and no rows said nothing: it says why there is nothing to show."""
    report = doctor.Report(evaluate(probe("broken_driver", "dcmi_failed.txt"), Request(model_bytes=SMALL)))
    passing = [check for check in report.checks if check.status != "fail"]
    assert known_errors.explain_checks(passing).attrs["message"] == "nothing to explain: no check failed"
    box = ExplainBox(doctor.Report(passing))
    box.checks_button.click()
    assert "nothing to explain: no check failed" in box.result.value and "<table" not in box.result.value
    assert box.checks_button.description == "Explain failed checks" and box.checks_button.layout.width == "auto"
