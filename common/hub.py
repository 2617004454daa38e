"""The Hugging Face hub: fail within seconds, saying how to work offline, when it cannot be reached.

Without this, every lookup of a hub id on a machine without network retries for 30-60 s before its error.
"""

import functools
import os
import socket
from urllib.parse import urlsplit

from .errors import UserError

OFFLINE_HELP = (
    "to work offline, build the tiny model (python -m common.tiny_model tiny-bloom) and pass "
    "--model_name_or_path tiny-bloom --dataset data/demo_zh.json, or pass folders and files downloaded elsewhere; "
    "if the files are already in your Hugging Face cache, set HF_HUB_OFFLINE=1"
)
TIMEOUT_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline() -> bool:
    """HF_HUB_OFFLINE=1: the libraries read their cache only, and fail at once for what is not there."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def endpoint() -> tuple[str, int]:
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


@functools.cache
def _reachable(host: str, port: int) -> bool:
    try:  # the timeout bounds the connection; a slow DNS server can still add its own
        socket.create_connection((host, port), timeout=TIMEOUT_S).close()
        return True
    except OSError:
        return False


def require_hub(what: str, name: str) -> None:
    """Raise a UserError now if `name` (no local path) would be looked up on a hub this machine cannot reach.

    The message says both things, since either may be the mistake: no local folder or file has that name (a
    typo such as tiny_bloom for tiny-bloom), and the hub, where it would be an id, cannot be reached.

    Offline mode and proxies are left to the libraries: offline they already fail fast, and behind a proxy a
    direct connection says nothing about what the proxy can reach.
    """
    if offline() or any(os.environ.get(name) for name in PROXY_VARIABLES):
        return
    host, port = endpoint()
    if not _reachable(host, port):
        raise UserError(
            f"{what} {name!r}: no such local folder or file here ({os.getcwd()}), and as a Hugging Face hub id it "
            f"cannot be fetched: {host}:{port} cannot be reached; {OFFLINE_HELP}"
        )
