"""Subcommands of the ``alignkit`` CLI, one module each (see ``alignkit.cli``)."""
