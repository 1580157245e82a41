"""``python -m tlbench`` is the ``tlbench`` command."""

from tlbench.cli import main

raise SystemExit(main())
