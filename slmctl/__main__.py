"""``python -m slmctl`` runs the command-line interface."""

import sys

from slmctl.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
