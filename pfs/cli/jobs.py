"""The job verbs of the `pfs` command: create-job, inspect-job, list-job, stop-job, get-logs."""

import json
import sys
import time

from pfs.cli import output
from pfs.cli.sources import read_manifests
from pfs.core import codec, durations, manifest
from pfs.core.errors import InvalidArgument
from pfs.core.model import JobInfo


def cmd_create_job(args, client):
    documents = read_manifests(args.file)
    if len(documents) > 1:
        raise InvalidArgument(f"{args.file} holds {len(documents)} manifests; create-job runs one")
    job = client.create_job(manifest.job(documents[0]))
    print(job.id)
    shards = f"--shard 0 to {len(job.shards) - 1}" if len(job.shards) > 1 else "--shard 0"
    print(f"its workers are started by hand, not by the server (a pipeline's jobs are): job-shim --job {job.id} "
          f"{shards}", file=sys.stderr)


def cmd_list_job(args, client):
    if args.raw:
        return output.raw_each(client.list_jobs(args.pipeline or ""))
    now = time.time()
    output.table(
        ("ID", "OUTPUT COMMIT", "STARTED", "DURATION", "STATE"),
        ((j.id, f"{j.output_repo}/{j.output_commit}" if j.output_commit else "-", output.ago(j.started, now),
          output.duration((j.finished or now) - j.started), j.state)
         for j in client.list_jobs(args.pipeline or "")),
    )


def inspect_fields(j: JobInfo) -> list[tuple[str, object]]:
    now = time.time()
    return [
        ("ID", j.id),
        *([("Pipeline", j.pipeline)] if j.pipeline else []),
        ("State", j.state),
        ("Started", output.ago(j.started, now)),
        ("Duration", output.duration((j.finished or now) - j.started)),
        ("Parallelism", j.parallelism),
        ("Limits", limits(j.max_attempts, j.timeout, j.datum_timeout)),
        ("Transform", " ".join(j.transform.cmd)),
        *[("Input", f"{i.repo}@{i.commit} ({i.method}, {i.shards} shard{'s' if i.shards != 1 else ''})")
          for i in j.inputs],
        ("Output repo", j.output_repo),
        ("Output commit", j.output_commit or "-"),
        ("Previous output", j.prev_output or "-"),
        ("Bytes in", output.size(sum(s.bytes_in for s in j.shards))),
        ("Bytes out", output.size(sum(s.bytes_out for s in j.shards))),
        ("Bytes sent", output.size(sum(s.bytes_sent for s in j.shards))),
        *([("Error", j.error)] if j.error else []),
    ]


def limits(tries: int, timeout: float, datum_timeout: float) -> str:
    """A job's tries at each shard and its timeouts (0: none), as inspect-job and inspect-pipeline show them."""
    return "; ".join((f"{tries} tr{'ies' if tries != 1 else 'y'} a shard",
                      f"job_timeout {durations.text(timeout) if timeout else 'none'}",
                      f"datum_timeout {durations.text(datum_timeout) if datum_timeout else 'none'}"))


def cmd_inspect_job(args, client):
    j = client.inspect_job(args.job)
    if args.raw:
        return output.raw(j)
    output.fields(inspect_fields(j))
    print()
    output.table(
        ("SHARD", "STATE", "ATTEMPTS", "DURATION", "EXIT", "IN", "OUT", "SENT"),
        ((s.index, s.state, s.attempts,
          output.duration((s.finished or time.time()) - s.started) if s.started else "-",
          s.exit_code if s.finished else "-", output.size(s.bytes_in), output.size(s.bytes_out),
          output.size(s.bytes_sent)) for s in j.shards),
    )


def cmd_stop_job(args, client):
    client.stop_job(args.job)


def cmd_get_logs(args, client):
    if args.given_job and args.job:
        raise InvalidArgument("get-logs takes the job once: JOB or --job JOB")
    job, pipeline = args.given_job or args.job, args.pipeline
    if not (job or pipeline):
        raise InvalidArgument("get-logs needs a JOB (or --job JOB), or --pipeline PIPELINE")
    if job and pipeline:  # pachctl's --pipeline P --job J: that job's, which must be the pipeline's
        of = client.inspect_job(job).pipeline
        if of != pipeline:
            raise InvalidArgument(f"job {job} is not of pipeline {pipeline} but " + (f"of {of}" if of else "made by "
                                  "create-job") + "; give the job alone")
        pipeline = None
    for line in client.get_logs(job or "", pipeline or "", args.follow, args.tail):
        if args.raw:
            print(json.dumps(codec.encode(line)), flush=True)
        else:
            print(line.text, flush=True)
