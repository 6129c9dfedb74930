"""``python -m serving.cli``: the ``vigil`` command."""

from serving.cli.main import main

raise SystemExit(main())
