"""Allow `python -m modeldeck_runtime serve|gateway ...`."""

from modeldeck_runtime.cli import main

raise SystemExit(main())
