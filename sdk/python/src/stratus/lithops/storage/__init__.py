"""Lithops' `Storage` on Stratus' object store: the same calls a Lithops
program makes (`put_object`, `get_object` (also as a stream, or a range),
`head_object`, `list_objects`, `list_keys`, `delete_object(s)`,
`head_bucket`, and cloud objects), on the objects of the project the token
acts in. Its backend is named `stratus`."""

from __future__ import annotations

import io
import os
import time
import urllib.parse
import uuid
from typing import Any, Dict, Iterable, List, Optional, Union

from ...client import Client
from ...errors import NotFound
from .utils import CloudObject, StorageNoSuchKeyError

#: The name `Storage.backend` reports, and object URIs use (`stratus://BUCKET/KEY`).
BACKEND = "stratus"
#: The bucket used when the configuration names none.
DEFAULT_BUCKET = "lithops"
#: Where `put_cloudobject` keeps objects it names itself.
CLOUDOBJECTS_PREFIX = "lithops.cloudobjects"


def client_from(config: Optional[Dict[str, Any]]) -> Client:
    """A client from a Lithops configuration's `stratus` section (`url`,
    `token`, `project`), else from the environment as the CLI finds it."""
    s = (config or {}).get("stratus", {}) or {}
    return Client(s.get("url"), s.get("token"), s.get("project"))


def bucket_from(config: Optional[Dict[str, Any]]) -> str:
    config = config or {}
    return (
        config.get("bucket")
        or (config.get("lithops") or {}).get("storage_bucket")
        or (config.get("stratus") or {}).get("storage_bucket")
        or DEFAULT_BUCKET
    )


def _in_bucket(bucket: str, key: str) -> str:
    """A listed key (`BUCKET/KEY`) without its bucket."""
    return key[len(bucket) + 1 :] if key.startswith(bucket + "/") else key


def _path(bucket: str, key: str) -> str:
    return f"{bucket}/{urllib.parse.quote(key, safe='/')}"


class Storage:
    """Lithops' `Storage`: `Storage(config=None, backend=None,
    storage_config=None)`. `config` is a Lithops configuration (its
    `stratus` section says where the server is); `storage_config` is what
    `extract_storage_config` makes of one."""

    def __init__(self, config: Optional[Dict[str, Any]] = None, backend: Optional[str] = None,
                 storage_config: Optional[Dict[str, Any]] = None, client: Optional[Client] = None) -> None:
        if backend not in (None, BACKEND, "localhost"):
            # Any configured backend is served by Stratus' own store.
            backend = None
        conf = storage_config or config or {}
        self.config = conf
        self.backend = BACKEND
        self.bucket = bucket_from(conf)
        self.client = client or client_from(conf)
        self.storage_handler = self

    def get_client(self) -> Client:
        return self.client

    # ---- objects ----

    def put_object(self, bucket: str, key: str, body: Union[bytes, str, Any]) -> None:
        if isinstance(body, str):
            body = body.encode()
        self.client.put_object(_path(bucket, key), body)

    def upload_file(self, file_name: str, bucket: Optional[str] = None, key: Optional[str] = None,
                    extra_args: Optional[Dict[str, Any]] = None, config: Any = None) -> bool:
        """Stores a local file (streamed) as `bucket/key` (by default the
        default bucket, and the file's name)."""
        with open(file_name, "rb") as f:
            self.client.put_object(_path(bucket or self.bucket, key or os.path.basename(file_name)), f)
        return True

    def download_file(self, bucket: str, key: str, file_name: Optional[str] = None,
                      extra_args: Optional[Dict[str, Any]] = None, config: Any = None) -> bool:
        """Writes `bucket/key` into a local file (by default named as the key's last part)."""
        try:
            data = self.client.get_object(_path(bucket, key))
        except NotFound:
            raise StorageNoSuchKeyError(bucket, key) from None
        with open(file_name or key.rsplit("/", 1)[-1], "wb") as f:
            f.write(data)
        return True

    def get_object(self, bucket: str, key: str, stream: bool = False,
                   extra_get_args: Optional[Dict[str, Any]] = None) -> Any:
        """The object's bytes (a file-like object with `stream`);
        `extra_get_args={"Range": "bytes=A-B"}` reads bytes A to B."""
        start = end = None
        rng = (extra_get_args or {}).get("Range")
        if rng:
            first, _, last = rng.replace("bytes=", "").partition("-")
            start = int(first)
            end = int(last) + 1 if last else None
        try:
            data = self.client.get_object(_path(bucket, key), start, end)
        except NotFound:
            raise StorageNoSuchKeyError(bucket, key) from None
        return io.BytesIO(data) if stream else data

    def head_object(self, bucket: str, key: str) -> Dict[str, str]:
        size = self.client.head_object(_path(bucket, key))
        if size is None:
            raise StorageNoSuchKeyError(bucket, key)
        return {"content-length": str(size)}

    def list_objects(self, bucket: str, prefix: Optional[str] = None, match_pattern: Optional[str] = None
                     ) -> List[Dict[str, Any]]:
        """`{"Key", "Size", "LastModified"}` of every object whose key starts
        with `prefix`."""
        objects = self.client.list_objects(bucket, prefix or "")
        out = [{"Key": _in_bucket(bucket, o["key"]), "Size": o["size"], "LastModified": o.get("last_modified")}
               for o in objects]
        if match_pattern:
            import fnmatch

            out = [o for o in out if fnmatch.fnmatch(o["Key"], match_pattern)]
        return out

    def list_keys(self, bucket: str, prefix: Optional[str] = None) -> List[str]:
        return [o["Key"] for o in self.list_objects(bucket, prefix)]

    def delete_object(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(_path(bucket, key))
        except NotFound:
            pass

    def delete_objects(self, bucket: str, key_list: Iterable[str]) -> None:
        for key in key_list:
            self.delete_object(bucket, key)

    def head_bucket(self, bucket: str) -> Dict[str, Any]:
        self.client.list_objects(bucket, "stratus.head-bucket/")  # checks the name, the server, the token
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    def create_bucket(self, bucket: str) -> None:
        """Buckets need no creating: a no-op, for programs that call it."""

    # ---- cloud objects ----

    def put_cloudobject(self, body: Union[bytes, str, Any], bucket: Optional[str] = None,
                        key: Optional[str] = None) -> CloudObject:
        bucket = bucket or self.bucket
        key = key or f"{CLOUDOBJECTS_PREFIX}/{time.strftime('%Y%m%d')}/{uuid.uuid4().hex}"
        self.put_object(bucket, key, body)
        return CloudObject(self.backend, bucket, key)

    def get_cloudobject(self, cloudobject: CloudObject, stream: bool = False) -> Any:
        return self.get_object(cloudobject.bucket, cloudobject.key, stream=stream)

    def delete_cloudobject(self, cloudobject: CloudObject) -> None:
        self.delete_object(cloudobject.bucket, cloudobject.key)

    def delete_cloudobjects(self, cloudobjects: Iterable[CloudObject]) -> None:
        for c in cloudobjects:
            self.delete_cloudobject(c)


__all__ = ["BACKEND", "CloudObject", "Storage", "StorageNoSuchKeyError"]
