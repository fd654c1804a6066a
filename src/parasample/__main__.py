"""``python -m parasample`` and the ``parasample`` console script.

The command line's modules are imported inside :func:`main`, so Ctrl-C during start-up (importing
typer, rich, torch) ends with ``interrupted.`` and exit code 130, like Ctrl-C anywhere else,
never a traceback; once the command has finished, Ctrl-C is ignored while Python exits.
"""

import signal
import sys


def main() -> int:
    try:
        from parasample.cli import app

        return app()
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    finally:
        # the command is over (its files are written): Ctrl-C while the interpreter shuts down
        # would only turn a finished run's exit status into "killed by SIGINT"
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
