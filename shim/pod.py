"""`job-pod`: a worker's entrypoint in a Kubernetes pod (the Kubernetes runner's Jobs run it). It runs job-shim,
leaves job-shim's exit status as the container's termination message (pfs.core.kube.TERMINATION_LOG) and exits 0.

Why not job-shim itself: Kubernetes counts a pod that exits non-zero against its Job, and an Indexed Job that
fails stops the pods of all its shards; here the controller alone decides which tries fail and which run again,
from job-shim's report or, where it made none, from the status left here. The servers' CA certificate comes in
the environment (pfs.core.kube.CA_PEM_ENV: no Secret to mount) and goes to job-shim as the file it expects.
"""

import os
import sys
import tempfile
import traceback

from pfs.core import kube
from shim import main as shim


def main(argv: list[str] | None = None) -> None:
    pem = os.environ.pop(kube.CA_PEM_ENV, "")
    if pem:
        with tempfile.NamedTemporaryFile("w", prefix="pfs-ca-", suffix=".pem", delete=False) as f:
            f.write(pem)
        os.environ["PFS_TLS_CA"] = f.name
    try:
        shim.main(argv)
        code = shim.OK
    except SystemExit as err:
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
        code = err.code if isinstance(err.code, int) else shim.SHIM_FAILED if err.code else shim.OK
    except Exception:  # noqa: BLE001 - a bug: its traceback in the pod's log, a failed try in the job
        traceback.print_exc()
        code = shim.SHIM_FAILED
    sys.stdout.flush()
    if not os.path.exists(kube.TERMINATION_LOG):  # not in a pod (the kubelet makes it): the status is job-shim's
        sys.exit(code)
    try:
        with open(kube.TERMINATION_LOG, "w") as f:
            f.write(f"{code}\n")
    except OSError as err:  # the runner sees a pod that ended without a status: a failed try
        print(f"job-pod: cannot leave job-shim's status {code} in {kube.TERMINATION_LOG}: {err.strerror}",
              file=sys.stderr)
    sys.exit(0)


if __name__ == "__main__":
    main()
