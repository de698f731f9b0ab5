"""Uploading /pfs/out as a shard's output: chunked here, only the chunks the server lacks sent, files staged."""

import os
from pathlib import Path

from pfs.client import Client
from pfs.client.upload import Uploader
from pfs.cli.output import size
from shim.logs import Logs


def upload(client: Client, job_id: str, shard: int, attempt: int, out: Path, logs: Logs) -> tuple[int, int]:
    """Stages every file under OUT (in path order) as the shard's output; returns (plain bytes, bytes sent)."""
    def record(writes):
        client.put_shard_files(job_id, shard, attempt, writes)

    total = 0
    with Uploader(client, record) as up:
        for path in sorted(_files(out)):
            rel = path.relative_to(out).as_posix()
            with open(path, "rb") as f:
                up.put(rel, f)
            n = path.stat().st_size
            total += n
            logs.line("shim", f"output {rel} ({size(n)})")
    logs.line("shim", f"output: {size(total)} in all, {size(up.bytes_sent)} sent (the server had the rest)")
    return total, up.bytes_sent


def _files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file():  # symlinks to files are followed; sockets, fifos and the like are not output
                yield path
