"""The job-shim: runs a pipeline worker's command on its shard of /pfs (issue 4).

Imports pfs (client, vfs, fuse); never server/.
"""
