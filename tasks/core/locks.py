"""Locks: one build of a dataset at a time, and no takedown written under a running build.

On one machine a lock is an OS file lock (`flock`): the OS drops it when its process dies,
so a killed build never leaves a stale lock. Across machines, for an `s3://` data root, it
is a lease object in the bucket: created with a conditional put (`If-None-Match: *`, which
S3 refuses when the object exists), renewed while the build runs, and taken over (with
`If-Match` on the expired lease's ETag, so only one machine wins) once it has expired,
which is how the lease of a crashed build is released.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths

BUILD_LOCK = "build.lock"  # under a dataset's state folder: held by its build, and by `faceset takedown add`
LEASE_SECONDS = 120.0  # a lease not renewed for this long belongs to a crashed build
LEASES = ".faceset-leases"  # under the data root's prefix, beside the datasets (never pulled with one)

log = logging.getLogger(__name__)


@contextmanager
def file_lock(path: Path, busy: FacesetError | None = None, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive OS lock on `path`. When another process holds it: raise `busy` if
    given, else call `waiting` (to tell the user why nothing happens) and wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy is not None:
                raise busy from None
            if waiting is not None:
                waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_lock(paths: DatasetPaths, waiting: Callable[[], None] | None = None):
    """The lock of one dataset on this machine: refused while held, or, given `waiting`, waited for."""
    busy = FacesetError(f"another build of {paths.root.name} is running on this machine",
                        "wait for it to finish, or stop it; then run this command again")
    return file_lock(paths.state / BUILD_LOCK, None if waiting else busy, waiting)


def lease_key(dataset_prefix: str) -> str:
    """'team/datasets/faces/' -> 'team/datasets/.faceset-leases/faces.json'."""
    parent, _, name = dataset_prefix.rstrip("/").rpartition("/")
    return f"{parent}/{LEASES}/{name}.json" if parent else f"{LEASES}/{name}.json"


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def refused(exc: Exception) -> bool:
    """S3 refused a conditional write: the object exists, or is no longer the version we wrote."""
    return _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412")


class Lease:
    """A build's lease on one dataset of an S3 bucket (see the module docstring)."""

    def __init__(self, client: Any, bucket: str, key: str, what: str, seconds: float = LEASE_SECONDS) -> None:
        self.client, self.bucket, self.key, self.what, self.seconds = client, bucket, key, what, seconds
        self.token = uuid.uuid4().hex
        self.holder = f"{socket.gethostname()} (process {os.getpid()})"
        self.etag: str | None = None
        self.lost = False  # another machine took it over after renewals failed
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "token": self.token, "seconds": self.seconds,
                           "renewed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode()

    def _put(self, **condition: str) -> None:
        sent = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                      ContentType="application/json", **condition)
        self.etag = sent["ETag"]

    def _busy(self, holder: str, left: float) -> FacesetError:
        return FacesetError(
            f"another build of {self.what} is running: {holder} holds its lock in s3://{self.bucket}/{self.key}",
            f"wait for that build to finish, or stop it; if it crashed, its lock is released by itself "
            f"in {max(1, round(left))} s, then run this command again")

    def acquire(self) -> None:
        """Create the lease, or take over an expired one; raise a clear error while another holds it."""
        from botocore.exceptions import ClientError

        try:
            self._put(IfNoneMatch="*")
            return
        except ClientError as exc:
            if not refused(exc):
                raise FacesetError(f"the build lock in s3://{self.bucket}/{self.key} cannot be written: {exc}",
                                   "check the bucket and your permissions to write to it") from None
        try:
            current = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError:  # released in the meantime
            return self.acquire()
        try:
            held = json.loads(current["Body"].read())
        except ValueError:
            held = {}
        date = current.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(timezone.utc)  # the bucket's clock
        left = float(held.get("seconds", self.seconds)) - (now - current["LastModified"]).total_seconds()
        if left > 0:
            raise self._busy(str(held.get("holder", "another machine")), left)
        try:
            self._put(IfMatch=current["ETag"])  # only one of the machines taking over wins
        except ClientError:
            raise self._busy("another machine that took over the expired lock", self.seconds) from None
        log.warning("the build lock of %s held by %s had expired (that build stopped); taken over",
                    self.what, held.get("holder", "another machine"))

    def _renew(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(self.seconds / 4):  # three renewals may fail before it expires
            try:
                self._put(IfMatch=str(self.etag))
            except ClientError as exc:
                if refused(exc):
                    self.lost = True
                    log.error("another machine took over the build lock of %s", self.what)
                    return
                log.warning("the build lock of %s could not be renewed (%s); trying again", self.what, exc)
            except BotoCoreError as exc:
                log.warning("the build lock of %s could not be renewed (%s); trying again", self.what, exc)

    def check(self) -> None:
        """Raise when another machine has taken the lease over: this build must write no more."""
        if self.lost:
            raise FacesetError(f"another machine took over the build lock of {self.what} in s3://{self.bucket}/"
                               f"{self.key}: this build could not renew it for {self.seconds:.0f} s, and stops",
                               "check the network to the bucket; run the build again once the other one has finished")

    def release(self) -> None:
        """Stop renewing and delete the lease, unless another machine has taken it over."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            current = self.client.get_object(Bucket=self.bucket, Key=self.key)
            if json.loads(current["Body"].read()).get("token") == self.token:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("the build lock s3://%s/%s was not removed (%s); it expires in %.0f s",
                        self.bucket, self.key, exc, self.seconds)

    def __enter__(self) -> "Lease":
        self.acquire()
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

