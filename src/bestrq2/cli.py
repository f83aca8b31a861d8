"""Command-line entry point (placeholder, filled in by the spine)."""

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from bestrq2.corpora.cli import main as data_main

        return data_main(argv[1:])
    print("usage: bestrq2 {data,pretrain,export,embed,benchmark} ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
