"""`python app.py [CORPUS] [--host H] [--port N] [--share]`: the side-by-side chat, as `assistant app`."""

import sys

from assistant.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
