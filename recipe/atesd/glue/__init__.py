"""verl / Ray glue: the trainer step, the worker that hosts the teacher, the controller actor, the
platform switch, config checks and the metrics-history logger. The only layer that imports verl or Ray."""
