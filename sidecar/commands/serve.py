"""``custos serve``: run the sidecar proxy on uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse
import os

from ..config import load_config
from ..cpus import usable_cpus


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the sidecar proxy in front of the configured upstream")
    p.add_argument(
        "--config", metavar="PATH", help="YAML config file (default: $CUSTOS_CONFIG or built-in defaults)"
    )
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument(
        "--workers", type=_workers, help="override server.workers (a number, or 'auto': one per usable core)"
    )
    p.add_argument(
        "--gpu-sim", metavar="FILE", help="simulate GPUs from a scenario file (sets gpu.simulation)"
    )
    p.set_defaults(func=run_serve)


def _workers(value: str) -> int:
    if value == "auto":
        return min(64, usable_cpus())
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number or 'auto'") from None
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"{count} is not between 1 and 64")
    return count


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    config = load_config(args.config)  # fail fast (exit 2) before any worker starts
    server = config.server
    host = args.host or server.host
    port = args.port or server.port
    workers = args.workers or server.workers
    from ..startup import log_startup

    log_startup(config, host=host, port=port, workers=workers)  # the setup in force, and loud warnings, once
    if args.config:
        # Workers re-read the same file through the app factory.
        os.environ["CUSTOS_CONFIG"] = os.path.abspath(args.config)
    if getattr(args, "gpu_sim", None):
        # Workers read it as a config override; the scenario is checked here first (exit 2 when bad).
        from gpu.sim import load_scenario, resolve_scenario

        os.environ["CUSTOS_GPU__SIMULATION"] = resolve_scenario(args.gpu_sim)
        load_scenario(args.gpu_sim)
    if workers > 1:
        # Metrics from all workers are summed through shared files (prometheus-client multiprocess
        # mode): the directory must be set before the workers import prometheus-client.
        import atexit

        from ..metrics.render import prepare_multiprocess_dir, remove_multiprocess_dir

        mp_dir = prepare_multiprocess_dir(config.metrics.multiprocess_dir)
        atexit.register(remove_multiprocess_dir, mp_dir, config.metrics.multiprocess_dir)
    # Build the stages here so that a bad policy or key file fails now with exit 2, not inside a
    # worker; with one worker this very app is served.
    from ..app import CustosApp
    from ..httpproto import GuardedHttpToolsProtocol
    from ..pipeline import build_stages
    from ..tls import ContextFactory

    config = load_config(args.config)  # again: --gpu-sim may have added an override
    if config.audit.enabled:
        from custos.errors import ConfigError

        from ..audit.keys import KeyError_, check_signing_key

        try:  # a configured audit signing key that is missing or broken: exit 2 now, never a new key
            check_signing_key(
                config.audit.key_path(config.state.dir), configured=config.audit.signing_key is not None
            )
        except KeyError_ as exc:
            raise ConfigError(str(exc)) from None
    if server.tls.enabled:
        import ssl

        from custos.errors import ConfigError

        from ..tls import build_context

        try:  # a certificate and key that do not load fail now (exit 2), not inside a worker
            build_context(server.tls)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"server.tls: the certificate/key pair does not load: {exc}") from None
    app = CustosApp(config, build_stages(config))
    uvicorn.run(
        app if workers == 1 else "sidecar.app:create_app",
        factory=workers > 1,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # httptools with limits on request heads (size, field count, time): see sidecar.httpproto.
        http=GuardedHttpToolsProtocol,
        # X-Forwarded-* are trusted only from rbac.trusted_proxies, by the app itself; uvicorn's
        # own handling would trust them from loopback whatever the configuration says.
        proxy_headers=False,
        server_header=False,
        # HTTPS with certificate rotation (sidecar.tls); each worker watches the files itself.
        ssl_context_factory=ContextFactory(server.tls) if server.tls.enabled else None,
        log_level=server.log_level,
        access_log=server.access_log,
        timeout_graceful_shutdown=10,
    )
    return 0
