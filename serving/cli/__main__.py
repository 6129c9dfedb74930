"""``python -m serving.cli``: the ``vigil`` command."""

from serving.cli.core import main

raise SystemExit(main())
