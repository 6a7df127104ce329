"""
The traps on the way to distilling from a Hugging Face model someone already has (issue 19, README "Distill
from a model you already have"): each leads to a working path or to a one-line error that says what to do.
The teacher is a tiny transformers Llama saved here with save_pretrained, with a tokenizer.json trained here
with `tokenizers` (tests/test_hf_import.py's helpers); all in-process, no train.py.
"""

import json
import os
from dataclasses import asdict

import pytest
import torch

from checkpoint import CheckpointError, load_checkpoint, load_teacher, save_checkpoint
from data.hf_tokenizer import load_hf_tokenizer
from data.loader import open_training_data
from data.prepare_embedded import tokenize_docs
from data.tokenfile import write_tokens
from data.tokenizer import padded_vocab_size
from export import export
from hf_checkpoint import UnsupportedHFModel, gpt_config_from_hf, model_from_hf
from model import GPT, config_from_preset
from test_hf_import import save_hf, tokenizer_folder, train_tokenizer

DOCS = [f"def f{i}(x):\n    return x * {i} + {i * i}  # the {i}th square" for i in range(60)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A teacher folder, data prepared with its tokenizer (meta.json records where it came from, as
    data/prepare_embedded.py writes it), and a nanokd student checkpoint trained on that tokenizer."""
    root = tmp_path_factory.mktemp("hf")
    teacher = root / "teacher"
    tok = load_hf_tokenizer(tokenizer_folder(teacher, train_tokenizer(vocab_size=300), bos_template=True))
    cfg = json.loads((teacher / "tokenizer_config.json").read_text())
    (teacher / "tokenizer_config.json").write_text(json.dumps({**cfg, "model_max_length": 131072}))  # Llama-3's
    tok = load_hf_tokenizer(teacher)
    save_hf(teacher, "llama", num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0)
    data = root / "data"
    os.makedirs(data)
    write_tokens(data / "train.bin", tokenize_docs(tok, DOCS[:50]), tok.n_vocab, tok.name)
    write_tokens(data / "val.bin", tokenize_docs(tok, DOCS[50:]), tok.n_vocab, tok.name)
    (data / "meta.json").write_text(json.dumps({"tokenizer": tok.name, "tokenizer_source": tok.source}))
    torch.manual_seed(0)
    student = GPT(config_from_preset("tiny-64", padded_vocab_size(tok.n_vocab), 32))
    ckpt = root / "student.pt"
    save_checkpoint(str(ckpt), {"model": student.state_dict(), "model_config": asdict(student.config),
                                "tokenizer": tok.name, "tokenizer_state": tok.state(), "n_vocab": tok.n_vocab,
                                "config": {"data_dir": str(data)}, "step": 7, "tokens_seen": 7 * 128})
    return dict(teacher=teacher, tok=tok, data=data, ckpt=ckpt, root=root)


def one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


# ---- the no-teacher baseline on the teacher's tokenizer ------------------------------------------------

def test_hf_tokenizer_without_a_teacher_says_which_path_to_pass(setup):
    with pytest.raises(ValueError) as e:   # --tokenizer=hf, no teacher, no --tokenizer_path
        open_training_data(str(setup["data"]), 2, 16, tokenizer="hf", tokenizer_path="")
    assert f"--tokenizer_path={setup['teacher']}" in one_line(e.value)
    with pytest.raises(ValueError, match="--tokenizer_path="):   # the hash the old message suggested: no way round
        open_training_data(str(setup["data"]), 2, 16, tokenizer=setup["tok"].name, tokenizer_path="")


def test_hf_tokenizer_with_tokenizer_path_is_carried_by_the_run(setup):
    tok = setup["tok"]
    for name in ("hf", tok.name):
        _, n_vocab, (tokenizer, state) = open_training_data(str(setup["data"]), 2, 16, tokenizer=name,
                                                            tokenizer_path=str(setup["teacher"]))
        assert (tokenizer, n_vocab) == (tok.name, tok.n_vocab) and state == tok.state()  # what train.py saves


def test_forgetting_tokenizer_hf_names_the_files_tokenizer_and_the_fix(setup):
    tok = setup["tok"]
    with pytest.raises(ValueError) as e:
        open_training_data(str(setup["data"]), 2, 16, tokenizer="bytes")
    msg = one_line(e.value)
    assert f"'{tok.name}' ({tok.n_vocab} ids)" in msg and "'bytes'" in msg and "--tokenizer=hf" in msg
    assert "'bytes' (vocab" not in msg   # the old message gave bytes the file's vocabulary


# ---- a nanokd checkpoint on an hf tokenizer, used as a teacher ------------------------------------------

def test_a_nanokd_checkpoint_is_a_tokenizer_source(setup):
    # train.py reads the tokenizer from tokenizer_path or teacher_ckpt: a .pt file used to be read as tokenizer.json
    _, n_vocab, (tokenizer, state) = open_training_data(str(setup["data"]), 2, 16, tokenizer="hf",
                                                        tokenizer_path=str(setup["ckpt"]))
    assert tokenizer == setup["tok"].name and state == setup["tok"].state()
    teacher = load_teacher(str(setup["ckpt"]), tokenizer=tokenizer, n_vocab=n_vocab, block_size=16)
    assert teacher.config.n_embd == 64
    bytes_ckpt = setup["root"] / "bytes.pt"
    save_checkpoint(str(bytes_ckpt), {"model": {}, "model_config": {}, "tokenizer": "bytes", "tokenizer_state": None,
                                      "n_vocab": 257})
    with pytest.raises(ValueError, match="--tokenizer=bytes") as e:
        load_hf_tokenizer(str(bytes_ckpt))
    one_line(e.value)


def test_teacher_model_preset_vs_an_hf_teacher_says_how_to_drop_the_check(setup):
    tok = setup["tok"]
    kw = dict(tokenizer=tok.name, n_vocab=tok.n_vocab, block_size=32)
    with pytest.raises(CheckpointError) as e:   # configs/tiny_student.py sets teacher_model="tiny-96"
        load_teacher(str(setup["teacher"]), preset="tiny-96", **kw)
    assert "--teacher_model=" in one_line(e.value)
    assert load_teacher(str(setup["teacher"]), preset="", **kw).config.n_embd == 48


# ---- misleading messages ---------------------------------------------------------------------------------

def test_a_hub_id_says_to_download_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:   # train.py reads the teacher's tokenizer first
        load_hf_tokenizer("meta-llama/Llama-3.2-1B")
    assert "hf download meta-llama/Llama-3.2-1B --local-dir" in one_line(e.value)
    with pytest.raises(CheckpointError) as e:   # --tokenizer=bytes: the teacher itself
        load_checkpoint("meta-llama/Llama-3.2-1B")
    assert "hf download" in one_line(e.value)
    with pytest.raises(CheckpointError) as e:   # an ordinary missing file gets no such hint
        load_checkpoint("out/run/ckpt.pt")
    assert "hf download" not in str(e.value)


def test_prepare_embedded_hf_without_tokenizer_path_is_one_line():
    from data.prepare_embedded import main
    with pytest.raises(SystemExit) as e:
        main(["--tokenizer", "hf"])
    assert "--tokenizer_path" in one_line(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["--tokenizer", "hf", "--tokenizer_path", "meta-llama/Llama-3.2-1B"])
    assert "hf download" in one_line(e.value.code)


def test_gemma_is_refused_for_its_model_type():
    gemma = {"model_type": "gemma", "architectures": ["GemmaForCausalLM"], "hidden_act": "gelu_pytorch_tanh",
             "hidden_activation": "gelu_pytorch_tanh", "vocab_size": 256000, "hidden_size": 2048}
    with pytest.raises(UnsupportedHFModel, match="model_type 'gemma' is not a layout nanokd imports"):
        gpt_config_from_hf(gemma)


# ---- eval.py on a Hugging Face folder (issue 19 §3) -------------------------------------------------------

def test_eval_scores_an_hf_folder_as_it_scores_a_checkpoint(setup, tmp_path):
    """The same splits, tasks and JSON keys as for a nanokd checkpoint holding the same weights, and the same
    losses: both are the one GPT class scoring the same windows."""
    import eval as E
    model, info = model_from_hf(setup["teacher"])
    same = tmp_path / "same.pt"
    save_checkpoint(str(same), {"model": model.state_dict(), "model_config": info["model_config"],
                                "tokenizer": info["tokenizer"], "tokenizer_state": info["tokenizer_state"],
                                "n_vocab": info["n_vocab"], "config": {}, "step": None, "tokens_seen": None})
    args = ["--tasks=loss", "--device=cpu", f"--data_dir={setup['data']}", "--batch_size=2"]
    from_folder = E.main([f"--ckpt={setup['teacher']}", *args])
    from_ckpt = E.main([f"--ckpt={same}", *args, f"--out={tmp_path / 'same.json'}"])
    assert set(from_folder) == set(from_ckpt) and list(from_folder["tasks"]) == list(from_ckpt["tasks"]) == ["val"]
    assert from_folder["tokenizer"] == setup["tok"].name
    assert from_folder["tasks"]["val"]["loss"] == pytest.approx(from_ckpt["tasks"]["val"]["loss"], rel=1e-6)
    on_disk = json.loads((setup["teacher"] / "eval.json").read_text())   # written inside the folder
    assert on_disk["tasks"]["val"]["loss"] == from_folder["tasks"]["val"]["loss"]


def test_eval_of_an_hf_folder_without_tokenizer_is_one_line(setup, tmp_path, capsys):
    import eval as E
    save_hf(tmp_path, "llama", num_attention_heads=4, num_key_value_heads=2)
    with pytest.raises(SystemExit):
        E.main([f"--ckpt={tmp_path}", "--tasks=loss", "--device=cpu", f"--data_dir={setup['data']}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval.py")]
    assert len(err) == 1 and "no tokenizer.json" in err[0]


# ---- export ----------------------------------------------------------------------------------------------

def test_exported_student_says_its_own_context(setup, tmp_path):
    from transformers import AutoTokenizer
    out = export(str(setup["ckpt"]), str(tmp_path / "hf"))
    assert json.loads(open(os.path.join(out, "tokenizer_config.json")).read())["model_max_length"] == 32
    assert AutoTokenizer.from_pretrained(out).model_max_length == 32   # not the teacher's 131072


def test_export_of_a_checkpoint_without_its_tokenizer(setup, tmp_path):
    ck = load_checkpoint(str(setup["ckpt"]))
    bare = tmp_path / "bare.pt"
    save_checkpoint(str(bare), {**{k: v for k, v in ck.items() if k != "format"}, "tokenizer_state": None})
    with pytest.raises(CheckpointError) as e:
        export(str(bare), str(tmp_path / "a"))
    assert "--tokenizer_path" in one_line(e.value)
    out = export(str(bare), str(tmp_path / "b"), tokenizer_path=str(setup["teacher"]))
    assert load_hf_tokenizer(out).name == setup["tok"].name


# ---- a sweep that names a Hugging Face teacher instead of training one (issue 19 §3) ---------------------

def test_a_grid_names_an_hf_teacher_and_its_report_row_comes_from_its_eval(setup, tmp_path):
    import eval as E
    import sweep
    import sweep_report
    grid = dict(name="g", out_root=str(tmp_path), common=dict(data_dir=str(setup["data"]), tokenizer="hf"),
                teachers={"smol": dict(hf=str(setup["teacher"]))}, students={"s": dict(config="configs/tiny_student.py")},
                alphas=[0.5], seeds=[43])
    runs = {r["name"]: r for r in sweep.expand(grid)}
    teacher, student = runs["teacher_smol"], runs["s_smol_a0.5_s43"]
    assert sweep.train_done(teacher) and student["deps"] == ["teacher_smol"]
    assert student["overrides"]["teacher_ckpt"] == str(setup["teacher"]) and student["overrides"]["teacher_model"] == ""
    evals = {"loss": "--tasks loss --batch_size 2 --device cpu"}
    script = sweep.sbatch_script(teacher, evals, "g", str(tmp_path))
    assert "train.py" not in script and f"--ckpt {setup['teacher']}" in script   # only evaluated
    cmd = sweep.eval_args(teacher, evals["loss"], sweep_report.eval_path(teacher, "loss"))
    os.makedirs(teacher["out_dir"])
    direct = E.main(cmd[1:])   # what run_local runs as `python eval.py ...`
    rows = sweep_report.collect([teacher], evals)
    assert len(rows) == 1 and rows[0]["kind"] == "teacher" and rows[0]["val"] == direct["tasks"]["val"]["loss"]
    assert rows[0]["params"] == model_from_hf(setup["teacher"])[0].num_params(non_embedding=True)
    for bad, why in ((dict(hf=str(setup["teacher"]), train_tokens=5), "takes only hf and data_dir"),
                     (dict(hf=str(tmp_path / "nowhere")), "not a local Hugging Face folder")):
        with pytest.raises(sweep.GridError, match=why):
            sweep.expand({**grid, "teachers": {"x": bad}})
