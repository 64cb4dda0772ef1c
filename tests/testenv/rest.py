"""A minimal JSON client for the Kubernetes API, from a token kubeconfig (what control_plane writes).

The process kubelet talks raw JSON: the `kubernetes` client 37's pydantic models refuse fields
they do not know and make every body a typed model, which a kubelet writing Pod status has no use for.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class Rest:
    def __init__(self, kubeconfig: Path, timeout: float = 10) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"].rstrip("/")
        self._headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}",
                         "Accept": "application/json", "User-Agent": "process-kubelet"}
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self._pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_cert_data=ca, maxsize=4,
                                         timeout=urllib3.Timeout(total=timeout), retries=False)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                **query: Any) -> dict[str, Any]:
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        headers = dict(self._headers, **({"Content-Type": content_type} if body is not None else {}))
        data = json.dumps(body).encode() if body is not None else None
        response = self._pool.request(method, url, body=data, headers=headers)
        text = response.data.decode(errors="replace")
        if response.status >= 400:
            raise ApiError(response.status, method, path, text)
        return json.loads(text) if text else {}

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self.request("GET", path, **query)

    def create(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        return self.request("PATCH", path, body, content_type)

    def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.request("DELETE", path, body)

    def close(self) -> None:
        self._pool.clear()
