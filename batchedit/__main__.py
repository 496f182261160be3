"""``python -m batchedit``: the same as the ``batchedit`` command."""

from batchedit.cli import main

main()
