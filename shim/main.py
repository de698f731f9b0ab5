"""`job-shim`: the worker entrypoint. Pipelines (and so jobs to run) arrive with issue 4."""

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="job-shim", description="Run a pipeline worker's shard of a job.")
    p.add_argument("--address", default=os.environ.get("PFS_ADDRESS"))
    p.add_argument("--job", default=os.environ.get("PFS_JOB"))
    p.add_argument("--shard", default=os.environ.get("PFS_SHARD") or os.environ.get("JOB_COMPLETION_INDEX"))
    args = p.parse_args(argv)
    print(f"job-shim: this server has no pipelines yet, so there is no job {args.job or ''} to run",
          file=sys.stderr)
    sys.exit(2)
