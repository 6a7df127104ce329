"""eval.py and export.py check their arguments before any work: each bad one is one line naming it, its value
and what is allowed. The checkpoint named does not exist, so an error about it would mean the work had begun."""

import pytest
import torch

import eval as E
import export


def error_of(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code not in (0, None)
    err = capsys.readouterr().err + (e.value.code if isinstance(e.value.code, str) else "")
    assert "\n" not in err.strip() and "checkpoint not found" not in err, err
    return err.strip()


@pytest.mark.parametrize("args,message", [
    (["--max_batches", "0"], "--max_batches=0; allowed: an integer >= 1"),
    (["--limit", "0"], "--limit=0; allowed: an integer >= 1"),
    (["--limit", "-1"], "--limit=-1; allowed: an integer >= 1"),
    (["--batch_size", "0"], "--batch_size=0; allowed: an integer >= 1"),
    (["--shots", "-2"], "--shots=-2; allowed: an integer >= 0"),
    (["--ppl_window", "1"], "--ppl_window=1; allowed: an integer >= 2"),
    (["--ppl_max_windows", "0"], "--ppl_max_windows=0; allowed: an integer >= 1"),
    (["--device", "gpu"], "--device='gpu'; allowed: cpu, cuda or cuda:N"),
    (["--device", "cuda:99"], "--device='cuda:99'; allowed: cpu, cuda or cuda:N"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_eval_refuses_a_bad_argument_before_any_work(tmp_path, capsys, args, message):
    err = error_of(E.main, ["--ckpt", str(tmp_path / "missing.pt"), *args], capsys)
    assert err == f"eval.py: {message}" or err.startswith(f"eval.py: {message}"), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_eval_refuses_cuda_without_a_gpu(tmp_path, capsys):
    err = error_of(E.main, ["--ckpt", str(tmp_path / "missing.pt"), "--device", "cuda"], capsys)
    assert "--device='cuda'; allowed: cpu, cuda or cuda:N of this machine's 0 CUDA device(s)" in err


def test_eval_out_must_be_a_file_not_a_folder_or_a_path_through_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for out in (tmp_path, tmp_path / "f" / "eval.json"):
        err = error_of(E.main, ["--ckpt", str(tmp_path / "missing.pt"), "--device", "cpu", "--out", str(out)], capsys)
        assert err == (f"eval.py: --out={str(out)!r}; allowed: a JSON file to write (its folder is made if missing), "
                       "not a folder or a path through a file")
    # a folder still to be made is fine: the error is then the missing checkpoint's, the work having begun
    with pytest.raises(SystemExit):
        E.main(["--ckpt", str(tmp_path / "missing.pt"), "--device", "cpu", "--out", str(tmp_path / "new" / "e.json")])
    assert "checkpoint not found" in capsys.readouterr().err


def test_export_out_naming_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f", tmp_path / "f" / "hf"):
        err = error_of(export.main, ["--ckpt", str(tmp_path / "missing.pt"), "--out", str(out)], capsys)
        assert err == f"export.py: --out={str(out)!r}; allowed: a folder to write (made if missing), but {tmp_path / 'f'} is a file"
