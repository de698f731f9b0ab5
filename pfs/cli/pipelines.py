"""The pipeline verbs of the `pfs` command: create/update/inspect/list/delete/stop/start-pipeline, flush-commit."""

import dataclasses
import sys
import time
from collections.abc import Callable

from pfs.cli import images, output
from pfs.cli.jobs import limits
from pfs.cli.sources import read_manifests
from pfs.core import manifest
from pfs.core.errors import FailedPrecondition, InvalidArgument, PfsError
from pfs.core.model import DATUM_TRIES, CommitRef, JobState, PipelineSpec, Resources


def cmd_create_pipeline(args, client):
    for spec in _specs(args, client):
        client.create_pipeline(spec)


def cmd_update_pipeline(args, client):
    for spec in _specs(args, client):
        client.create_pipeline(spec, update=True, reprocess=args.reprocess)


def _specs(args, client) -> list[PipelineSpec]:
    """The manifests' pipelines, in order (each checked before any is sent); with --push-images each image pushed
    first, and pinned to the pushed digest."""
    documents = read_manifests(args.file)
    specs = []
    for n, document in enumerate(documents, 1):
        try:
            specs.append(manifest.pipeline(document))
        except InvalidArgument as err:
            raise InvalidArgument(f"manifest {n} of {len(documents)}: {err}" if len(documents) > 1 else str(err)) \
                from None
    return [_pushed(spec, client) for spec in specs] if args.push_images else specs


def _pushed(spec: PipelineSpec, client) -> PipelineSpec:
    if not spec.transform.image:
        raise InvalidArgument(f"--push-images: the manifest of {spec.name} names no image (transform.image)")
    pinned = images.push(spec.transform.image, client.registry)
    print(f"pushed {spec.transform.image} as {pinned}", file=sys.stderr)
    return dataclasses.replace(spec, transform=dataclasses.replace(spec.transform, image=pinned))


def cmd_list_pipeline(args, client):
    if args.raw:
        return output.raw_each(client.list_pipelines())
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
    t = p.spec.transform
    resources = "; ".join(f"{kind} {said}" for kind, r in (("requests", t.resource_requests),
                                                          ("limits", t.resource_limits)) if (said := _resources(r)))
    if resources and client.runner != "kubernetes":
        resources += (f" (recorded, not used: only the kubernetes runner gives workers resources; this server's "
                      f"runner is {client.runner})")
    output.fields([
        ("Name", p.name),
        *([("Description", p.spec.description)] if p.spec.description else []),
        ("State", p.state),
        ("Controller", p.controller or "- (no server holds its lease now)"),
        *([("Reason", f"{p.reason} (failed {p.failures} times in a row; trying again)")] if p.reason else []),
        ("Created", output.ago(p.created)),
        ("Version", p.version),
        ("Parallelism", p.spec.parallelism),
        ("Limits", limits(p.spec.datum_tries or DATUM_TRIES, p.spec.job_timeout, p.spec.datum_timeout)),
        ("Image", image),
        *([("Resources", resources)] if resources else []),
        ("Transform", " ".join(p.spec.transform.cmd)),
        *[("Input", f"{i.repo}@{i.ref} ({i.method}, incremental {i.incremental}{', run_empty' if i.run_empty else ''}; "
                    f"processed up to {dict(p.processed).get(i.repo) or '-'})") for i in p.spec.inputs],
        ("Output repo", p.name),
    ])


def _resources(r: Resources) -> str:
    return ", ".join(f"{name} {value}" for name, value in (("cpu", r.cpu), ("memory", r.memory), ("disk", r.disk),
                                                           ("gpu", f"{r.gpu} {r.gpu_type}".strip() if r.gpu else ""))
                     if value)


def cmd_delete_pipeline(args, client):
    if args.all == bool(args.pipeline):
        raise InvalidArgument("give a PIPELINE, or --all for every pipeline")
    failed: list[str] = []
    deleted = delete_each(client.delete_pipeline,
                          [p.name for p in client.list_pipelines()] if args.all else [args.pipeline], failed)
    if args.delete_repo:  # once no pipeline of them is left to read them
        delete_each(client.delete_repo, deleted, failed)
    if failed:
        raise FailedPrecondition("; ".join(failed))


def cmd_delete_all(args, client):
    """pachctl's delete-all: every pipeline, then every repo with its commits and jobs, once the user says y."""
    if sys.stdin.isatty():
        print("delete every repo, commit, file, pipeline and job? y/N", file=sys.stderr, flush=True)
    if not sys.stdin.readline().lower().startswith("y"):
        raise FailedPrecondition("nothing deleted: answer y (in a script: echo y | pfs delete-all)")
    failed: list[str] = []
    delete_each(client.delete_pipeline, [p.name for p in client.list_pipelines()], failed)
    delete_each(lambda name: client.delete_repo(name, force=True), [r.name for r in client.list_repos()], failed)
    if failed:
        raise FailedPrecondition("; ".join(failed))


def delete_each(delete: Callable[[str], None], names: list[str], failed: list[str]) -> list[str]:
    """Deletes each of NAMES on its own, as pachctl's --all: one that fails (added to FAILED) leaves the others
    deleted; those deleted."""
    done = []
    for name in names:
        try:
            delete(name)
            done.append(name)
        except PfsError as err:
            failed.append(str(err))
    return done


def cmd_stop_pipeline(args, client):
    client.stop_pipeline(args.pipeline)


def cmd_start_pipeline(args, client):
    client.start_pipeline(args.pipeline)


def cmd_flush_commit(args, client):
    refs = [CommitRef.parse(commit, "/@") for commit in args.commits]  # all parsed before waiting for any
    jobs = list({j.id: j for ref in refs for j in client.flush_commit(ref)}.values())  # each once, however many
    output.table(
        ("PIPELINE", "JOB", "STATE", "OUTPUT COMMIT"),
        ((j.pipeline, j.id, j.state, f"{j.output_repo}/{j.output_commit}" if j.output_commit else "-")
         for j in jobs),
    )
    failed = [j for j in jobs if j.state == JobState.FAILURE]
    if failed:
        raise FailedPrecondition("; ".join(f"job {j.id} of pipeline {j.pipeline} failed: {j.error.splitlines()[0]}"
                                           for j in failed))
