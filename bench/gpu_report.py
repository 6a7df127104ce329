"""
The README's GPU section, written from bench/gpu_check.sh's summary JSON (nothing typed by hand):

    python bench/gpu_report.py bench/results/gpu_check_<device>_<date>.json                    # print it
    python bench/gpu_report.py bench/results/gpu_check_<device>_<date>.json --readme README.md  # replace it there

In the README the section sits between the lines <!-- gpu_check:begin --> and <!-- gpu_check:end -->.
"""

import argparse
import json
import os
import sys

BEGIN, END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"


def fmt(x, spec, none="–"):
    return format(x, spec) if isinstance(x, (int, float)) else none


def section(s, source):
    gib = 2 ** 30
    lines = [f"Measured by `bench/gpu_check.sh` on **{s.get('device')}** on {str(s.get('date'))[:10]} (torch "
             f"{s.get('torch')}, CUDA {s.get('cuda')}, triton {s.get('triton')}, commit {str(s.get('git_commit'))[:10]}"
             f"{', DRY RUN on a CPU: not GPU figures' if s.get('dry_run') else ''}; [JSON]({source})). "
             f"TF32 override variables: {s.get('tf32_override_env')}.", ""]
    tests = s.get("tests") or {}
    if tests:
        lines.append("Tests on the device: " + "; ".join(f"`{k}` {v['result']} ({v['summary_line']})"
                                                         for k, v in tests.items()) + ".")
        lines.append("")
    if s.get("cases"):
        lines += ["| loss case (N, V, H) | fused | % of the matmul floor | % of bf16 peak | reference | "
                  "memory vs reference |", "|---|---|---|---|---|---|"]
        for c in s["cases"]:
            mf = c.get("fused_memory_fraction_of_reference")
            lines.append(f"| {c['N']:,} × {c['V']:,} × {c['H_s']:,} | {fmt(c.get('fused_time_s'), '.4f')} s "
                         f"({c.get('fused_impl') or 'not run'}) | {fmt(c.get('fused_pct_of_floor'), '.1f')} | "
                         f"{fmt(c.get('fused_pct_of_bf16_peak'), '.1f')} | {fmt(c.get('reference_time_s'), '.4f')} s | "
                         f"{'1/' + format(1 / mf, '.0f') if mf else '–'} |")
        lines.append("")
    smoke = s.get("smoke")
    if smoke:
        lines.append(f"Training smoke run (one process under torchrun, {smoke.get('model')}, compile="
                     f"{smoke.get('compile')}): {'every step passed' if smoke.get('ok') else 'FAILED'} ("
                     + ", ".join(f"{st['name']} {'ok' if st['rc'] == 0 else 'rc ' + str(st['rc'])} {st['seconds']:.0f} s"
                                 for st in smoke.get("steps", [])) + ").")
        for par, r in (smoke.get("runs") or {}).items():
            if r:
                lines.append(f"- {par}: step {r.get('step')}, train loss {fmt(r.get('train_loss'), '.3f')}, peak "
                             f"memory {fmt((r.get('peak_memory_bytes') or 0) / gib or None, '.2f')} GiB allocated, "
                             f"plan.py {fmt((r.get('plan_memory_bytes') or 0) / gib or None, '.2f')} GiB")
        lines.append("")
    st = s.get("bench_step")
    if st:
        res = st.get("results", {})
        lines += [f"One training step, {st['config']['model']} student / {st['config']['teacher_model']} teacher, "
                  f"{st['config']['batch_size']}×{st['config']['block_size']} tokens, {st.get('dtype')}:", "",
                  "| | ms | tokens/s | MFU |", "|---|---|---|---|"]
        for name, r in res.items():
            lines.append(f"| {name} | {r['ms']:.1f} | {r['tokens_per_s']:,.0f} | "
                         f"{fmt(r.get('mfu') and 100 * r['mfu'], '.1f')}{'%' if r.get('mfu') else ''} |")
        ratios = st.get("kd_overhead_ratio", {})
        lines += ["", "KD overhead ratio (KD step ÷ (student step + teacher forward), ideal 1.0): "
                  + ", ".join(f"{k[9:-1]} {v:.3f}" for k, v in ratios.items()) + "."]
    return "\n".join(lines).rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("summary", help="gpu_check.sh's summary JSON")
    ap.add_argument("--readme", default=None, help="replace the section between the markers in this file")
    args = ap.parse_args()
    s = json.load(open(args.summary))
    if not args.readme:
        print(section(s, args.summary), end="")
        return
    text = open(args.readme).read()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        sys.exit(f"{args.readme}: needs exactly one {BEGIN} ... {END} section")
    source = os.path.relpath(os.path.abspath(args.summary), os.path.dirname(os.path.abspath(args.readme)))
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    with open(args.readme, "w") as f:
        f.write(head + BEGIN + "\n" + section(s, source) + END + tail)
    print(f"wrote the GPU section of {args.readme} from {args.summary}")


if __name__ == "__main__":
    main()
