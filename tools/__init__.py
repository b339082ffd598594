"""Typed wrappers around the external tools (docker, sbt-in-docker, packer, terraform, ansible, aws).

Nothing here knows about Prefect flows: each module hides one tool's CLI/API behind a small typed
interface, starts processes only through :mod:`tools.process` and raises :mod:`tools.errors`.
"""
