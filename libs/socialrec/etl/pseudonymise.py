"""Keyed pseudonyms computed inside Spark: HMAC-SHA256 from sha2/unhex, so billions of ids never leave the JVM."""
from __future__ import annotations

import hashlib
import os

from pyspark.sql import Column
from pyspark.sql import functions as F

_BLOCK = 64  # SHA-256 block size in bytes


class MissingKeyError(RuntimeError):
    """No pseudonymisation key was configured and the development key is not allowed."""


def pseudonymisation_key(privacy_conf: dict) -> bytes:
    """The key comes from the environment (or a secret scope), never from a table."""
    key = os.environ.get(privacy_conf["key_env"])
    if key:
        return key.encode()
    if privacy_conf.get("allow_dev_key"):
        return privacy_conf["dev_key"].encode()
    raise MissingKeyError(f"set {privacy_conf['key_env']} to the pseudonymisation key (HMAC secret)")


def hmac_sha256_hex(column: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, utf8(column)) as lowercase hex, identical to Python's hmac module."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner_pad = bytearray(b ^ 0x36 for b in key)
    outer_pad = bytearray(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), F.encode(column, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256)
