"""The ``kd2mcu`` command: the console script and ``python -m kd2mcu``.

Importing the command line loads numpy and click; a Ctrl-C during that start-up ends with one line
too, not a traceback (once started, ``kd2mcu.cli`` handles it).
"""
import sys


def main() -> None:
    try:
        from kd2mcu.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("kd2mcu: interrupted (nothing was written)\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
