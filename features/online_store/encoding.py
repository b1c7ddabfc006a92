"""Feast's byte layout of online values, in one place: the serialized entity key of a customer and the
serialized ``ValueProto`` of a number, encoded and decoded many at a time with numpy.

Every store behind ``features.online_store`` keys and stores values this way, so that Feast's own
``get_online_features`` reads what we write and we read what Feast writes (tests check both ways).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

from core.errors import PropensityError
from features.catalog import FLOAT, INT, JOIN_KEY

_STRING_VALUE_TYPE = 2  # feast ValueType.STRING
_KEY_PREFIX = struct.pack("<I", 1) + struct.pack("<II", _STRING_VALUE_TYPE, len(JOIN_KEY)) + JOIN_KEY.encode()

# A ValueProto holding one number is a field tag and the number: double_val (field 5, 8 little-endian
# bytes) or int64_val (field 4, a varint of up to 10 bytes). A null is the empty message, b"".
# tests/features/test_store.py checks these patterns against ValueProto.SerializeToString().
DOUBLE_TAG = 0x29
INT64_TAG = 0x20
SLOT_WIDTH = {FLOAT: 9, INT: 11}  # bytes of the longest serialized value of each kind
_SEPTET_SHIFTS = (7 * np.arange(10, dtype=np.uint64)).astype(np.uint64)


def entity_key_bytes(customer_id: str) -> bytes:
    """feast.infra.key_encoding_utils.serialize_entity_key (version 3) of one customer_id key."""
    raw = customer_id.encode("utf8")
    return _KEY_PREFIX + struct.pack("<II", _STRING_VALUE_TYPE, len(raw)) + raw


def value_kind(feature_kind: str) -> str:
    """The ValueProto kind a catalogue feature is stored as: doubles for FLOAT, int64 for the rest."""
    return FLOAT if feature_kind == FLOAT else INT


def snapshot_keys(tables: Mapping) -> tuple[list[bytes], np.ndarray]:
    """Serialized entity keys in byte order (SQLite's BLOB order), and for each the row in the tables.

    Every view of a snapshot holds the same customers in the same order (features.build), checked here.
    """
    ids = next(iter(tables.values())).column(JOIN_KEY)
    for view, table in tables.items():
        if not table.column(JOIN_KEY).equals(ids):
            raise PropensityError(f"snapshot of {view} holds other customers than the other views; rebuild it")
    keys = np.array([entity_key_bytes(c) for c in ids.to_pylist()], dtype=object)
    order = np.argsort(keys, kind="stable")
    return keys[order].tolist(), order


def encode_values(values, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Serialized ValueProto bytes of many numbers at once, without a Python object per value.

    Returns ``(slots, lengths)``: row i of the uint8 matrix ``slots`` starts with the ``lengths[i]``
    bytes of value i (0 bytes for a null/NaN); the rest of the row is padding.
    """
    arr = np.asarray(values, dtype="float64")
    n = len(arr)
    present = ~np.isnan(arr)
    slots = np.zeros((n, SLOT_WIDTH[kind]), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.uint8)
    if kind == FLOAT:
        slots[:, 0] = DOUBLE_TAG
        slots[:, 1:] = arr.astype("<f8").view(np.uint8).reshape(n, 8)
        lengths[present] = 9
        return slots, lengths
    # int64 as protobuf varint: 7 bits per byte, low bits first, high bit set on all but the last byte;
    # negative numbers are their two's complement as uint64 (10 bytes).
    unsigned = np.where(present, arr, 0).astype(np.int64).view(np.uint64)
    n_bytes = np.ones(n, dtype=np.uint8)
    for k in range(1, 10):
        n_bytes += (unsigned >> np.uint64(7 * k)) > 0
    slots[:, 0] = INT64_TAG
    for k in range(10):
        septet = ((unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        slots[:, k + 1] = np.where(k < n_bytes - 1, septet | 0x80, np.where(k == n_bytes - 1, septet, 0))
    lengths[present] = n_bytes[present] + 1
    return slots, lengths


def value_blobs(values, kind: str) -> np.ndarray:
    """Serialized ValueProto bytes of each value as Python bytes (b"" for a null), for key-value stores."""
    slots, lengths = encode_values(values, kind)
    blobs = np.full(len(lengths), b"", dtype=object)
    for length in np.unique(lengths[lengths > 0]):
        rows = lengths == length
        # A fixed-width numpy void view turns each row into one bytes object in C.
        blobs[rows] = np.ascontiguousarray(slots[rows, :length]).view(f"V{length}").ravel().tolist()
    return blobs


def decode_values(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Serialized ValueProtos holding a double or an int64 as float64 (NaN for empty or None)."""
    blobs = [b or b"" for b in blobs]
    return decode_packed(b"".join(blobs), np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)))


def decode_packed(packed: bytes, lengths: np.ndarray) -> np.ndarray:
    """Values serialized back to back in ``packed``, value i being ``lengths[i]`` bytes long, decoded all
    at once with numpy. Other value kinds, which Feast never writes for these views, are parsed with
    Feast's proto."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.full(len(lengths), np.nan)
    if not lengths.any():
        return out
    # Eleven zero bytes of padding let every gather below read a full-width window.
    buf = np.frombuffer(packed + bytes(11), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    tags = np.where(lengths > 0, buf[starts], 0)
    doubles = (tags == DOUBLE_TAG) & (lengths == 9)
    if doubles.any():
        window = buf[starts[doubles, None] + np.arange(1, 9)]
        out[doubles] = np.ascontiguousarray(window).view("<f8").ravel()
    ints = (tags == INT64_TAG) & (lengths >= 2) & (lengths <= 11)
    if ints.any():
        window = buf[starts[ints, None] + np.arange(1, 11)].astype(np.uint64)
        used = np.arange(10)[None, :] < (lengths[ints, None] - 1)
        septets = np.where(used, window & np.uint64(0x7F), np.uint64(0))
        out[ints] = (septets << _SEPTET_SHIFTS).sum(axis=1, dtype=np.uint64).view(np.int64)
    for i in np.flatnonzero((lengths > 0) & ~doubles & ~ints):
        out[i] = _decode_slow(packed[starts[i] : starts[i] + lengths[i]])
    return out


def _decode_slow(blob: bytes) -> float:
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    value = ValueProto()
    value.ParseFromString(blob)
    kind = value.WhichOneof("val")
    return float(getattr(value, kind)) if kind else np.nan


def decode_value(blob: bytes | None) -> float:
    """One serialized ValueProto as float (NaN for an empty value)."""
    return float(decode_values([blob])[0])
