import os
import sys

# `python -m` puts the working directory first on sys.path; the project being linted must not shadow
# trainlint's own dependencies (a `click.py` or `libcst/` in the linted tree). Static mode never imports
# the linted code.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from trainlint.cli import main  # noqa: E402

if __name__ == "__main__":
    main(prog_name="trainlint")
