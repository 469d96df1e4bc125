"""Average@k evaluation of a model directory (docs/evaluation.md): generation, grading, resumable store, summary."""
