"""`fmnist push [-r REMOTE] [TARGETS...]`: `dvc push` with a clear error if the remote is unusable.

See fmnist.remote.transfer.
"""

import sys

from fmnist.errors import report_errors
from fmnist.remote import transfer


@report_errors
def main(argv: list[str] | None = None) -> int:
    """Check the remote, then `dvc push`."""
    return transfer("push", argv)


if __name__ == "__main__":
    sys.exit(main())
