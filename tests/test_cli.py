"""The ascend-nb command line, run as a real subprocess."""

import json
import os
import subprocess
import sys

import pytest


def ascend_nb(*args, stdin=None, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "ascend_nb", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("args, message", [
    (["generate", "hi", "--model", "nope"], "unknown model 'nope'"),
    (["generate", "hi", "--max-new-tokens", "0"], "max_new_tokens must be > 0"),
    (["generate", "hi", "--device", "npu"], "device 'npu' is not available"),
    (["generate", "hi", "--model", "/no/such/dir"], "does not exist"),
    (["generate", "hi", "--tp", "0"], "--tp must be a number of ranks >= 1, got 0"),
    (["generate", "hi", "--tp", "-1", "--backend", "accelerated"], "--tp must be a number of ranks >= 1, got -1"),
    (["generate", "hi", "--device", "cpu:5"], "'cpu:5' does not exist"),
    (["generate", b"caf\xe9 au lait"], "is not valid UTF-8"),
])
def test_bad_input_is_one_line_exit_2_no_traceback(args, message):
    done = ascend_nb(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("ascend-nb")]) == 1


def test_a_file_as_ascend_nb_home_is_one_line_and_a_failing_doctor_check(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    env = {**os.environ, "ASCEND_NB_HOME": str(home)}
    for command in (["generate", "hi"], ["fetch"]):
        done = ascend_nb(*command, env=env)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and "is not a folder; point ASCEND_NB_HOME at a folder" in done.stderr
    done = ascend_nb("doctor", "--json", env=env)
    assert done.returncode == 1, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["checks"]}
    assert rows["cache folder"]["status"] == "fail"
    assert "point ASCEND_NB_HOME at a folder" in rows["cache folder"]["hint"]


def test_fetch_print_path(embedded_model_dir):
    done = ascend_nb("fetch", "--print-path")
    assert done.returncode == 0 and done.stdout.strip() == str(embedded_model_dir)


@pytest.mark.slow
def test_generate_json_answers_paris(embedded_model_dir):
    done = ascend_nb("generate", "What is the capital of France?", "--json", "--dtype", "float32")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert "Paris" in reply["text"]
    assert reply["ttft_ms"] > 0 and reply["tpot_ms"] > 0 and reply["tokens"] > 1


@pytest.mark.slow
def test_chat_loop_reads_stdin_and_toggles_streaming(embedded_model_dir):
    script = "What is the capital of France?\nstream\nclear\nexit\nnever read\n"
    done = ascend_nb("chat", "--max-new-tokens", "24", "--dtype", "float32", stdin=script)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert "[streaming off]" in done.stdout and "[history cleared]" in done.stdout
    assert done.stdout.count("TTFT") == 1


def test_chat_survives_a_line_that_is_not_utf8_and_marks_a_broken_reply():
    """Against the misbehaving test server: bytes that are not UTF-8 skip one line; a cut reply ends the
    session with the partial text marked and one error line (exit 2)."""
    from tests.misbehaving_server import misbehaving_server

    with misbehaving_server() as url:
        chat = [sys.executable, "-m", "ascend_nb", "chat", "--backend", "openai", "--model", "by-message", "--base-url", url]
        good = subprocess.run(chat, input=b"caf\xe9 \xff\xfe?\nhi\nexit\n", capture_output=True, timeout=300)
        cut = subprocess.run([*chat, "--no-stream"], input=b"hi\ncut-body\nnever asked\n", capture_output=True,
                             timeout=300)
    assert good.returncode == 0, good.stderr
    assert b"that line is not valid UTF-8 (byte 0xe9 at 3): skipped" in good.stderr and b"Traceback" not in good.stderr
    assert good.stdout.count(b"Hello world\n") == 1 and good.stdout.count(b"TTFT") == 1
    assert cut.returncode == 2 and cut.stdout.count(b"Hello world\n") == 1 and cut.stdout.endswith(b"Hello [partial reply]\n")
    assert cut.stderr.decode().count("\n") == 1 and "broke the connection mid-stream" in cut.stderr.decode()


def test_a_reader_that_goes_away_ends_quietly():
    """`ascend-nb plan ... | head -0`: no BrokenPipeError traceback, the exit code of a SIGPIPE'd tool."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "ascend_nb", "plan", "--model", "aquila-7b", "--device", "310P3", "--dtype", "float16"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # long before the command has imported torch and written its first line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert stderr == ""
