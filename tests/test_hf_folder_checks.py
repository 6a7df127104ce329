"""
A Hugging Face folder is checked before anything is built from it: config.json's sizes against each other and
against the safetensors headers, the headers against their files, the index's shard names against the folder.
Each bad folder is a one-line error naming the file and field, through model_from_hf and through
load_teacher (the way train.py reads one), which also covers its dry run (meta=True).
"""

import json
import re
import shutil
import struct

import pytest
import torch

import hf_checkpoint
from checkpoint import CheckpointError, load_teacher
from hf_checkpoint import BadHFFolder, model_from_hf
from test_hf_import import save_hf


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "llama"
    save_hf(path, "llama", num_attention_heads=4, num_key_value_heads=2)   # 2 layers, hidden 48, vocab 300
    return path


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        cfg.pop(k) if v == "absent" else cfg.__setitem__(k, v)
    (path / "config.json").write_text(json.dumps(cfg))


def refused(path, match):
    """model_from_hf and both ways load_teacher reads a folder give the same one-line error."""
    with pytest.raises(BadHFFolder, match=match) as e:
        model_from_hf(path)
    assert "\n" not in str(e.value)
    for meta in (True, False):
        with pytest.raises(CheckpointError, match=match):
            load_teacher(str(path), tokenizer=None, n_vocab=300, block_size=32, meta=meta)


@pytest.mark.parametrize("layers", [5_000_000, 1])
def test_a_layer_count_the_weights_do_not_hold_is_refused_before_building(folder, monkeypatch, layers):
    model_from_hf(folder)   # control: the folder as saved imports
    edit_config(folder, num_hidden_layers=layers)

    def no_build(*args, **kwargs):
        raise AssertionError("a GPT was built before config.json was checked against the weights")
    monkeypatch.setattr(hf_checkpoint, "GPT", no_build)
    monkeypatch.setattr("checkpoint.GPT", no_build)
    refused(folder, rf"config.json: num_hidden_layers={layers} but the weights hold 2 \(model.layers.0..1\)")


@pytest.mark.parametrize("edit", [dict(num_attention_heads="absent"), dict(num_attention_heads=0),
                                  dict(num_key_value_heads=0), dict(head_dim=0), dict(num_hidden_layers=5e6),
                                  dict(hidden_size=None)])
def test_missing_zero_or_fractional_sizes_are_one_line_errors(folder, edit):
    edit_config(folder, **edit)
    (key, value), = edit.items()
    refused(folder, rf"config.json: {key} is missing; it must be a positive integer" if value == "absent"
            else rf"config.json: {key}={value!r}; it must be a positive integer")


def test_heads_that_do_not_group_are_a_one_line_error(folder):
    edit_config(folder, num_attention_heads=3)   # 3 query heads over 2 KV heads
    refused(folder, r"config.json: n_head must be a multiple of n_kv_head")


def rewrite_header(path, edit):
    """Apply edit(header dict) to a safetensors file's JSON header, keeping its data bytes."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


@pytest.mark.parametrize("lie", ["rows", "offsets"])
def test_a_safetensors_header_that_lies_is_a_one_line_error(folder, lie):
    name = "model.embed_tokens.weight"

    def edit(header):
        start, end = header[name]["data_offsets"]
        if lie == "rows":   # ten times the rows the bytes hold
            header[name]["shape"][0] *= 10
        else:               # data past the end of the file
            header[name]["data_offsets"] = [start, end + 10 ** 9]
    rewrite_header(folder / "model.safetensors", edit)
    refused(folder, r"model.safetensors: not a readable safetensors file \(SafetensorError: ")


def test_an_index_naming_shards_outside_the_folder_is_refused(folder, tmp_path):
    outside = folder / "model.safetensors"
    model_from_hf(folder)   # a real model: an index pointing at it would load it
    names = list(json.loads(outside.read_bytes()[8:8 + struct.unpack("<Q", outside.read_bytes()[:8])[0]]))
    names.remove("__metadata__")
    for i, shard in enumerate(["../llama/model.safetensors", str(outside), "sub/../../llama/model.safetensors"]):
        other = tmp_path / f"other{i}"
        other.mkdir()
        shutil.copy(folder / "config.json", other / "config.json")
        (other / hf_checkpoint.INDEX).write_text(json.dumps({"weight_map": {k: shard for k in names}}))
        refused(other, rf"model.safetensors.index.json: weight_map puts '[\w.]+' in '{re.escape(shard)}'; "
                       r"a shard must be a \.safetensors file inside the folder")
    # control: the same index naming a copy inside the folder loads it
    shutil.copy(outside, other / "model.safetensors")
    (other / hf_checkpoint.INDEX).write_text(json.dumps({"weight_map": {k: "model.safetensors" for k in names}}))
    model, _ = model_from_hf(other)
    assert torch.equal(model.embed_tokens.weight, model_from_hf(folder)[0].embed_tokens.weight)


def test_an_index_naming_a_tensor_its_shard_lacks_is_refused(folder):
    (folder / hf_checkpoint.INDEX).write_text(json.dumps({"weight_map": {"model.norm.weight": "model.safetensors",
                                                                         "model.extra.weight": "model.safetensors"}}))
    refused(folder, r"puts model.extra.weight in model.safetensors, whose header lacks it")
