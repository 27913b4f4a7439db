"""pysite: a small WSGI site that shows which node served the request."""

import os
from importlib import metadata


def version() -> str:
    """Return the running version.

    The package's systemd unit sets TANDEM_APP_VERSION to the Debian version
    (the one derived from git), which is the version operators care about.
    """
    v = os.environ.get("TANDEM_APP_VERSION")
    if v:
        return v
    try:
        return metadata.version("pysite")
    except metadata.PackageNotFoundError:
        return "0.0.0"
