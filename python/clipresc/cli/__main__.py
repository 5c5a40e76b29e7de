"""``python -m clipresc.cli``: the ``clipresc`` command."""

from . import console

console()
