"""The `weightpress` command line."""
from __future__ import annotations

import argparse
import sys

import ir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weightpress",
                                description="Compress ML model weights and canonicalize quantized graphs.")
    p.add_argument("--version", action="version", version=f"weightpress {ir.__version__}")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
