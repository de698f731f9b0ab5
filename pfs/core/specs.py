"""The rules a JobSpec and a PipelineSpec obey, whoever made them: the manifest parser (so the CLI refuses
early) and the server (so a raw gRPC client meets the same refusal, word for word).

Each refusal names the manifest field, e.g. `manifest field inputs[1].repo: repo 'a' is an input twice`.
What needs the server (repos that exist, cycles, what its runner can run) is checked there.
"""

import math
import re

from pfs.core import names, quantity, run_as
from pfs.core.errors import InvalidArgument
from pfs.core.model import (
    DATUM_TRIES, MAX_PARALLELISM, InputSpec, JobSpec, ParallelismSpec, PipelineSpec, Resources, Transform,
)
from pfs.core.shard import METHODS

INT32 = (-2**31, 2**31 - 1)  # the wire's range (protobuf int32) of an exit code
RESERVED = ("out", "prev")  # names in a worker's /pfs that no input may take
INCREMENTALS = ("none", "diff", "full")
QUANTITIES = ("cpu", "memory", "disk")  # the Resources fields that are Kubernetes quantities
MAX_GPUS = 1024
MAX_TIMEOUT = 366 * 86400  # seconds of a job_timeout or datum_timeout: a year is no limit a job meets
MAX_TRIES = 100  # of datum_tries
# Bytes of a transform's cmd, stdin and env together: a script inlined in stdin fits many times over, and a
# pipeline stays small to keep, list and send to each worker (list-pipeline holds them all)
MAX_TRANSFORM_BYTES = 256 << 10
# an extended resource's name, as Kubernetes takes it: a DNS subdomain prefix, a slash, a name
RESOURCE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def bad(where: str, reason: str) -> InvalidArgument:
    """The refusal of manifest field WHERE ('': the manifest itself)."""
    return InvalidArgument(f"manifest field {where}: {reason}" if where else f"a manifest: {reason}")


def check_pipeline(spec: PipelineSpec) -> PipelineSpec:
    """Returns SPEC if it is a pipeline the model allows; its output repo takes its name."""
    try:
        names.check_repo(spec.name)
    except InvalidArgument as err:
        raise bad("pipeline.name", f"{err} (the pipeline's output repo takes its name)") from None
    if spec.name in RESERVED:
        raise bad("pipeline.name", f"{spec.name!r} is taken by a worker's /pfs; choose another name")
    _check_common(spec.transform, spec.parallelism, spec.inputs, pipeline=True)
    for n, i in enumerate(spec.inputs):
        if i.repo == spec.name:
            raise bad(f"inputs[{n}].repo", f"pipeline {spec.name!r} cannot read its own output repo")
    for where, seconds in (("job_timeout", spec.job_timeout), ("datum_timeout", spec.datum_timeout)):
        if not 0 <= seconds <= MAX_TIMEOUT:  # NaN too
            raise bad(where, f"expected a duration from 0 (no limit) to a year (366d), got {seconds:g} seconds")
    if not 0 <= spec.datum_tries <= MAX_TRIES:
        raise bad("datum_tries", f"expected 1 to {MAX_TRIES} tries (0: the default, {DATUM_TRIES}), got "
                  f"{spec.datum_tries}")
    return spec


def check_job(spec: JobSpec) -> JobSpec:
    """Returns SPEC if it is a job the model allows."""
    _check_common(spec.transform, spec.parallelism, spec.inputs, pipeline=False)
    if spec.output_repo:
        try:
            names.check_repo(spec.output_repo)
        except InvalidArgument as err:
            raise bad("output_repo", str(err)) from None
        if any(i.repo == spec.output_repo for i in spec.inputs):
            raise bad("output_repo", f"repo {spec.output_repo!r} cannot be both an input and the output of a job")
    return spec


