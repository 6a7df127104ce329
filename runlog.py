"""
What a run leaves in its out_dir besides checkpoints, written by rank 0 only:
    config.json   the resolved config, the model's shape, the git commit and the command line
    log.jsonl     one JSON line per training step and per evaluation, flushed as it goes
    wandb/        when wandb_log=True (offline too: WANDB_MODE=offline), the same records and a final summary
Logging is never worth losing a run over: a wandb failure turns wandb off, with one line saying why.
"""

import json
import os
import subprocess
import sys


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


class RunLog:

    def __init__(self, out_dir, config, master, wandb_project=None, wandb_run_name="", **about):
        self.master, self.file, self.wandb = master, None, None
        self.commit = git_commit()
        if not master:
            return
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump({"config": config, "git_commit": self.commit, "argv": sys.argv, **about}, f, indent=2)
        self.file = open(os.path.join(out_dir, "log.jsonl"), "a")
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
