"""Precision: C-Eval-style accuracy by category (two protocols), tensor-level comparison of engines and perplexity
(what each quantization format costs, precision and speed together, is :func:`ascend_nb.bench.quantization_report`)."""

from ascend_nb.precision.ceval import (
    CATEGORIES, CEVAL_SUBJECTS, MMLU_SUBJECTS, PROTOCOLS, SAMPLE_DATA_DIR, Question, Subject, read_questions,
    render_prompt, subject_info,
)
from ascend_nb.precision.engine_compare import ComparisonReport, compare_models, greedy_divergence, tokens_close, topk_per_step
from ascend_nb.precision.accuracy import EvalResult, binomial_interval, evaluate
from ascend_nb.precision.perplexity import HELDOUT_TEXT, PerplexityResult, perplexity, read_text
from ascend_nb.precision.summary import headline
from ascend_nb.precision.metrics import THRESHOLDS, Thresholds, compare_tensors, thresholds_for
from ascend_nb.precision.tables import load_aquila_reference, markdown_table, precision_table

__all__ = [
    "CATEGORIES", "CEVAL_SUBJECTS", "HELDOUT_TEXT", "MMLU_SUBJECTS", "PROTOCOLS", "SAMPLE_DATA_DIR", "THRESHOLDS",
    "ComparisonReport", "EvalResult", "PerplexityResult", "Question", "Subject", "Thresholds",
    "binomial_interval", "compare_models", "compare_tensors", "evaluate", "greedy_divergence", "headline",
    "load_aquila_reference", "markdown_table", "perplexity", "precision_table", "read_questions",
    "read_text", "render_prompt", "subject_info", "thresholds_for", "tokens_close", "topk_per_step",
]
