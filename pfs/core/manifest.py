"""Manifests as users write them (JSON, the Pachyderm 1.x fields, snake_case or camelCase) -> the model.

Every refusal names the field and the reason, e.g.
`manifest field inputs[0].method: unknown method 'mapp'; use one of map, reduce, global`.
This module reads the JSON; the rules of the specs it makes are pfs.core.specs, which the server applies too.
"""

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from pfs.core import durations
from pfs.core.model import InputSpec, JobSpec, ParallelismSpec, PipelineSpec, Resources, Transform
from pfs.core.specs import bad, check_job, check_pipeline

# 1.x method aliases -> (the partition a worker sees, what a pipeline's next job sees of the input)
METHOD_ALIASES = {"map": ("map", "diff"), "reduce": ("reduce", "none"), "incremental_reduce": ("reduce", "diff"),
                  "global": ("global", "none")}
PARTITIONS = {"BLOCK": "map", "FILE": "reduce", "REPO": "global"}
DEFAULT_GPU = "nvidia.com/gpu"  # the kind of GPU a manifest that gives only their number asks for, as in 1.x
# top-level fields of both manifests: what each worker asks its cluster for (1.x's first name for the requests was
# resource_spec; 2.x writes resourceRequests, which is the same field in camelCase)
RESOURCE_FIELDS = ("resource_requests", "resource_spec", "resource_limits")
INCREMENTALS = {"NONE": "none", "DIFF": "diff", "FULL": "full", True: "diff", False: "none"}
# Fields of 1.x manifests that pfs does not read, and what to write instead: told apart from a typo
_DROP = "a 1.x field pfs does not read; leave it out"
UNREAD_1X = {
    "glob": 'a 1.4 field: pfs cuts an input by its method instead (glob "/*": "method": "reduce", whole top-level '
            'files; "/": "global"; "map" cuts files into blocks)',
    "name": "not read here: a pipeline's name goes in pipeline.name, and an input (1.4 named them) is seen at "
            "/pfs/<its repo's name>, which cannot be renamed",
    "lazy": "a 1.x field: pfs reads every input on demand through its mount already; leave it out",
    "egress": f"{_DROP} (get-file -r copies an output commit out)",
    "enable_stats": _DROP, "gc_policy": _DROP, "service": _DROP,
    "secrets": f"{_DROP} (the manifest's env gives the command its variables)",
    "image_pull_secrets": _DROP, "output_branch": f"{_DROP} (a pipeline's output goes to its repo's master)",
}


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


class _Fields:
    """An object of a manifest: its fields by snake_case name, each taken at most once, none unknown."""

    def __init__(self, value: Any, where: str, known: tuple[str, ...]) -> None:
        if not isinstance(value, dict):
            raise bad(where, f"expected an object, got {_kind(value)}")
        self.where = where
        self.values: dict[str, Any] = {}
        for key, v in value.items():
            name = _snake(str(key))
            if name not in known:
                said = UNREAD_1X.get(name, "unknown field")
                raise bad(self.at(str(key)), f"{said}; expected one of {', '.join(known)}")
            self.values[name] = v

    def at(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, parse: Callable[[Any, str], Any], default: Any = None, required: bool = False) -> Any:
        if name not in self.values:
            if required:
                raise bad(self.at(name), "missing")
            return default
        return parse(self.values[name], self.at(name))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise bad(where, f"expected a string, got {_kind(value)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise bad(where, f"expected true or false, got {_kind(value)}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:  # not digits, or more than Python converts
            raise bad(where, f"expected a whole number, got {value[:20]!r}{'...' if len(value) > 20 else ''}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(where, f"expected a whole number, got {_kind(value)}")
    return value


def _duration(value: Any, where: str) -> float:
    """Seconds, from a duration as 1.x wrote it ("30s", "5m", "1h30m") or a number of seconds."""
    if isinstance(value, str):
        seconds = durations.parse(value)
        if seconds is not None:
            return seconds
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    shown = f"{value[:20]!r}{'...' if len(value) > 20 else ''}" if isinstance(value, str) else _kind(value)
    raise bad(where, f'expected a duration such as "30s", "5m" or "1h30m", got {shown}')


def _list(item: Callable[[Any, str], Any]) -> Callable[[Any, str], tuple]:
    def parse(value: Any, where: str) -> tuple:
        if not isinstance(value, list):
            raise bad(where, f"expected a list, got {_kind(value)}")
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))
    return parse


