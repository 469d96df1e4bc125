"""Read back what a run logged to W&B (offline) and TensorBoard, for the logger e2e test.

- W&B offline writes ``$WANDB_DIR/wandb/offline-run-*/run-<id>.wandb``: a 7-byte header (``:W&B``, the magic
  0xBEE1 little-endian, version 0), then 32 KiB blocks of records in the LevelDB log layout — each record a
  7-byte header (CRC32, length as uint16, type: 1 full, 2 first, 3 middle, 4 last piece of a record that
  spans blocks) and its payload; a block's tail shorter than a record header is padding. Each whole payload is
  a ``wandb_internal_pb2.Record``; the ``history`` ones hold the logged rows, values JSON-encoded. wandb 0.31
  ships no Python reader for it (its core is a Go binary), hence this one.
- TensorBoard: the event files under ``$TENSORBOARD_DIR``, read with tensorboard's ``EventAccumulator``.
"""

import json
import struct
from pathlib import Path

WANDB_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32768
RECORD_HEADER = 7  # CRC32 (4), length (2), type (1)


def wandb_records(path: Path) -> list[bytes]:
    """Every record payload of a ``.wandb`` file, pieces joined."""
    raw = path.read_bytes()
    if not raw.startswith(WANDB_HEADER):
        raise ValueError(f"{path}: not a W&B transaction log (header {raw[:7]!r})")
    records, pieces, pos = [], b"", len(WANDB_HEADER)
    while pos + RECORD_HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:
            pos += left  # block trailer
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + RECORD_HEADER])
        if kind == 0 and length == 0:  # zero padding: the rest of this block is empty
            pos += left
            continue
        payload = raw[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == 1:
            records.append(payload)
        elif kind == 2:
            pieces = payload
        elif kind == 3:
            pieces += payload
        elif kind == 4:
            records.append(pieces + payload)
        else:
            raise ValueError(f"{path}: record type {kind} at byte {pos}")
    return records


def wandb_history(path: Path) -> dict[int, dict]:
    """``{step: {key: value}}`` of the rows a W&B run logged (``_step`` is the step passed to ``wandb.log``)."""
    from wandb.proto import wandb_internal_pb2

    rows: dict[int, dict] = {}
    for payload in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {
            item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
        }
        rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def tensorboard_scalars(directory: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of every scalar under ``directory``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
