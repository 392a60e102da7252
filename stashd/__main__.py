"""``python -m stashd``: the daemon, as the ``stashd`` command runs it."""

from stashd.cli import stashd_main

stashd_main()
