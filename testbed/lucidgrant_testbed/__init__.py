"""Emulators of the Kubernetes API (`kubeapi`) and of Lucid's OAuth endpoints (`lucid`), and the
demo built on them: for tests, the demo and the benchmark, never for production (the operator's
own distribution, `lucidgrant`, contains none of this)."""

from pathlib import Path

# The LucidGrant CRD the emulated API serves. `crds` beside this file is a symlink to the
# repository's crds/ folder: a wheel gets a copy of the files, an editable install reads them
# through the link, and neither depends on the working directory.
CRDS = Path(__file__).resolve().parent / "crds"
