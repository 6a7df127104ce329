"""
What a run leaves in its out_dir besides checkpoints, written by rank 0 only:
    config.json   the resolved config, the model's shape, the git commit and the command line
    log.jsonl     one JSON line per training step and per evaluation, flushed as it goes; a resumed run
                  drops the lines it redoes and marks where it began ({"step": s, "resumed": true})
    wandb/        when wandb_log=True (offline too: WANDB_MODE=offline), the same records and a final summary
Logging is never worth losing a run over: a wandb failure turns wandb off, with one line saying why.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

from configurator import ConfigError

# what a run leaves that a second run into the same out_dir would overwrite or mix with its own
RUN_OUTPUTS = ("final.json", "ckpt.pt", "ckpt_sharded", "ckpt_sharded.old", "log.jsonl")


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def claim_out_dir(out_dir, resume, overwrite, master):
    """Before a run starts in out_dir: one that holds a run's checkpoint or results is continued (resume) or,
    when asked (overwrite), emptied of them; otherwise ConfigError saying how to ask. Rank 0 also removes the
    temporary files a kill during a checkpoint write leaves (.ckpt-*.tmp)."""
    held = [name for name in RUN_OUTPUTS[:-1] if os.path.exists(os.path.join(out_dir, name))]
    if held and not resume and not overwrite:
        raise ConfigError(f"out_dir={out_dir!r} already holds a run ({', '.join(held)}); continue it with "
                          f"--resume=True, or replace it with --overwrite=True (deletes {', '.join(held)})")
    if not master:
        return
    for path in glob.glob(os.path.join(out_dir, ".ckpt-*.tmp")):
        os.remove(path)
    if overwrite and not resume:
        for name in RUN_OUTPUTS:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)


def drop_redone(path, step):
    """Keep log.jsonl's lines from before `step`, a resumed run's checkpoint: what it will log again (the
    evaluation at `step`, the steps after it) goes, as does a line a kill cut short."""
    kept = []
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("step", 0) < step or (entry.get("step") == step and "loss" in entry):
                kept.append(line)
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


class RunLog:

    def __init__(self, out_dir, config, master, wandb_project=None, wandb_run_name="", resumed_from=None, **about):
        """resumed_from: the step of the checkpoint a resumed run continues from (log.jsonl keeps what came
        before it and says where the resume began), None for a run from the start (a fresh log.jsonl)."""
        self.master, self.file, self.wandb = master, None, None
        self.commit = git_commit()
        if not master:
            return
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump({"config": config, "git_commit": self.commit, "argv": sys.argv, **about}, f, indent=2)
        log_path = os.path.join(out_dir, "log.jsonl")
        if resumed_from is not None and os.path.exists(log_path):
            drop_redone(log_path, resumed_from)
        self.file = open(log_path, "a" if resumed_from is not None else "w")
        if resumed_from is not None:
            self.file.write(json.dumps({"step": resumed_from, "resumed": True}) + "\n")
            self.file.flush()
        if wandb_project:
            try:
                import wandb
                # dir=out_dir: the run's wandb files (offline ones too) stay with the run
                self.wandb = wandb.init(project=wandb_project, name=wandb_run_name or os.path.basename(out_dir),
                                        config=config, dir=out_dir)
            except Exception as e:  # offline clusters, no account, no package
                print(f"wandb disabled: {e}", flush=True)

    def record(self, entry):
        if not self.master:
            return
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        if self.wandb is not None:
            try:
                self.wandb.log(entry, step=entry["step"])
            except Exception:
                pass

    def finish(self, summary=None):
        """Close the log; `summary` (the numbers a run is compared by) becomes the wandb run's summary."""
        if not self.master:
            return
        self.file.close()
        if self.wandb is not None:
            try:
                if summary:
                    self.wandb.summary.update(summary)
                self.wandb.finish()
            except Exception:
                pass
