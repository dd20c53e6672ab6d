"""A real S3-compatible HTTP server on loopback (moto's server mode), with IAM enforced:
a user who may do anything with S3, one who may only read, one who may read and write
objects but not list them, and keys nobody has.

The server lets its first few requests through unauthenticated (moto's
``INITIAL_NO_AUTH_ACTION_COUNT``): exactly the IAM calls that create the two users. Every
request after them is checked against IAM, as a real store checks it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

# AWS authorises HeadObject by s3:GetObject and ListObjectsV2 by s3:ListBucket; moto 5.2.6
# checks the operation's own name instead (a read-only user got 403 on every HEAD), so each
# policy names both and means the same on either version.
_ALL = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
_READ = {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket",
                                       "s3:HeadObject", "s3:ListObjectsV2"],
         "Resource": "*"}  # fmt: skip
_NO_LIST = {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                          "s3:HeadObject"],
            "Resource": "*"}  # fmt: skip
_SETUP_CALLS = 9  # three users: create, policy, access key each


@dataclass(frozen=True)
class Keys:
    key: str
    secret: str


class MotoServer:
    def __init__(self) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_SETUP_CALLS))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        self.full = self._user("writer", _ALL)
        self.read_only = self._user("reader", _READ)
        self.no_list = self._user("blind-writer", _NO_LIST)
        self._buckets = itertools.count()

    def _user(self, name: str, statement: dict) -> Keys:
        import boto3

        iam = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")  # fmt: skip
        iam.create_user(UserName=name)
        doc = {"Version": "2012-10-17", "Statement": [statement]}
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(doc))
        k = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(k["AccessKeyId"], k["SecretAccessKey"])

    def env(self, keys: Keys | None = None) -> dict[str, str]:
        """The variables a user sets to reach this server with ``keys`` (the writer's)."""
        keys = keys or self.full
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": keys.key,
            "AWS_SECRET_ACCESS_KEY": keys.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def fs(self, keys: Keys | None = None):
        import s3fs

        keys = keys or self.full
        return s3fs.S3FileSystem(key=keys.key, secret=keys.secret, skip_instance_cache=True,
                                 use_listings_cache=False,
                                 client_kwargs={"endpoint_url": self.url,
                                                "region_name": "us-east-1"})  # fmt: skip

    def new_bucket(self) -> str:
        import boto3

        name = f"b{os.getpid()}-{next(self._buckets)}"
        k = self.full
        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                     aws_access_key_id=k.key, aws_secret_access_key=k.secret,
                     ).create_bucket(Bucket=name)  # fmt: skip
        return name

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()


def first_attempt_in(fs, shards: str, *, flushed_over: int = -1) -> dict | None:
    """``helpers.ray_nodes.first_attempt`` for a shard directory in a store: a shard's
    first attempt once its partial's segments hold more than ``flushed_over`` bytes."""
    with contextlib.suppress(FileNotFoundError):
        for key in sorted(fs.ls(shards, detail=False, refresh=True)):
            if not key.endswith(".attempt.json"):
                continue
            try:
                a = json.loads(fs.cat_file(key))
            except (FileNotFoundError, ValueError):
                continue
            segs = key.replace(".attempt.json", ".jsonl.partial.segments")
            try:
                flushed = sum(i["size"] for i in fs.ls(segs, detail=True, refresh=True))
            except FileNotFoundError:
                flushed = 0
            if a["attempt"] == 1 and flushed > flushed_over:
                return {**a, "shard": key.rpartition("/")[2], "flushed": flushed}
    return None
