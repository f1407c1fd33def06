"""Prints the markdown table of `launch/ils_ablation.sh`'s runs (seed, ILS, kimg, per-image IoU,
DICE, mask coverage, all-foreground fraction, GAN minutes, and per arm the means over seeds) from
RUNS_DIR/{on,off}_seed<S>/report.json.

  python launch/ablation_table.py RUNS_DIR "0 1 2"
"""

import sys

from ilsgan_jax.stages.layer_figure import ablation_entries, ablation_table


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(f'usage: {argv[0]} RUNS_DIR "SEEDS"')
    print(ablation_table(ablation_entries(argv[1], argv[2].split())))


if __name__ == "__main__":
    main(sys.argv)
