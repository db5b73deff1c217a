"""`python -m landmark_exp.sweep <sweep dir>`: (re)build the table of a multirun's jobs."""

from __future__ import annotations

import sys

from landmark_exp.reports import write_sweep_summary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m landmark_exp.sweep <sweep dir>", file=sys.stderr)
        return 2
    frame = write_sweep_summary(args[0])
    return 0 if not frame.empty else 1


if __name__ == "__main__":
    raise SystemExit(main())