def _env(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise bad(where, f"expected an object of names to strings, got {_kind(value)}")
    return tuple((str(k), _str(v, f"{where}.{k}")) for k, v in value.items())


def _name(value: Any, where: str) -> str:
    """A repo as 1.x wrote it, {"name": ...}, or just the name."""
    if isinstance(value, dict):
        return _Fields(value, where, ("name",)).get("name", _str, required=True)
    return _str(value, where)


def transform(value: Any, where: str = "transform") -> Transform:
    f = _Fields(value, where, ("image", "cmd", "stdin", "env", "accept_return_code", "overwrite", "user"))
    return Transform(
        cmd=f.get("cmd", _list(_str), required=True),
        stdin=f.get("stdin", _list(_str), ()),
        env=f.get("env", _env, ()),
        accept_return_code=f.get("accept_return_code", _list(_int), ()),
        image=f.get("image", _str, ""),
        overwrite=f.get("overwrite", _bool, False),
        user=f.get("user", _str, ""),
    )


def _with_resources(t: Transform, fields: _Fields) -> Transform:
    """T with the manifest's resource requests and limits."""
    if "resource_spec" in fields.values and "resource_requests" in fields.values:
        raise bad(fields.at("resource_spec"), "give resource_requests or resource_spec (its 1.x name), not both")
    requests = fields.get("resource_requests", _resources) or fields.get("resource_spec", _resources, Resources())
    return dataclasses.replace(t, resource_requests=requests,
                               resource_limits=fields.get("resource_limits", _resources, Resources()))


def _resources(value: Any, where: str) -> Resources:
    """{"cpu": 0.5 or "500m", "memory": "2G", "gpu": {"type": ..., "number": 1} or 1, "disk": "10G"}."""
    f = _Fields(value, where, ("cpu", "memory", "gpu", "disk"))
    gpu, gpu_type = f.get("gpu", _gpu, (0, ""))
    return Resources(cpu=f.get("cpu", _quantity, ""), memory=f.get("memory", _quantity, ""), gpu=gpu,
                     gpu_type=gpu_type, disk=f.get("disk", _quantity, ""))


def _quantity(value: Any, where: str) -> str:
    """A Kubernetes quantity as a manifest writes it: a number (cores, bytes) or a string ('500m', '2Gi');
    pfs.core.specs checks the string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad(where, f"expected a number or a quantity such as \"500m\" or \"2Gi\", got {_kind(value)}")
    return value if isinstance(value, str) else str(value)


def _gpu(value: Any, where: str) -> tuple[int, str]:
    """(number, kind) of {"type": "nvidia.com/gpu", "number": 1} (1.x, 2.x), or of a bare number (early 1.x)."""
    if isinstance(value, dict):
        f = _Fields(value, where, ("type", "number"))
        number = f.get("number", _int, 0)
        return number, f.get("type", _str, DEFAULT_GPU if number else "")
    number = _int(value, where)
    return number, DEFAULT_GPU if number else ""


def method(value: Any, where: str) -> tuple[str, str]:
    """(partition, incremental) of a 1.x method: an alias, or {"partition": ..., "incremental": ...}."""
    if isinstance(value, str):
        if value not in METHOD_ALIASES:
            raise bad(where, f"unknown method {value!r}; use one of {', '.join(METHOD_ALIASES)}")
        return METHOD_ALIASES[value]
    f = _Fields(value, where, ("partition", "incremental"))
    partition = f.get("partition", _str, "BLOCK").upper()
    if partition not in PARTITIONS:
        raise bad(f.at("partition"), f"unknown partition {partition!r}; use one of {', '.join(PARTITIONS)}")
    incremental = f.get("incremental", lambda v, w: v, "DIFF")
    if not isinstance(incremental, (bool, str)):  # null, say, which str() made NONE
        raise bad(f.at("incremental"), f"expected NONE, DIFF, FULL, true or false, got {_kind(incremental)}")
    key = incremental if isinstance(incremental, bool) else incremental.upper()
    if key not in INCREMENTALS:
        raise bad(f.at("incremental"), f"unknown value {incremental!r}; use NONE, DIFF, FULL, true or false")
    return PARTITIONS[partition], INCREMENTALS[key]


def parallelism(fields: _Fields) -> ParallelismSpec:
    """`parallelism` (a number, or a string of one) or `parallelism_spec`; 1 when neither is given."""
    if "parallelism" in fields.values and "parallelism_spec" in fields.values:
        raise bad(fields.at("parallelism_spec"), "give parallelism or parallelism_spec, not both")
    n = fields.get("parallelism", _int)
    if n is None:
        return fields.get("parallelism_spec", _parallelism_spec, ParallelismSpec())
    return ParallelismSpec(constant=n)


def _parallelism_spec(value: Any, where: str) -> ParallelismSpec:
    """CONSTANT workers, or COEFFICIENT times the runner's capacity (the server resolves it for each job)."""
    f = _Fields(value, where, ("strategy", "constant", "coefficient"))
    strategy = f.get("strategy", _str, "CONSTANT").upper()
    if strategy == "CONSTANT":
        return ParallelismSpec(constant=f.get("constant", _int, 1))
    if strategy == "COEFFICIENT":
        coefficient = f.get("coefficient", lambda v, w: v, 1)
        if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float)) or coefficient <= 0:
            raise bad(f.at("coefficient"), "expected a number above 0")
        return ParallelismSpec(coefficient=float(coefficient))
    raise bad(f.at("strategy"), f"unknown strategy {strategy!r}; use CONSTANT or COEFFICIENT")


