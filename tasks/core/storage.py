"""The data root: a local folder, or an S3 prefix mirrored to a local working copy.

Stages always work on local files (`tasks.core.paths.DatasetPaths`); OpenCV, Scrapy and torch
want paths, not streams. With `--data-root s3://bucket/prefix` the dataset lives at
`s3://bucket/prefix/<name>/`; the build pulls it into a local mirror first and pushes what
changed after every stage, so a build resumed on another machine finds the finished
stages (the build cache lives in the dataset's `.faceset/` folder and travels with it).

Every upload carries its MD5 and SHA-256 (`Content-MD5`, `ChecksumSHA256`), so S3 rejects
a corrupted write, and the ETag S3 computes from the bytes it received is checked against
the file's MD5; downloads are checked against the `sha256` metadata written on upload. The endpoint comes from FACESET_S3_ENDPOINT or
AWS_ENDPOINT_URL (a MinIO or moto server), credentials from the usual AWS settings.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tasks.core.atomic import atomic_write, read_json, write_json
from tasks.core.errors import FacesetError
from tasks.core.paths import TAKEDOWNS, DatasetPaths
from tasks.core.safepaths import UnsafePath, inside

log = logging.getLogger(__name__)

INDEX_NAME = "s3-index.json"  # under the mirror's .faceset/: what was last pushed, by size+mtime
UPLOAD_THREADS = 8
SHARED_FILES = (TAKEDOWNS,)  # at the data root, beside the datasets (tasks/core/takedown.py)


class DataRoot(Protocol):
    """Where one dataset lives; `local` is the folder stages read and write."""

    url: str
    local: Path

    def pull(self) -> None: ...

    def pull_shared(self) -> None: ...

    def push(self) -> None: ...


@dataclass
class LocalRoot:
    """A dataset on local disk: nothing to sync."""

    local: Path

    @property
    def url(self) -> str:
        return str(self.local)

    def pull(self) -> None:
        self.local.mkdir(parents=True, exist_ok=True)

    def pull_shared(self) -> None:
        return None

    def push(self) -> None:
        return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def s3_client() -> Any:
    """A boto3 S3 client for the configured endpoint (real S3 when none is set)."""
    import boto3

    endpoint = os.environ.get("FACESET_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


def default_mirror_base() -> Path:
    return Path(os.environ.get("FACESET_MIRROR", Path.home() / ".cache" / "faceset" / "s3"))


@dataclass
class S3Root:
    """A dataset under s3://bucket/prefix/<name>/, worked on in a local mirror folder."""

    bucket: str
    prefix: str  # ends with "/" (or is empty)
    local: Path
    client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = s3_client()

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def _index_path(self) -> Path:
        return DatasetPaths(self.local).state / INDEX_NAME

    def _load_index(self) -> dict[str, list]:
        index = read_json(self._index_path, "every file is compared with S3 again")
        return index if isinstance(index, dict) else {}

    def _save_index(self, index: dict[str, list]) -> None:
        write_json(self._index_path, index, indent=None)

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise FacesetError(
                f"S3 {what} failed for {self.url}: {exc}",
                "check the bucket name, your AWS credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID) and "
                "FACESET_S3_ENDPOINT / AWS_ENDPOINT_URL if you use a non-AWS endpoint; then run the same command again",
            ) from None

    def _remote_objects(self) -> dict[str, dict]:
        """key (relative to the dataset) -> listing entry. Folder markers ("a/") are not files;
        a key that would lead out of the mirror ('..', an absolute path) is left out with a warning."""
        found: dict[str, dict] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("listing", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)))
        for page in pages:
            for entry in page.get("Contents", []):
                rel = entry["Key"][len(self.prefix):]
                if not rel or rel.endswith("/"):
                    continue
                try:
                    inside(self.local, rel, "S3 key")
                except UnsafePath as exc:
                    log.warning("%s (under %s); it is not pulled", exc.message, self.url)
                    continue
                found[rel] = entry
        return found

    def pull(self) -> None:
        """Download what the mirror lacks or has in another version, checking each file's SHA-256."""
        self.local.mkdir(parents=True, exist_ok=True)
        index = self._load_index()
        remote = self._remote_objects()

        def fetch(rel: str) -> tuple[str, list] | None:
            target = self.local / rel
            head = self._call("head", self.client.head_object, Bucket=self.bucket, Key=self.prefix + rel)
            expected = head.get("Metadata", {}).get("sha256")
            if target.is_file() and expected and sha256_file(target) == expected:
                stat = target.stat()
                return rel, [stat.st_size, stat.st_mtime_ns, expected]
            try:
                atomic_write(target, lambda tmp: self._download(rel, tmp, expected), durable=False)  # the mirror is a copy
            except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
                # a key where another key's folder goes ("reports" and "reports/crawl.json"): one of them
                # cannot be a file here; the bucket is damaged or hostile, the rest is pulled
                log.warning("S3 key %r cannot be stored in the mirror (%s) (under %s); it is not pulled",
                            rel, exc.strerror, self.url)
                return None
            stat = target.stat()
            return rel, [stat.st_size, stat.st_mtime_ns, expected or sha256_file(target)]

        self.pull_shared()
        index_key = self._index_path.relative_to(self.local).as_posix()
        wanted = [rel for rel in remote if rel != index_key]
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            for result in pool.map(fetch, wanted):
                if result:
                    index[result[0]] = result[1]
        self._save_index(index)

    def _download(self, rel: str, filename: str, expected: str | None) -> None:
        """Download one object of the dataset to `filename`, refusing it unless its SHA-256 is `expected`."""
        self._call("download", self.client.download_file, Bucket=self.bucket, Key=self.prefix + rel, Filename=filename)
        got = sha256_file(Path(filename))
        if expected and got != expected:
            raise FacesetError(
                f"s3://{self.bucket}/{self.prefix}{rel} is corrupted: its SHA-256 is {got}, expected {expected}",
                "delete that object (or the whole dataset prefix) and run the build again to recreate it",
            )

    def pull_shared(self) -> None:
        """Files kept beside the datasets, shared by all of them (the takedown list), into the mirror's parent
        (again at the end of a build: a takedown added meanwhile on another machine)."""
        parent = self.prefix.rstrip("/").rpartition("/")[0]
        for name in SHARED_FILES:
            key = f"{parent}/{name}" if parent else name
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except Exception:  # noqa: BLE001 - absent (or unreadable): builds go on without it
                continue
            atomic_write(self.local.parent / name, lambda tmp, key=key: self._call(
                "download", self.client.download_file, Bucket=self.bucket, Key=key, Filename=tmp))

    def _local_files(self) -> list[str]:
        files = []
        for path in self.local.rglob("*"):
            if path.is_file() and not path.name.endswith(".tmp") and path.name != INDEX_NAME:
                files.append(path.relative_to(self.local).as_posix())
        return sorted(files)

    def upload(self, rel: str) -> list:
        """Upload one file and check that S3 received exactly these bytes.

        Content-MD5 and ChecksumSHA256 make S3 refuse a corrupted write; the ETag S3
        computes from what it received (the MD5 of a single-part, non-KMS upload) is then
        compared with ours, which also holds on servers that skip those checks.
        """
        path = self.local / rel
        sha, md5 = hashlib.sha256(), hashlib.md5()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
                md5.update(block)
        key = self.prefix + rel
        with open(path, "rb") as body:
            sent = self._call("upload", self.client.put_object, Bucket=self.bucket, Key=key, Body=body,
                              ContentMD5=base64.b64encode(md5.digest()).decode(), ChecksumAlgorithm="SHA256",
                              ChecksumSHA256=_b64(sha.hexdigest()), Metadata={"sha256": sha.hexdigest()})
        etag = str(sent.get("ETag", "")).strip('"')
        if sent.get("ServerSideEncryption") != "aws:kms" and etag != md5.hexdigest():
            raise FacesetError(f"S3 received {key} damaged (its ETag is {etag}, the file's MD5 is {md5.hexdigest()})",
                               "the upload was corrupted on the way; run the same command again")
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns, sha.hexdigest()]

    def push(self) -> None:
        """Upload new and changed files, delete remote files removed locally."""
        index = self._load_index()
        files = self._local_files()
        changed = []
        for rel in files:
            stat = (self.local / rel).stat()
            if index.get(rel, [None, None])[:2] != [stat.st_size, stat.st_mtime_ns]:
                changed.append(rel)
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            for rel, entry in zip(changed, pool.map(self.upload, changed)):
                index[rel] = entry
        gone = sorted(set(index) - set(files))
        for start in range(0, len(gone), 1000):
            chunk = gone[start:start + 1000]
            self._call("delete", self.client.delete_objects, Bucket=self.bucket,
                       Delete={"Objects": [{"Key": self.prefix + rel} for rel in chunk]})
        for rel in gone:
            index.pop(rel, None)
        self._save_index(index)


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/")."""
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise FacesetError(f"{url!r} names no bucket", "write the data root as s3://BUCKET/PREFIX")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def open_root(data_root: str | Path, name: str) -> DataRoot:
    """The data root of dataset `name`: `<data_root>/<name>` on disk, or its S3 counterpart with a local mirror."""
    text = str(data_root)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_url(text)
        local = default_mirror_base() / bucket / prefix / name
        return S3Root(bucket=bucket, prefix=f"{prefix}{name}/", local=local)
    if "://" in text:
        raise FacesetError(f"data root {text!r} is not supported", "use a local folder or s3://bucket/prefix")
    return LocalRoot(Path(text).resolve() / name)
