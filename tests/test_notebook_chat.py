"""03_chat.ipynb runs headless: the chat app loads the model and the terminal replay answers, with clean outputs."""

import pytest

from tests.notebook_runner import outputs_text, run_notebook

pytestmark = pytest.mark.slow


def test_chat_notebook_runs_headless(tmp_path):
    notebook = run_notebook("03_chat.ipynb", {"DTYPE": "float32", "CLI_MAX_NEW_TOKENS": 16}, tmp_dir=tmp_path)
    text = outputs_text(notebook)
    assert "$ ascend-nb chat" in text and "Paris" in text
    assert "max_new_tokens" in text  # app.chat.generation_params()
