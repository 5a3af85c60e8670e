"""`python -m pkdns` is the same as the `pkdns` console script."""

from pkdns.cli import main

raise SystemExit(main())
