"""quickstart.py's seed-spread line, on a small results.csv written here (the grid's real file has the same columns)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import quickstart  # noqa: E402

ROWS = [  # kind, teacher, alpha, variant, seed, gain_val
    ("teacher", "t1", "", "", 42, ""),
    ("baseline", "", "", "", 43, ""),
    ("student", "t1", "0.1", "", 43, "0.010"), ("student", "t1", "0.1", "", 44, "0.050"),   # differ by 0.040
    ("student", "t1", "0.3", "", 43, "-0.020"), ("student", "t1", "0.3", "", 44, "-0.010"),  # by 0.010
    ("student", "t2", "0.3", "", 43, "0.200"),                                              # one seed: left out
]


def test_seed_spread_from_the_grid_csv(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "docs" / "laptop")
    with open(tmp_path / "docs" / "laptop" / "results.csv", "w") as f:
        f.write("name,kind,teacher,alpha,variant,seed,gain_val\n")
        for i, (kind, teacher, alpha, variant, seed, gain) in enumerate(ROWS):
            f.write(f"r{i},{kind},{teacher},{alpha},{variant},{seed},{gain}\n")
    monkeypatch.setattr(quickstart, "HERE", str(tmp_path))
    mean, worst, n = quickstart.laptop_seed_spread()
    assert n == 2
    assert abs(mean - 0.025) < 1e-12 and abs(worst - 0.040) < 1e-12


def test_the_committed_grid_has_two_seed_runs():
    # the line the quickstart prints rests on the committed grid having runs with both seeds
    assert quickstart.laptop_seed_spread()[2] >= 5
