"""The REST API's settings: where it listens, who may call it, how much it accepts and how fast."""

from __future__ import annotations

import re
from dataclasses import dataclass

from finetuneflow.config import ENV_NAME, setting

DEFAULT_PORT = 8770  # beside `ftf serve`'s 8765, so both can run at once
_ORIGIN = re.compile(r"https?://(\[[0-9a-fA-F:.]+\]|[^\s:/?#@\[\]]+)(:\d{1,5})?/?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normal_origin(origin: str) -> str:
    """``origin`` as a browser's Origin header has it: lower case, the scheme's default port left out."""
    scheme, _, rest = origin.strip().rstrip("/").lower().partition("://")
    return f"{scheme}://{rest.removesuffix(_DEFAULT_PORTS.get(scheme, '//'))}"


@dataclass
class WebConfig:
    """The studio's REST API (``/api/...``) over the project's steps and jobs."""

    host: str = setting("127.0.0.1", "Address to listen on; any but loopback requires an API token.")
    port: int = setting(DEFAULT_PORT, "TCP port to listen on.")
    token_env: str = setting(
        "FTF_WEB_TOKEN", "Environment variable holding the API token (Bearer header or 'ftf_token' cookie)."
    )
    max_upload_mb: float = setting(200.0, "Largest uploaded file in MB; bigger ones are refused with 413.")
    max_request_bytes: int = setting(1_000_000, "Largest JSON request body in bytes (uploads excepted).")
    rate_per_minute: float = setting(120.0, "Write requests (POST/PUT/PATCH/DELETE) per client per minute.")
    rate_burst: int = setting(30, "Write requests a client may send at once before the rate applies.")
    sse_poll_s: float = setting(0.5, "Seconds between reads of a followed job's event log.")
    sse_keepalive_s: float = setting(15.0, "Seconds of silence before an event stream sends a keep-alive.")
    trusted_origins: list[str] = setting(
        [],
        "Origins (scheme://host[:port]) besides the studio's own whose pages may write, and whose host it "
        "answers without a token: the address people open when a reverse proxy in front of the studio "
        "rewrites the Host header (nginx's default), e.g. https://studio.example.com.",
    )

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.port < 65536:
            out.append("port: must be 0-65535 (0: a free port)")
        if not ENV_NAME.fullmatch(self.token_env):
            out.append(f"token_env: {self.token_env!r} is not an environment variable name")
        if self.max_upload_mb <= 0:
            out.append("max_upload_mb: must be positive")
        if self.max_request_bytes < 1024:
            out.append("max_request_bytes: must be >= 1024")
        if self.rate_per_minute <= 0 or self.rate_burst < 1:
            out.append("rate_per_minute: must be positive; rate_burst: at least 1")
        if self.sse_poll_s <= 0 or self.sse_keepalive_s <= self.sse_poll_s:
            out.append("sse_poll_s: must be positive and below sse_keepalive_s")
        out += [
            f"trusted_origins: {o!r} is not an origin; write scheme://host[:port], e.g. https://studio.example.com"
            for o in self.trusted_origins
            if not isinstance(o, str) or _ORIGIN.fullmatch(o.strip()) is None
        ]
        return out

    def origins(self) -> frozenset[str]:
        """The trusted origins as a browser writes them: lower case, no default port, no trailing slash."""
        return frozenset(normal_origin(o) for o in self.trusted_origins)

    def upload_limit(self) -> int:
        """The upload limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)
