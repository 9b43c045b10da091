"""Start and stop the test OpenID Connect provider as its own process (gunicorn)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def port_in_range(default: str = "29000-29999") -> int:
    """A free port from this developer's (or CI's) range, so runs on one machine never clash."""
    low, high = (int(p) for p in os.environ.get("OIDC_PROVIDER_PORTS", default).split("-"))
    for _ in range(200):
        port = low + secrets.randbelow(high - low + 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


@dataclass
class Provider:
    """A running provider: its issuer, discovery document, client and users."""

    state_dir: Path
    redirect_uris: list[str]
    port: int = field(default_factory=port_in_range)
    client_id: str = field(default_factory=lambda: "modeldeck-" + secrets.token_hex(4))
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    process: subprocess.Popen | None = None
    discovery: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OIDC_"))}
        return {
            **keep,
            "DJANGO_SETTINGS_MODULE": "tests.oidc_provider.settings",
            "OIDC_PROVIDER_DIR": str(self.state_dir),
        }

    def start(self, users: list[dict]) -> Provider:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A fresh RS256 key for every run: nothing secret is ever committed.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for name, content in (("signing_key.pem", pem), ("secret_key", secrets.token_bytes(32))):
            path = self.state_dir / name
            path.write_bytes(content.hex().encode() if name == "secret_key" else content)
            path.chmod(0o600)
        spec = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "users": users,
        }
        subprocess.run(
            [sys.executable, "-m", "tests.oidc_provider.seed"],
            input=json.dumps(spec),
            text=True,
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        log = open(self.state_dir / "provider.log", "wb")  # noqa: SIM115 (lives with the process)
        self.process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "tests.oidc_provider.wsgi",
                *("--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "4"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        well_known = f"{self.url}/o/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(well_known, timeout=2) as response:
                    self.discovery = json.load(response)
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"provider did not come up:\n{self.logs()}")

    def relying_party_settings(self) -> dict[str, str]:
        """What an operator copies from the discovery document into Modeldeck's environment."""
        return {
            "OIDC_RP_CLIENT_ID": self.client_id,
            "OIDC_RP_CLIENT_SECRET": self.client_secret,
            "OIDC_OP_ISSUER": self.discovery["issuer"],
            "OIDC_OP_AUTHORIZATION_ENDPOINT": self.discovery["authorization_endpoint"],
            "OIDC_OP_TOKEN_ENDPOINT": self.discovery["token_endpoint"],
            "OIDC_OP_USER_ENDPOINT": self.discovery["userinfo_endpoint"],
            "OIDC_OP_JWKS_ENDPOINT": self.discovery["jwks_uri"],
        }

    def logs(self) -> str:
        path = self.state_dir / "provider.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