def _check_common(transform: Transform, parallelism: ParallelismSpec, inputs: tuple[InputSpec, ...],
                  pipeline: bool) -> None:
    if not transform.cmd:
        raise bad("transform.cmd", "empty; give the command to run, e.g. [\"sh\"]")
    if not transform.cmd[0]:
        raise bad("transform.cmd[0]", "empty; the command to run, e.g. \"sh\"")
    for n, arg in enumerate(transform.cmd):  # what exec cannot pass: each would fail every try of every job
        if "\0" in arg:
            raise bad(f"transform.cmd[{n}]", "holds a NUL byte, which no argument of a command can")
    for name, value in transform.env:
        if not name or "=" in name or "\0" in name + value:
            raise bad(f"transform.env[{name[:40]!r}]", "a variable's name is not empty and holds no '=', and "
                      "neither holds a NUL byte")
    size = sum(len(text.encode(errors="replace")) + 1 for text in (*transform.cmd, *transform.stdin,
                                                                     *(f"{k}={v}" for k, v in transform.env)))
    if size > MAX_TRANSFORM_BYTES:
        raise bad("transform", f"its cmd, stdin and env hold {size} bytes, more than the {MAX_TRANSFORM_BYTES} a "
                  "pipeline may; put a long script in an input repo (or the image) and run it from there")
    run_as.check(transform.user)
    for n, code in enumerate(transform.accept_return_code):
        if not INT32[0] <= code <= INT32[1]:
            raise bad(f"transform.accept_return_code[{n}]", f"expected an exit code from {INT32[0]} to {INT32[1]}, "
                      f"got {code}")
    _check_resources(transform.resource_requests, transform.resource_limits)
    _check_parallelism(parallelism)
    if not inputs:
        raise bad("inputs", "empty; give at least one input repo")
    seen = set()
    for n, i in enumerate(inputs):
        _check_input(i, f"inputs[{n}]", pipeline)
        if i.repo in seen:
            raise bad(f"inputs[{n}].repo", f"repo {i.repo!r} is an input twice")
        seen.add(i.repo)


def _check_resources(requests: Resources, limits: Resources) -> None:
    """Each field a quantity or GPUs of a named kind; no request above its limit; GPUs, which Kubernetes does not
    share, the same in both where both give them."""
    for where, r in (("resource_requests", requests), ("resource_limits", limits)):
        for name in QUANTITIES:
            text = getattr(r, name)
            if text and (quantity.parse(text) is None or quantity.parse(text) == 0):
                raise bad(f"{where}.{name}", f"{text[:40]!r} is not a quantity above 0; write a number, or one with "
                          "a unit such as 500m (CPU), 512Mi or 2G")
        if not 0 <= r.gpu <= MAX_GPUS:
            raise bad(f"{where}.gpu.number", f"expected 0 to {MAX_GPUS} GPUs, got {r.gpu}")
        if r.gpu and not RESOURCE_NAME.fullmatch(r.gpu_type):
            raise bad(f"{where}.gpu.type", f"{r.gpu_type[:80]!r} is not a device's resource name; write it as "
                      "Kubernetes names it, such as nvidia.com/gpu")
    for name in QUANTITIES:
        asked, most = getattr(requests, name), getattr(limits, name)
        if asked and most and quantity.parse(asked) > quantity.parse(most):
            raise bad(f"resource_requests.{name}", f"{asked} is above resource_limits.{name} ({most}); a worker "
                      "cannot ask for more than it may use")
    if requests.gpu and limits.gpu and (requests.gpu, requests.gpu_type) != (limits.gpu, limits.gpu_type):
        raise bad("resource_limits.gpu", f"{limits.gpu} {limits.gpu_type} differs from resource_requests.gpu "
                  f"({requests.gpu} {requests.gpu_type}); GPUs are not shared, so give them once, or the same in both")


def _check_parallelism(p: ParallelismSpec) -> None:
    if p.coefficient:
        if not (math.isfinite(p.coefficient) and 0 < p.coefficient <= MAX_PARALLELISM):
            raise bad("parallelism_spec.coefficient", f"expected a number above 0 and at most {MAX_PARALLELISM}, "
                      f"got {p.coefficient:g}")
    elif not 1 <= p.constant <= MAX_PARALLELISM:
        raise bad("parallelism", f"must be at least 1 (and at most {MAX_PARALLELISM}), got {p.constant}")


def _check_input(i: InputSpec, where: str, pipeline: bool) -> None:
    if not i.repo:
        raise bad(f"{where}.repo", "missing; name the input repo")
    try:
        names.check_repo(i.repo)
    except InvalidArgument as err:
        raise bad(f"{where}.repo", str(err)) from None
    if i.repo in RESERVED:
        raise bad(f"{where}.repo", f"a worker's /pfs/{i.repo} is taken; rename the repo")
    if pipeline:  # a pipeline follows a branch
        try:
            names.check_branch(i.ref)
        except InvalidArgument as err:
            raise bad(f"{where}.branch", str(err)) from None
    elif not i.ref:
        raise bad(f"{where}.commit", "missing; name a commit id or branch")
    if i.method not in METHODS:
        raise bad(f"{where}.method", f"unknown method {i.method!r}; use one of {', '.join(METHODS)}")
    if i.incremental not in INCREMENTALS:
        raise bad(f"{where}.method.incremental", f"unknown value {i.incremental!r}; use one of "
                  f"{', '.join(INCREMENTALS)}")
