"""FakeKubernetesAPI: a stand-in for the few REST calls of a Kubernetes API server that the Kubernetes runner makes
(Jobs: create, list, delete; pods: list, log), over HTTP on loopback, for tests of the runner's bookkeeping.

A fake, named as one: it stores what it is sent and answers lists by label selector; it runs no pod and makes none
(a test adds the pods a Job controller would, as data). Nothing that uses it is a cluster test; those are in
tests/test_kubernetes_cluster.py and run against the cluster $KUBECONFIG names.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_JOBS = re.compile(r"/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs(?:/(?P<name>[^/]+))?")
_PODS = re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?")


class FakeKubernetesAPI:
    def __init__(self, drops: tuple[str, ...] = ()) -> None:
        self.drops = drops  # the Job spec fields it does not serve, and drops, as an older API server would
        self.jobs: dict[tuple[str, str], dict] = {}  # (namespace, name) -> Job
        self.pods: dict[tuple[str, str], dict] = {}
        self.logs: dict[str, str] = {}  # pod name -> its log
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, query)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                api._answer(self, "GET")

            def do_POST(self) -> None:
                api._answer(self, "POST")

            def do_DELETE(self) -> None:
                api._answer(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path, namespace: str) -> None:
        """Writes a kubeconfig naming this API, with NAMESPACE as its context's."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}]}))

    def add_pod(self, pod: dict, namespace: str) -> None:
        """A pod, as a Job controller would have made it (and the kubelet updated its status)."""
        self.pods[namespace, pod["metadata"]["name"]] = pod

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append((method, url.path, query))
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"null")
        if m := _JOBS.fullmatch(url.path):
            store = self.jobs
        elif m := _PODS.fullmatch(url.path):
            store = self.pods
        else:
            return self._send(h, 404, _status(404, "NotFound", f"no such path {url.path}"))
        key = (m["ns"], m["name"])
        if method == "GET" and m["name"] is None:
            items = [o for (ns, _), o in store.items() if ns == m["ns"] and _selects(query.get("labelSelector"), o)]
            return self._send(h, 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
        if method == "GET" and m.groupdict().get("log"):
            if key not in store:
                return self._send(h, 404, _status(404, "NotFound", f'pods "{m["name"]}" not found'))
            lines = self.logs.get(m["name"], "").splitlines(keepends=True)
            tail = int(query.get("tailLines", len(lines) or 1))
            return self._send(h, 200, "".join(lines[-tail:]), "text/plain")
        if method == "POST" and m["name"] is None:
            key = (m["ns"], body["metadata"]["name"])
            if key in store:
                return self._send(h, 409, _status(409, "AlreadyExists", f'jobs "{key[1]}" already exists'))
            if store is self.jobs:
                body["spec"] = {k: v for k, v in body["spec"].items() if k not in self.drops}
            store[key] = body
            return self._send(h, 201, body)
        if method == "DELETE" and m["name"]:
            if store.pop(key, None) is None:
                return self._send(h, 404, _status(404, "NotFound", f'jobs "{m["name"]}" not found'))
            for pod_key, pod in list(self.pods.items()):  # the garbage collector's part
                if pod_key[0] == m["ns"] and pod["metadata"]["labels"].get("job-name") == m["name"]:
                    del self.pods[pod_key]
            return self._send(h, 200, _status(200, "", ""))
        return self._send(h, 405, _status(405, "MethodNotAllowed", f"{method} {url.path}"))

    def _send(self, h: BaseHTTPRequestHandler, code: int, body, kind: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _selects(selector: str | None, obj: dict) -> bool:
    """Whether OBJ's labels match SELECTOR (equality terms only: k=v,k2=v2)."""
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, _, v in (t.partition("=") for t in (selector or "").split(",") if t))


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure" if code >= 400 else "Success",
            "message": message, "reason": reason, "code": code}
