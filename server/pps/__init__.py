"""The pipeline system: jobs and their shards (and, next, pipelines and the runners that start workers)."""
