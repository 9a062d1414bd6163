"""Emulators of the Kubernetes API and of Lucid's OAuth endpoints, for tests, the demo and the
benchmark. They ship in the package so that `lucidgrant demo` works from an install."""
