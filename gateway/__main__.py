"""`python -m gateway` is the same as the `orga-sip-gateway` console script."""

from gateway.cli import main

raise SystemExit(main())
