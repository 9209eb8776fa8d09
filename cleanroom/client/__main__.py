import sys

from cleanroom.client.cli import main

sys.exit(main())
