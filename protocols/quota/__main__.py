"""``python -m protocols.quota --url … --pool … --name …``: one candidate quota service."""

import sys

from protocols.quota.service import main

sys.exit(main())
