"""``redraft serve``: check the Serve config, start Ray Serve's HTTP proxy and deploy ``workers.serve``'s app.

The replica (``workers/serve.py``) takes plain ``ServeSettings``; this module turns the validated
``ServeConfig`` into them (``pipelines/convert.py``) and owns the checks that run before anything starts.
"""

from __future__ import annotations

import os

from ray import serve

from workers.serve import APP_NAME, RedraftServer, key_digest

from .convert import serve_settings
from .serve_config import ServeConfig, ServeConfigError, load_serve_config


def build_app(cfg: ServeConfig, api_key: str | None = None):
    """The bound Serve application for ``cfg`` (replicas, autoscaling and resources from ``cfg.deployment``)."""
    dep = cfg.deployment
    options = {"ray_actor_options": {"num_cpus": dep.num_cpus, "num_gpus": dep.num_gpus},
               "max_ongoing_requests": dep.max_ongoing_requests}
    if dep.autoscaling is not None:
        options["autoscaling_config"] = dep.autoscaling.model_dump()
    else:
        options["num_replicas"] = dep.num_replicas
    return RedraftServer.options(**options).bind(serve_settings(cfg), key_digest(api_key))


def start(cfg: ServeConfig, *, env=None, blocking: bool = False, start_http: bool = True):
    """Check ``cfg`` (checkpoint present, safe bind), then start Serve's HTTP proxy and deploy the app.

    Connects to the Ray cluster named by ``RAY_ADDRESS`` or starts a local one when Ray is not initialised.
    Returns the deployment handle (``blocking=True`` serves until interrupted instead).

    Raises:
        ServeConfigError: the checkpoint is missing, the bind is unsafe, or (Ray started here) the port is taken.
    """
    import ray

    env = os.environ if env is None else env
    api_key = env.get(cfg.http.api_key_env) or None
    cfg.check_bind(api_key_set=api_key is not None)
    cfg.check_checkpoint()
    if not ray.is_initialized():
        if start_http and not env.get("RAY_ADDRESS"):
            cfg.check_port()  # a local proxy binds on this machine; a cluster's binds on its head node
        ray.init(address=env.get("RAY_ADDRESS") or "local")
    if start_http:
        serve.start(http_options={"host": cfg.http.host, "port": cfg.http.port})
    return serve.run(build_app(cfg, api_key), name=APP_NAME, route_prefix="/", blocking=blocking)


def serve_command(config_path: str, overrides: list[str] | None = None) -> int:
    """``redraft serve CONFIG.yaml [--set key=value ...]``: serve until interrupted. Returns the exit code
    (2: the config is invalid, the checkpoint is missing, the bind is unsafe or the port is taken; nothing was
    started)."""
    import sys

    try:
        cfg = load_serve_config(config_path, overrides)
        cfg.check_bind(api_key_set=bool(os.environ.get(cfg.http.api_key_env)))
        cfg.check_checkpoint()
    except ServeConfigError as err:
        print(f"redraft serve: {config_path}:\n  " + "\n  ".join(err.problems), file=sys.stderr)
        return 2
    try:
        if not os.environ.get("RAY_ADDRESS"):  # a cluster's proxy binds on its head node, not here
            cfg.check_port()
    except ServeConfigError as err:
        print(f"redraft serve: error: {err}", file=sys.stderr)
        return 2
    print(f"redraft serve: model {cfg.model_name!r} on http://{cfg.http.host}:{cfg.http.port}/v1 (Ctrl-C stops)",
          file=sys.stderr)
    try:
        start(cfg, blocking=True)
    except KeyboardInterrupt:
        pass
    return 0
