import sys

from modeldeck_client.cli import main

sys.exit(main())
