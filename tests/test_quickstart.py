"""quickstart.py and quickstart_spread.py: a fair comparison (the baseline is the KD student at α=0, so without
a teacher to load, and nothing else changed; seed pairs move teacher and students together), the spread as max − min of per-seed gains, and a
spread file printed only when it was measured at today's settings."""
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import quickstart  # noqa: E402
import quickstart_spread  # noqa: E402


def test_the_baseline_differs_from_the_kd_student_only_in_alpha():
    for k, root in ((0, None), (2, "out/x")):
        (t, t_cfg, t_args), (kd, kd_cfg, kd_args), (b, b_cfg, b_args) = quickstart.runs(k, root)
        assert (t, kd, b) == ("teacher", "student + KD", "student, no KD") and kd_cfg == b_cfg
        differ = set(kd_args) ^ set(b_args)   # α, and so no teacher to load; where the run goes
        assert {a.split("=")[0] for a in differ} <= {"--alpha", "--teacher_ckpt", "--out_dir"}
        assert "--alpha=0.0" in b_args and "--teacher_ckpt=" in b_args
        student = quickstart.read_config_file(os.path.join(ROOT, kd_cfg))
        assert student["alpha"] > 0
        if k:   # the teacher is reseeded with the students, and the students read that teacher
            assert f"--seed={42 + k}" in t_args and f"--seed={43 + k}" in kd_args
            assert f"--teacher_ckpt={os.path.join(root, 'teacher', 'ckpt.pt')}" in kd_args
    teacher = quickstart.read_config_file(os.path.join(ROOT, t_cfg))
    assert teacher["data_dir"] == student["data_dir"] and "teacher_ckpt" not in teacher   # train.bin, no teacher


def test_spread_is_max_minus_min_per_split():
    gains = [{"val": 0.30, "ood": 0.10}, {"val": 0.28, "ood": 0.12}, {"val": 0.25, "ood": 0.16}]  # extremes not adjacent
    spread = quickstart_spread.spread_of(gains)
    assert abs(spread["val"] - 0.05) < 1e-12 and abs(spread["ood"] - 0.06) < 1e-12


def test_the_spread_is_printed_only_at_the_settings_it_was_measured_at(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(ROOT, "configs"), tmp_path / "configs")
    os.makedirs(tmp_path / "docs")
    monkeypatch.setattr(quickstart, "HERE", str(tmp_path))
    spread, why = quickstart.measured_spread()
    assert spread is None and "quickstart_spread.py" in why
    (tmp_path / quickstart.SPREAD_FILE).write_text(json.dumps({"settings": quickstart.settings(), "spread": {}}))
    assert quickstart.measured_spread()[0] is not None
    cfg = tmp_path / quickstart.STUDENT_CONFIG
    cfg.write_text(cfg.read_text() + "\nlearning_rate = 1e-3\n")
    spread, why = quickstart.measured_spread()
    assert spread is None and "other settings" in why


def test_splits_within_noise_are_those_under_three_times_their_spread():
    gain = {"val": 0.09, "ood_news": 0.05, "ood_pydocs": -0.01}
    spread = {"val": 0.02, "ood_news": 0.02, "ood_pydocs": 0.001}
    # 0.09 ≥ 3 × 0.02 passes; 0.05 < 0.06 and a negative gain do not
    assert quickstart.splits_within_noise(gain, spread) == ["ood_news", "ood_pydocs"]
    assert quickstart.splits_within_noise({"val": 0.01}, {"val": 0.0}) == []
