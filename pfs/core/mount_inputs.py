"""A worker's inputs as one `pfs mount --inputs` shows them: each commit (its shard of it, or what changed after an
earlier commit) under a name of its own, all served by one FUSE process.

job-shim writes them as one line of JSON, with the token of its job; the mount reads it once it has started, so a
worker may start its mount before it knows its job (or its token), and pay for starting a Python process while
it waits for its job.
"""

import json
from dataclasses import dataclass

from pfs.core import names
from pfs.core.errors import InvalidArgument
from pfs.core.model import CommitRef
from pfs.core.shard import Shard

@dataclass(frozen=True)
class MountInput:
    """COMMIT shown at NAME through SHARD; with SINCE, only what changed after that commit (INCREMENTAL as
    Client.list_files takes it)."""

    name: str
    commit: CommitRef
    shard: Shard = Shard()
    since: str = ""
    incremental: str = "diff"


def dumps(inputs: list[MountInput], token: str | None = None) -> str:
    """INPUTS, and the TOKEN to read them with (None: the mount's own), as one line of JSON (what loads() reads)."""
    return json.dumps({"token": token, "inputs": [
        {"name": i.name, "commit": str(i.commit), "method": i.shard.method, "shard": f"{i.shard.index}/{i.shard.count}",
         "since": i.since, "incremental": i.incremental} for i in inputs]}) + "\n"


def loads(text: str) -> tuple[list[MountInput], str | None]:
    """The inputs and the token that TEXT gives; InvalidArgument, in one line, for anything else."""
    try:
        given = json.loads(text)
        rows, token = given["inputs"], given.get("token")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("inputs is not a list of objects")
        if not isinstance(token, (str, type(None))):
            raise ValueError("token is not a string")
        inputs = [MountInput(names.check_repo(_text(r, "name")), CommitRef.parse(_text(r, "commit")),
                             Shard.parse(_text(r, "shard", "0/1"), _text(r, "method", "global")), _text(r, "since", ""),
                             _text(r, "incremental", "diff")) for r in rows]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InvalidArgument(f"mount inputs are not a JSON object of inputs (each with name, commit, method, shard, "
                              f"since, incremental) and a token: {type(err).__name__}: {err}") from None
    seen = set()
    for i in inputs:
        if i.name in seen:
            raise InvalidArgument(f"mount inputs name {i.name!r} twice")
        seen.add(i.name)
    return inputs, token


def _text(row: dict, key: str, default: str | None = None) -> str:
    value = row[key] if default is None else row.get(key, default)
    if not isinstance(value, str):
        raise TypeError(f"{key} is {value!r}, not a string")
    return value
