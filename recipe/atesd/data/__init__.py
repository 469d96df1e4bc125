"""Data preparation: training rows and evaluation sets in verl's RL parquet schema."""
