"""Stand-alone tools, no verl or Ray: the tiny Qwen3 builder, the metrics history and the run summary."""
