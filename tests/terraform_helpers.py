"""Helpers for tests/test_terraform.py: running terraform offline, parsing HCL, a local moto server.

Nothing here talks to anything but 127.0.0.1: terraform only installs providers from the offline
filesystem mirror, and the AWS provider is pointed at a moto_server on the loopback interface.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
TF_ROOT = REPO / "infra" / "terraform"

# Providers this machine's image carries in an offline mirror (layout: <host>/<ns>/<type>/<version>/<os_arch>/).
DEFAULT_MIRROR = "/opt/tf-plugins"
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"

CHECKOV_VERSION = "3.3.30"


def terraform_bin() -> str | None:
    return shutil.which("terraform")


def plugin_mirror() -> Path:
    return Path(os.environ.get("REDRAFT_TF_PLUGIN_MIRROR", DEFAULT_MIRROR))


def mirrored_providers(mirror: Path) -> set[str]:
    """Provider sources ("hashicorp/aws") that have at least one version in the mirror."""
    found = set()
    host = mirror / "registry.terraform.io"
    if host.is_dir():
        for ns in host.iterdir():
            for ptype in ns.iterdir() if ns.is_dir() else []:
                if ptype.is_dir() and any(ptype.iterdir()):
                    found.add(f"{ns.name}/{ptype.name}")
    return found


def write_cli_config(directory: Path, mirror: Path) -> Path:
    """A CLI config that installs only from the offline mirror and caches providers (symlinks, not copies)."""
    cache = directory / "plugin-cache"
    cache.mkdir(parents=True, exist_ok=True)
    path = directory / "terraform.tfrc"
    path.write_text(
        f'plugin_cache_dir = "{cache}"\n'
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror}"\n'
        f'    include = ["{AWS_PROVIDER}"]\n'
        "  }\n"
        "  direct {\n"
        f'    exclude = ["{AWS_PROVIDER}"]\n'
        "  }\n"
        "}\n"
    )
    return path


def terraform_env(cli_config: Path, data_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",  # no version check call to checkpoint-api.hashicorp.com
        AWS_EC2_METADATA_DISABLED="true",
    )
    if data_dir is not None:
        env["TF_DATA_DIR"] = str(data_dir)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its output so the pytest report shows what went wrong."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode})\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def copy_tree(dest: Path) -> Path:
    """Copy infra/terraform to dest so init/validate/apply never write into the repository."""
    target = dest / "terraform"
    shutil.copytree(
        TF_ROOT,
        target,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl", "*.auto.tfvars.json"),
    )
    return target


def config_dirs() -> list[Path]:
    """Every directory under infra/terraform holding .tf files: each is a module or a root configuration."""
    return sorted({p.parent for p in TF_ROOT.rglob("*.tf") if ".terraform" not in p.parts})


################################################################################
# HCL
################################################################################


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and block labels; strip them recursively."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
        return value
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    return value


def parse_hcl(path: Path) -> dict[str, Any]:
    """Parse an HCL file (cached on path and content: python-hcl2 is slow)."""
    path = Path(path)
    return copy.deepcopy(_parse_hcl_cached(str(path.resolve()), path.read_text()))


@functools.lru_cache(maxsize=256)
def _parse_hcl_cached(_path: str, text: str) -> dict[str, Any]:
    import hcl2

    return _unquote(hcl2.loads(text))


def parse_config(directory: Path) -> dict[str, dict[str, Any]]:
    """Merge the blocks of all .tf files in a directory into {kind: {name: body}} (resources as 'type.name')."""
    merged: dict[str, dict[str, Any]] = {
        "variable": {}, "output": {}, "locals": {}, "module": {}, "resource": {}, "data": {}, "terraform": {}, "provider": {},
    }
    for path in sorted(directory.glob("*.tf")):
        doc = parse_hcl(path)
        for block in doc.get("variable", []):
            merged["variable"].update(block)
        for block in doc.get("output", []):
            merged["output"].update(block)
        for block in doc.get("locals", []):
            merged["locals"].update(block)
        for block in doc.get("module", []):
            merged["module"].update(block)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        merged[kind][f"{rtype}.{rname}"] = body
        for block in doc.get("terraform", []):
            for rp in block.get("required_providers", []):
                merged["terraform"].update(rp)
        for block in doc.get("provider", []):
            merged["provider"].update(block)
    return merged


def required_provider_sources(directory: Path) -> set[str]:
    """Provider sources ("hashicorp/aws") a configuration requires, from its terraform blocks."""
    providers = parse_config(directory)["terraform"]
    return {spec["source"].lower() for spec in providers.values() if isinstance(spec, dict) and "source" in spec}


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"(^|\s)(#|//).*$", "", line) for line in text.splitlines())


################################################################################
# moto server
################################################################################


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_server_bin() -> str | None:
    found = shutil.which("moto_server")
    if found:
        return found
    candidate = Path(sys.executable).parent / "moto_server"
    return str(candidate) if candidate.exists() else None


def start_moto(log_path: Path) -> tuple[subprocess.Popen, str]:
    binary = moto_server_bin()
    if binary is None:
        raise FileNotFoundError("moto_server not found (pip install 'moto[server]')")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    log = open(log_path, "w")
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log_path}")
        try:
            urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2).read()
            return proc, url
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("moto_server did not start within 60 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def moto_enforce_iam(url: str) -> None:
    """Make moto authorize every later request against IAM policies (it accepts everything by default)."""
    req = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"})
    body = json.loads(urllib.request.urlopen(req, timeout=10).read())
    assert body.get("status") == "ok", body


def moto_provider_block(url: str, services: list[str], region: str | None = "us-east-1") -> str:
    """An aws provider block (or override) that sends every listed service to the moto server."""
    endpoints = "\n".join(f'    {svc} = "{url}"' for svc in services)
    region_line = f'  region = "{region}"\n' if region else ""
    return (
        'provider "aws" {\n'
        f"{region_line}"
        '  access_key                  = "testing"\n'
        '  secret_key                  = "testing"\n'
        "  skip_credentials_validation = true\n"
        "  skip_requesting_account_id  = true\n"
        "  skip_metadata_api_check     = true\n"
        "  skip_region_validation      = true\n"
        "  s3_use_path_style           = true\n"
        "  endpoints {\n"
        f"{endpoints}\n"
        "  }\n"
        "}\n"
    )


def iter_statements(policy: dict[str, Any]) -> Iterator[dict[str, Any]]:
    statements = policy["Statement"]
    yield from statements if isinstance(statements, list) else [statements]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
