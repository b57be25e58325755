#!/usr/bin/env python3
"""Run the tokcomp CLI from a checkout: `python cli.py export tiny-clip --compress pool:2`.

Same app as the `tokcomp` console script (like Django's manage.py).
"""

from tokcomp_edge.cli.app import main

if __name__ == "__main__":
    main()
