"""The ``kd2mcu`` command: the console script and ``python -m kd2mcu``.

A Ctrl-C before the command writes anything ends the process with one line and exit code 130
(``kd2mcu.interrupt``); once it writes, ``kd2mcu.cli`` turns the ``KeyboardInterrupt`` into that line.
"""
from kd2mcu.interrupt import quit_at_once


def main() -> None:
    quit_at_once()
    from kd2mcu.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
