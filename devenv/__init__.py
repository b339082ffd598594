"""The development environment, apart from the product: what runs the flows locally, never the flows.

- `services`: the one place that starts and stops the local services (Prefect server, moto, registry,
  PostgreSQL, dockerd), used by the sandbox, the main job, the scale-out demo, the bench and the tests.
- `processes`: the primitives under it (free ports, detached spawn, stop by process group, health polls).
- `sandbox` (`python -m devenv.sandbox up|down|status|env`) with `sandbox_state`, `dockerd`, `toolchain`,
  `demo_secrets`; `moto_server` (moto's server with two fixes, `python -m devenv.moto_server`).
- `main` (`scripts/main`), `scale_out` (`scripts/scale-out`), `bench_services` (the bench's private ones).
"""
