"""lucidgrant: a Kubernetes operator that keeps Lucid OAuth grants alive forever."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lucidgrant")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
