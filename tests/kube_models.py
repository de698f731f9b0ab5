"""The Kubernetes client's own models as the judge of what we send and of the statuses we read: an object is
loaded into the model of its kind (which drops what the API does not know, and refuses a missing required field)
and written back as the API takes it. No pytest here; the client must be installed (pfs[kubernetes])."""

import json
from typing import Any

from kubernetes import client

API = client.ApiClient()  # no connection: only its (de)serialisers are used


class _Reply:
    """What ApiClient.deserialize reads: a reply's body."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj)


def load(obj: dict[str, Any], kind: str | None = None) -> Any:
    """OBJ as the model of its kind (V1Job for batch/v1 Job, say), or of KIND."""
    if kind is None:
        group = obj["apiVersion"].split("/")[-1]
        kind = f"{group.capitalize()}{obj['kind']}"
    return API.deserialize(_Reply(obj), kind)


def as_api(model: Any) -> dict[str, Any]:
    """MODEL as the API's JSON."""
    return API.sanitize_for_serialization(model)


def round_trip(obj: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    """OBJ through its model and back: equal to OBJ when every field is the API's."""
    return as_api(load(obj, kind))
