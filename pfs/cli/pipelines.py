"""The pipeline verbs of the `pfs` command: create/update/inspect/list/delete/stop/start-pipeline, flush-commit."""

import dataclasses
import sys
import time

from pfs.cli import images, output
from pfs.cli.sources import read_manifest
from pfs.core import manifest
from pfs.core.errors import FailedPrecondition, InvalidArgument
from pfs.core.model import CommitRef, JobState, PipelineSpec


def cmd_create_pipeline(args, client):
    client.create_pipeline(_spec(args, client))


def cmd_update_pipeline(args, client):
    client.create_pipeline(_spec(args, client), update=True, reprocess=args.reprocess)


def _spec(args, client) -> PipelineSpec:
    """The manifest's pipeline; with --push-images its image pushed first, and pinned to the pushed digest."""
    spec = manifest.pipeline(read_manifest(args.file))
    if args.push_images:
        if not spec.transform.image:
            raise InvalidArgument("--push-images: the manifest names no image (transform.image)")
        pinned = images.push(spec.transform.image, client.registry)
        print(f"pushed {spec.transform.image} as {pinned}", file=sys.stderr)
        spec = dataclasses.replace(spec, transform=dataclasses.replace(spec.transform, image=pinned))
    return spec


def cmd_list_pipeline(args, client):
    now = time.time()
    output.table(
        ("NAME", "INPUT", "OUTPUT", "STATE", "CREATED"),
        ((p.name, ", ".join(i.repo for i in p.spec.inputs), p.name, p.state + (" (failing)" if p.reason else ""),
          output.ago(p.created, now))
         for p in client.list_pipelines()),
    )


def cmd_inspect_pipeline(args, client):
    p = client.inspect_pipeline(args.pipeline)
    if args.raw:
        return output.raw(p)
    image = p.spec.transform.image or "-"
    if client.runner == "local":
        image += " (recorded, not used: this server runs workers with the local runner)"
    output.fields([
        ("Name", p.name),
        *([("Description", p.spec.description)] if p.spec.description else []),
        ("State", p.state),
        ("Controller", p.controller or "- (no server holds its lease now)"),
        *([("Reason", f"{p.reason} (failed {p.failures} times in a row; trying again)")] if p.reason else []),
        ("Created", output.ago(p.created)),
        ("Version", p.version),
        ("Parallelism", p.spec.parallelism),
        ("Image", image),
        ("Transform", " ".join(p.spec.transform.cmd)),
        *[("Input", f"{i.repo}@{i.ref} ({i.method}, incremental {i.incremental}{', run_empty' if i.run_empty else ''}; "
                    f"processed up to {dict(p.processed).get(i.repo) or '-'})") for i in p.spec.inputs],
        ("Output repo", p.name),
    ])


def cmd_delete_pipeline(args, client):
    client.delete_pipeline(args.pipeline)


def cmd_stop_pipeline(args, client):
    client.stop_pipeline(args.pipeline)


def cmd_start_pipeline(args, client):
    client.start_pipeline(args.pipeline)


def cmd_flush_commit(args, client):
    jobs = client.flush_commit(CommitRef.parse(args.commit, "/@"))
    output.table(
        ("PIPELINE", "JOB", "STATE", "OUTPUT COMMIT"),
        ((j.pipeline, j.id, j.state, f"{j.output_repo}/{j.output_commit}" if j.output_commit else "-")
         for j in jobs),
    )
    failed = [j for j in jobs if j.state == JobState.FAILURE]
    if failed:
        raise FailedPrecondition("; ".join(f"job {j.id} of pipeline {j.pipeline} failed: {j.error.splitlines()[0]}"
                                           for j in failed))
