"""``python -m slmctl`` runs the command-line interface."""

from slmctl.cli.app import main

if __name__ == "__main__":
    main()
