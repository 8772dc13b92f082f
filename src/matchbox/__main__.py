"""``python -m matchbox``: the same as the ``matchbox`` command."""

from matchbox.cli import main

main()
