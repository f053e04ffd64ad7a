"""The JSON shapes slmctl speaks: what the CLI's ``--json`` prints and what the APIs answer."""
