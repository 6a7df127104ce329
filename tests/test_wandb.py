"""--wandb_log=True for real, offline (WANDB_MODE=offline: no account, no network). The offline run directory
wandb writes beside the run must hold the config and a summary of the KD numbers equal to train.py's own
records. Offline, wandb keeps everything in its transaction log (run-<id>.wandb: LevelDB-style 32 KiB blocks
of protobuf records), read here with a reader written from that format, not with the code under test."""
import glob
import json
import struct

import pytest

from wandb.proto import wandb_internal_pb2

from test_train import TINY, curve, data_dir, teacher_ckpt, train  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow   # subprocess, torchrun or compile runs: pytest -m "not slow" leaves them out

BLOCK, RECORD_HEADER = 32768, 7   # crc32 (4), length (2), type (1: full, 2: first, 3: middle, 4: last)


def read_wandb_log(path):
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:7]
    pos, records, pending = 7, [], b""   # the file header is 7 bytes too
    while pos + RECORD_HEADER <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER:   # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        chunk = data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_offline_wandb_run_records_config_and_kd_summary(data_dir, teacher_ckpt, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train(*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=3", "--eval_interval=1000",
          f"--teacher_ckpt={teacher_ckpt}", "--alpha=0.4", "--temperature=2.0", "--wandb_log=True",
          env_extra={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    logs = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(logs) == 1, logs
    records = read_wandb_log(logs[0])
    config, summary = {}, {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "summary":
            summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
    assert config["alpha"] == 0.4 and config["temperature"] == 2.0
    assert config["teacher_ckpt"] == str(teacher_ckpt)
    final = json.load(open(out / "final.json"))
    last = curve(out)[3]
    for key in ("loss", "ce", "kd"):
        assert abs(summary[key] - last[key]) <= 1e-12 * abs(last[key]), key   # the same float, printed by json
    assert summary["alpha"] == 0.4 and summary["temperature"] == 2.0 and summary["teacher"] == str(teacher_ckpt)
    assert final["eval"] and all(abs(summary[f"eval/{k}"] - v) <= 1e-12 * abs(v) for k, v in final["eval"].items())
