"""``python -m parasample`` and the ``parasample`` console script.

Ctrl-C anywhere ends a command with ``interrupted.`` and exit code 130, never a traceback:

* The command line's modules are imported inside :func:`main`, so Ctrl-C during start-up
  (importing typer, rich) is caught like Ctrl-C anywhere else.
* Ctrl-C that lands while a module is being imported (torch, numpy and transformers are imported
  lazily, inside commands) is delivered again 50 ms later instead of inside the import. An import
  interrupted half-way leaves a half-initialised module in ``sys.modules``: numpy's then recurses
  until ``RecursionError`` and prints a traceback, and an interrupt raised inside an extension's
  start-up can make the interpreter exit as "killed by SIGINT" after the handler printed
  ``interrupted.`` (both seen on a loaded CI machine). Python offers no way to defer a signal
  past an import, hence this handler.
* Once the command has finished, Ctrl-C is ignored while Python exits.
"""

import os
import signal
import sys
import threading

#: how long a Ctrl-C that arrived during an import waits before it is delivered again
RETRY_S = 0.05


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _sigint(signum, frame) -> None:
    if _importing(frame):
        threading.Timer(RETRY_S, os.kill, (os.getpid(), signum)).start()
        return
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGINT, _sigint)
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
