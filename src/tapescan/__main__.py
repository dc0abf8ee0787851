"""`python -m tapescan` and the `tapescan` command: a Ctrl-C even while the libraries are still
being imported ends the process with exit code 130 and no traceback."""

import sys


def main() -> None:
    try:
        from tapescan.cli import main as cli_main  # noqa: PLC0415 - imports ~1 s of libraries

        cli_main()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