def _input(value: Any, where: str, job: bool) -> InputSpec:
    known = ("repo", "commit", "method") if job else ("repo", "branch", "method", "run_empty")
    f = _Fields(value, where, known)
    repo = f.get("repo", _name, "")
    ref = f.get("branch", _str, "master")
    commit = f.values.get("commit")
    if isinstance(commit, dict):  # 1.x: {"repo": {"name": ...}, "id": ...}
        c = _Fields(commit, f.at("commit"), ("repo", "id"))
        repo = c.get("repo", _name, repo)
        ref = c.get("id", _str, ref)
    elif commit is not None:
        ref = _str(commit, f.at("commit"))
    partition, incremental = f.get("method", method, METHOD_ALIASES["map"])
    return InputSpec(repo, ref, partition, incremental, f.get("run_empty", _bool, False))


def _inputs(f: _Fields, job: bool) -> tuple[InputSpec, ...]:
    return f.get("inputs", _list(lambda v, w: _input(v, w, job)), required=True)


def _no_later_input(doc: Any) -> None:
    """Refuses the `input` of 1.x from 1.4 on (pfs or atom with a glob, cross, union), which is not read here,
    saying how to write it: a glob's datums, each seen alone by a run of the command, are not what a method is."""
    if not (isinstance(doc, dict) and "input" in doc):
        return
    given = doc["input"]
    leaf = next((given[k] for k in ("pfs", "atom") if isinstance(given, dict) and isinstance(given.get(k), dict)), {})
    repo = leaf.get("repo") if isinstance(leaf.get("repo"), str) else "REPO"
    raise bad("input", f'the form of 1.4 and later (pfs or atom with a glob, cross, union) is not read; list each '
                       f'repo in "inputs" with a method, e.g. "inputs": [{{"repo": {{"name": "{repo[:40]}"}}, '
                       f'"method": "reduce"}}] (glob "/*": reduce, whole top-level files, each worker\'s command '
                       f'seeing all of its files at once; glob "/": global)')


def job(doc: Any) -> JobSpec:
    """A job manifest (`pfs create-job -f`): transform, parallelism, inputs and an optional output_repo."""
    _no_later_input(doc)
    f = _Fields(doc, "", ("transform", "parallelism", "parallelism_spec", "inputs", "output_repo", *RESOURCE_FIELDS))
    return check_job(JobSpec(
        transform=_with_resources(f.get("transform", transform, required=True), f),
        inputs=_inputs(f, job=True),
        parallelism=parallelism(f),
        output_repo=f.get("output_repo", _str, ""),
    ))


def pipeline(doc: Any) -> PipelineSpec:
    """A pipeline manifest (`pfs create-pipeline -f`), as 1.x wrote it."""
    _no_later_input(doc)
    f = _Fields(doc, "", ("pipeline", "transform", "parallelism", "parallelism_spec", "inputs", "description",
                          "job_timeout", "datum_timeout", "datum_tries", *RESOURCE_FIELDS))
    return check_pipeline(PipelineSpec(
        name=f.get("pipeline", _name, required=True),
        transform=_with_resources(f.get("transform", transform, required=True), f),
        inputs=_inputs(f, job=False),
        parallelism=parallelism(f),
        description=f.get("description", _str, ""),
        job_timeout=f.get("job_timeout", _duration, 0.0),
        datum_timeout=f.get("datum_timeout", _duration, 0.0),
        datum_tries=f.get("datum_tries", _int, 0),
    ))
