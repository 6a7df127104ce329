"""data/prepare_evalsets.py: every builder on small local files in its dataset's real format and
field names, the authors' text cleaning, the held-out slice's disjointness from prepare_fineweb.py's
training shards, and the offline failure (a clear error naming the set, no file left behind)."""

import gzip
import json
import os
import subprocess
import sys
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from data import prepare_evalsets as P  # noqa: E402
from data.tokenfile import load_tokens, read_header  # noqa: E402
from data.tokenizer import ByteTokenizer  # noqa: E402


def parquet(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


# One fixture per set: (file under the local dir, rows with the dataset's real columns, the stream
# get_ppl_enc builds from them, written out by hand). Two or three rows each, so separators show.
FIXTURES = {
    "c4": ("allenai/c4/en/c4-train.00000-of-01024.json.gz",
           [{"text": "Beginners BBQ Class.", "timestamp": "2019-04-25T12:57:54Z", "url": "https://a.example"},
            {"text": "Discussion in 'Mac OS X'.", "timestamp": "2019-04-21T10:07:13Z", "url": "https://b.example"}],
           "Beginners BBQ Class. Discussion in 'Mac OS X'."),
    "wikitext": ("wikitext/wikitext-103-v1/train-00000-of-00002.parquet",
                 [{"text": ""}, {"text": " = Valkyria Chronicles III = \n"}, {"text": " Senjō no Valkyria 3 \n"}],
                 "\n\n = Valkyria Chronicles III = \n\n\n Senjō no Valkyria 3 \n"),  # the empty row is kept
    "cnn_dailymail": ("cnn_dailymail/3.0.0/train-00000-of-00003.parquet",
                      [{"article": "LONDON (Reuters) - A.", "highlights": "h1", "id": "42c027e4"},
                       {"article": "(CNN) -- B.", "highlights": "h2", "id": "ee8871b1"}],
                      "LONDON (Reuters) - A. (CNN) -- B."),
    "finewebedu-train-0.001": ("TaiMingLu/finewebedu-train-0.001/default/train-00000-of-00001.parquet",
                               [{"text": "The Independent Jane", "id": "<urn:uuid:1>", "score": 3.1},
                                {"text": "Taking Play Seriously", "id": "<urn:uuid:2>", "score": 2.9}],
                               "The Independent Jane Taking Play Seriously"),
    "dm_mathematics": ("timaeus/pile-dm_mathematics/default/train-00000-of-00001.parquet",
                       [{"text": "Solve 0 = 4*f - 8 for f.\n2\n"}, {"text": "What is 2 + 2?\n4\n"}],
                       "Solve 0 = 4*f - 8 for f.\n2\n What is 2 + 2?\n4\n"),
    "gsm8k": ("openai/gsm8k/main/train-00000-of-00001.parquet",
              [{"question": "Natalia sold clips?", "answer": "48/2 = 24\n#### 72"},
               {"question": "Weng earns $12?", "answer": "#### 10"}],
              "Natalia sold clips?\n\n48/2 = 24\n#### 72\n\nWeng earns $12?\n\n#### 10"),
    "arxiv": ("ccdv/arxiv-summarization/section/train-00000-of-00002.parquet",
              [{"article": "full text one", "abstract": "we study x ."},
               {"article": "full text two", "abstract": "we prove y ."}],
              "we study x .\n\nwe prove y ."),
    "humaneval": ("openai/openai_humaneval/default/test-00000-of-00001.parquet",
                  [{"task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
                    "test": "assert f(1) == 1", "entry_point": "f"},
                   {"task_id": "HumanEval/1", "prompt": "def g():\n", "canonical_solution": "    pass\n",
                    "test": "", "entry_point": "g"}],
                  "def f(x):\n\n\n    return x\n\n\ndef g():\n\n\n    pass\n"),
    "codesearchnet": ("claudios/code_search_net/all/train-00000-of-00004.parquet",
                      [{"repository_name": "r", "func_path_in_repository": "a.py", "func_name": "h",
                        "whole_func_string": "def h():\n    return 1", "language": "python",
                        "func_documentation_string": "Return one.", "func_code_url": "u", "split_name": "train"},
                       {"repository_name": "r", "func_path_in_repository": "b.go", "func_name": "K",
                        "whole_func_string": "func K() {}", "language": "go",
                        "func_documentation_string": "", "func_code_url": "u", "split_name": "train"}],
                      "Return one.\n\ndef h():\n    return 1\n\n\n\nfunc K() {}"),
    "pubmed_qa": ("qiaojin/PubMedQA/pqa_labeled/train-00000-of-00001.parquet",
                  [{"pubid": 21645374, "question": "Do mitochondria play a role?",
                    "context": {"contexts": ["c"], "labels": ["BACKGROUND"], "meshes": ["m"]},
                    "long_answer": "Results depict ...", "final_decision": "yes"}],
                  "Do mitochondria play a role?\n\nResults depict ..."),
    "echr": ("glnmario/ECHR/default/train-00000-of-00001.parquet",
             [{"itemid": "001-1", "docname": "CASE OF A v. B", "text": "The applicant ...",
               "conclusion": "Violation of Art. 6", "violated": True},
              {"itemid": "001-2", "docname": "CASE OF C v. D", "text": "The Court ...",
               "conclusion": "No violation", "violated": False}],
             "CASE OF A v. B\n\nThe applicant ...\n\nViolation of Art. 6\n\n"
             "CASE OF C v. D\n\nThe Court ...\n\nNo violation"),
}


def xquad_fixture(local_dir):
    """google/xquad: 12 configs of validation rows, SQuAD-style answers; read in the authors' language order."""
    expected = []
    for i, cfg in enumerate(P.XQUAD):
        rows = [{"id": f"{cfg}-{j}", "context": f"ctx {cfg} {j}", "question": f"q {j}?",
                 "answers": {"text": [f"ans {j}", "other"] if j == 0 else [], "answer_start": [0, 3] if j == 0 else []}}
                for j in range(2)]
        parquet(os.path.join(local_dir, "google/xquad", cfg, "validation-00000-of-00001.parquet"), rows)
        expected += [f"ctx {cfg} 0\n\nq 0?\n\nans 0", f"ctx {cfg} 1\n\nq 1?\n\n"]  # no answer: empty text
    return "\n\n".join(expected)


def write_fixtures(local_dir):
    for name, (rel, rows, _) in FIXTURES.items():
        path = os.path.join(local_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if path.endswith(".json.gz"):
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            parquet(path, rows)
    return xquad_fixture(local_dir)


def test_the_twelve_sets_are_the_authors_ppl_tasks():
    # PPL_TASKS in their test_orbax_eval.py @ 1ff3e277b929ed84af84aa580828fd99040c11de, copied by hand
    assert P.PAPER_SETS == ["c4", "wikitext", "cnn_dailymail", "finewebedu-train-0.001", "dm_mathematics", "gsm8k",
                            "arxiv", "humaneval", "codesearchnet", "pubmed_qa", "echr", "xquad"]
    # their row counts (dataset[:N]; None = every row) and separators, copied by hand from get_ppl_enc
    theirs = {"c4": (8192, " "), "wikitext": (32768, "\n\n"), "cnn_dailymail": (16384, " "),
              "finewebedu-train-0.001": (32768, " "), "dm_mathematics": (100000, " "), "gsm8k": (100000, "\n\n"),
              "arxiv": (100000, "\n\n"), "humaneval": (None, "\n\n"), "codesearchnet": (8192, "\n\n"),
              "pubmed_qa": (1000, "\n\n"), "echr": (4096, "\n\n"), "xquad": (None, "\n\n")}
    assert {n: (s["rows"], s["sep"]) for n, s in P.SETS.items()} == theirs


@pytest.mark.slow
def test_help_lists_the_twelve_sets():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare_evalsets.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT).stdout
    for name in P.PAPER_SETS + [P.HELDOUT]:
        assert name in out


@pytest.mark.parametrize("name", P.PAPER_SETS)
def test_every_builder_on_local_files(name, tmp_path):
    xquad_expected = write_fixtures(str(tmp_path / "hub"))
    expected = xquad_expected if name == "xquad" else FIXTURES[name][2]
    path = P.build(name, ByteTokenizer(), str(tmp_path / "out"), local_dir=str(tmp_path / "hub"))
    assert os.path.basename(path) == f"ppl_{name}.bin" and read_header(path)["tokenizer"] == "bytes"
    assert bytes(load_tokens(path, "bytes").tolist()) == expected.encode("utf-8")
    info = json.loads((tmp_path / "out" / f"ppl_{name}.json").read_text())
    assert info["source"]["dataset"] == P.SETS[name]["path"] and info["bos"] is False


def test_row_slice_and_bos(tmp_path):
    write_fixtures(str(tmp_path / "hub"))
    path = P.build("gsm8k", ByteTokenizer(), str(tmp_path), local_dir=str(tmp_path / "hub"), rows=1, bos=True)
    ids = load_tokens(path, "bytes").tolist()
    assert ids[0] == 256 and bytes(ids[1:]) == b"Natalia sold clips?\n\n48/2 = 24\n#### 72"


def test_the_authors_text_cleaning():
    # kept: tab, newline, CR, ordinary non-ASCII; dropped: NUL, C0, DEL, C1, private use, BOM,
    # noncharacters; U+FFFD (and so each byte of a lone surrogate) becomes a space
    raw = "a\tb\nc\rd\x00e\x01f\x7fg\x85h\ue000i\U000f0001j\ufeffk\ufdd0l\uffffm\ufffdn\ud800o é日"
    assert P.clean_text(raw) == "a\tb\nc\rdefghijklm n   o é日"


def test_cleaning_applies_to_the_stream(tmp_path):
    hub = tmp_path / "hub"
    parquet(str(hub / "openai/gsm8k/main/train-00000-of-00001.parquet"),
            [{"question": "x\x00y\ufeff?", "answer": "\u00850\ufffd1"}])
    path = P.build("gsm8k", ByteTokenizer(), str(tmp_path), local_dir=str(hub))
    assert bytes(load_tokens(path, "bytes").tolist()) == b"xy?\n\n0 1"


def test_heldout_slice_is_inside_prepare_fineweb_val(tmp_path):
    """The held-out documents are exactly a prefix of what prepare_fineweb.py writes to val.bin, so no
    training shard holds any of them."""
    docs = [{"text": f"document {i} " + "words " * (i % 5), "id": str(i)} for i in range(40)]
    data = tmp_path / "hub" / "HuggingFaceFW/fineweb-edu/sample-350BT"
    parquet(str(data / "train-00000-of-00001.parquet"), docs)
    from data import prepare_fineweb
    prepare_fineweb.main(["--data_files", str(data / "train-00000-of-00001.parquet"), "--tokenizer", "bytes",
                          "--out_dir", str(tmp_path / "fw"), "--val_tokens", "300", "--shard_tokens", "200"])
    path = P.build(P.HELDOUT, ByteTokenizer(), str(tmp_path / "out"), local_dir=str(tmp_path / "hub"), val_tokens=300)
    held = bytes(load_tokens(path, "bytes").tolist()).decode()
    val = load_tokens(str(tmp_path / "fw" / "val.bin"), "bytes").tolist()
    val_docs = bytes(t if t < 256 else 0 for t in val).decode().split("\x00")  # end-of-text splits documents
    n = json.loads((tmp_path / "out" / f"ppl_{P.HELDOUT}.json").read_text())["source"]["rows"]
    assert n >= 3 and held == " ".join(val_docs[:n])  # whole documents of val.bin, in its order
    assert sum(len(d["text"].encode()) + 1 for d in docs[:n + 1]) > 300  # and no more than fit in it
    train = b"".join(bytes(t for t in load_tokens(p, "bytes").tolist() if t != 256)
                     for p in sorted((tmp_path / "fw").glob("train_*.bin")))
    for d in docs[:n]:
        assert d["text"].encode() not in train


def test_offline_fails_cleanly_naming_the_set(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    # no `datasets` at all
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SystemExit) as e:
        P.main(["--tokenizer", "bytes", "--sets", "c4,xquad", "--out_dir", str(out)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "cannot build c4" in err and "cannot build xquad" in err and "datasets" in err
    assert os.listdir(out) == []

    # `datasets` present, hub unreachable
    def unreachable(*a, **k):
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=unreachable))
    with pytest.raises(SystemExit):
        P.main(["--tokenizer", "bytes", "--sets", "c4", "--out_dir", str(out)])
    err = capsys.readouterr().err
    assert "cannot build c4" in err and "Couldn't reach" in err and "allenai/c4" in err
    assert os.listdir(out) == []


def test_a_failure_while_writing_leaves_no_file(tmp_path, monkeypatch):
    write_fixtures(str(tmp_path / "hub"))

    class Broken(ByteTokenizer):
        def encode(self, text):
            return [300]  # out of range: the writer refuses it after opening its temporary file
    with pytest.raises(Exception):
        P.build("gsm8k", Broken(), str(tmp_path / "out"), local_dir=str(tmp_path / "hub"))
    assert os.listdir(tmp_path / "out") == []
