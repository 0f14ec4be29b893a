"""The server's settings: the one place RelayMQ reads its configuration.

Values come from, highest priority first: command-line flags (passed in as
keyword arguments), environment variables ``RELAYMQ_<FIELD>``, an optional TOML
file (``--config`` or ``RELAYMQ_CONFIG``; flat ``field = value`` keys), then
the defaults below. Nothing else in RelayMQ reads the environment: everything
downstream receives typed settings in its constructor.
"""

from __future__ import annotations

import enum
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from relaymq.broker.settings import BrokerSettings
from relaymq.errors import InvalidConfig
from relaymq.store.base import FsyncPolicy

KIBIBYTE = 1024
MEBIBYTE = 1024 * KIBIBYTE


class LogFormat(enum.StrEnum):
    """``text``: one human-readable line per record. ``json``: one JSON object per line."""

    TEXT = "text"
    JSON = "json"


class LogLevel(enum.StrEnum):
    """The lowest level of log record written."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class AuthMode(enum.StrEnum):
    """``required``: every request needs credentials. ``anonymous``: requests without
    credentials act as an administrator (local development only)."""

    REQUIRED = "required"
    ANONYMOUS = "anonymous"


class TomlFileSource(PydanticBaseSettingsSource):
    """Settings from the TOML file named by the ``config`` setting (flag or env var).

    It runs after the flag and environment sources, so it finds the file name in
    ``current_state``; a missing or malformed file is an :class:`InvalidConfig`.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` returns the whole file at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The file's keys, or nothing when no file is configured."""
        path = self.current_state.get("config")
        if path is None:
            return {}
        return read_toml_file(Path(path))


def read_toml_file(path: Path) -> dict[str, Any]:
    """The top-level keys of a TOML settings file."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as error:
        raise InvalidConfig(f"cannot read config file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise InvalidConfig(f"config file {path} is not valid TOML: {error}") from error


class Settings(BaseSettings):
    """Every setting of ``relaymq serve``. Sizes in bytes, times in the unit named last."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYMQ_", extra="forbid", frozen=True, validate_default=True
    )

    config: Path | None = Field(None, description="TOML file with more settings.")
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port of the HTTP server.")
    data_dir: Path = Field(Path("relaymq-data"), description="Directory of the embedded store.")
    fsync: FsyncPolicy = Field(
        FsyncPolicy.BATCH, description="When writes are fsynced: always, batch or never."
    )
    segment_bytes: int = Field(64 * MEBIBYTE, ge=4 * KIBIBYTE, description="Log segment size.")
    reserve_chunk_bytes: int = Field(
        4 * MEBIBYTE,
        ge=0,
        le=64 * MEBIBYTE,
        description="Disk space reserved ahead of each written partition, a chunk at a time "
        "(0: none).",
    )
    min_free_disk_bytes: int = Field(
        64 * MEBIBYTE, ge=0, description="Publishes fail with storage_full below this free space."
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="debug, info, warning or error.")
    log_format: LogFormat = Field(LogFormat.TEXT, description="text or json (one object a line).")
    max_payload_bytes: int = Field(1 * MEBIBYTE, ge=1, description="Largest message payload.")
    max_batch_messages: int = Field(1_000, ge=1, description="Most messages in one publish.")
    max_headers_bytes: int = Field(16 * KIBIBYTE, ge=0, description="Largest message headers.")
    max_request_bytes: int = Field(16 * MEBIBYTE, ge=1, description="Largest HTTP request body.")
    max_fetch_messages: int = Field(1_000, ge=1, description="Most messages in one fetch/read.")
    max_wait_ms: int = Field(30_000, ge=0, description="Longest long-poll wait.")
    max_connections: int = Field(10_000, ge=1, description="Most concurrent connections.")
    max_streams_per_namespace: int = Field(10_000, ge=1, description="Most streams a namespace.")
    max_partitions: int = Field(256, ge=1, description="Most partitions of one stream.")
    ws_max_frame_bytes: int = Field(4 * MEBIBYTE, ge=1, description="Largest WebSocket frame.")
    ws_idle_timeout_seconds: float = Field(
        120, gt=0, description="A silent WebSocket is closed after this long."
    )
    ws_max_credit: int = Field(10_000, ge=1, description="Most unacked pushes per WebSocket.")
    sse_max_clients: int = Field(1_000, ge=1, description="Most concurrent SSE streams.")
    checkpoint_interval_ms: int = Field(200, ge=1, description="How often cursors are saved.")
    retention_interval_ms: int = Field(5_000, ge=1, description="How often retention runs.")
    shutdown_timeout_seconds: float = Field(
        10, ge=0, description="Longest wait for open requests on shutdown."
    )
    # -- security and tenancy (docs/security.md) --
    auth_mode: AuthMode = Field(
        AuthMode.REQUIRED, description="required, or anonymous (no credentials: admin)."
    )
    admin_key: SecretStr | None = Field(
        None, description="An API key to install as admin key at start (else one is printed)."
    )
    jwt_hs256_secret: SecretStr | None = Field(
        None, description="Shared secret of HS256 JSON Web Tokens (at least 32 bytes)."
    )
    jwt_jwks_file: Path | None = Field(None, description="JWKS file of RS256/ES256 JWT keys.")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL of RS256/ES256 JWT keys.")
    jwt_jwks_cache_seconds: float = Field(
        300, gt=0, description="How long a fetched JWKS is trusted before refetching."
    )
    jwt_issuer: str | None = Field(None, description="Required `iss` claim of JWTs.")
    jwt_audience: str | None = Field(None, description="Required `aud` claim of JWTs.")
    jwt_grants_claim: str = Field("relaymq", description="JWT claim holding the grants.")
    jwt_leeway_seconds: float = Field(
        5, ge=0, le=300, description="Clock skew allowed on `exp` and `nbf`."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve HTTPS/WSS.")
    tls_key: Path | None = Field(None, description="PEM private key of `tls_cert`.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle: require client certificates it signed (mTLS)."
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to open WebSockets (JSON list; `*` for any).",
    )
    max_header_bytes: int = Field(
        64 * KIBIBYTE, ge=1 * KIBIBYTE, description="Largest HTTP request head (431 above)."
    )
    handshake_timeout_seconds: float = Field(
        10, gt=0, description="Longest time to send a request's head (slowloris)."
    )
    body_timeout_seconds: float = Field(
        30, gt=0, description="Longest time to send a request's body, after its head."
    )
    keep_alive_timeout_seconds: float = Field(
        5, gt=0, description="An idle keep-alive HTTP connection is closed after this long."
    )
    quota_max_streams: int = Field(
        0, ge=0, description="Default most streams per namespace (0: no quota)."
    )
    quota_max_stored_bytes: int = Field(
        0, ge=0, description="Default most bytes stored per namespace (0: no quota)."
    )
    quota_publish_messages_per_second: float = Field(
        0, ge=0, description="Default publish rate per namespace in messages/s (0: none)."
    )
    quota_publish_bytes_per_second: float = Field(
        0, ge=0, description="Default publish rate per namespace in bytes/s (0: none)."
    )
    quota_max_connections: int = Field(
        0, ge=0, description="Default most WebSocket and SSE connections per namespace (0: none)."
    )

    @model_validator(mode="after")
    def check_tls(self) -> Settings:
        """``tls_cert`` and ``tls_key`` come together; mTLS needs TLS."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then the environment, then the TOML file (no ``.env``, no secrets dir)."""
        return init_settings, env_settings, TomlFileSource(settings_cls)

    def broker_settings(self) -> BrokerSettings:
        """The subset the broker needs, as its own typed settings."""
        return BrokerSettings(
            data_dir=self.data_dir,
            fsync=self.fsync,
            segment_bytes=self.segment_bytes,
            reserve_chunk_bytes=self.reserve_chunk_bytes,
            min_free_disk_bytes=self.min_free_disk_bytes,
            max_payload_bytes=self.max_payload_bytes,
            max_batch_messages=self.max_batch_messages,
            max_headers_bytes=self.max_headers_bytes,
            max_fetch_messages=self.max_fetch_messages,
            max_wait_ms=self.max_wait_ms,
            max_streams_per_namespace=self.max_streams_per_namespace,
            max_partitions=self.max_partitions,
            checkpoint_interval_ms=self.checkpoint_interval_ms,
            retention_interval_ms=self.retention_interval_ms,
        )


def load_settings(**flags: Any) -> Settings:
    """Settings from flags (``None`` values are ignored), the environment and the file.

    Raises :class:`InvalidConfig` with a readable message when a value is wrong.
    """
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as error:
        raise InvalidConfig(describe_validation_error(error)) from error


def describe_validation_error(error: ValidationError) -> str:
    """One line per wrong setting: ``name: what is wrong``."""
    lines = []
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "settings"
        lines.append(f"{name}: {problem['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)
