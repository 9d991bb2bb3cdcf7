"""The gateway's configuration: one TOML file read with `tomllib` into frozen dataclasses.

- `schema.py`: every setting's name, type, default and simple checks (the dataclasses).
- `load.py`: reading the file, trunks, routes and secrets (`load_config`, `parse_config`).
- `rules.py`: the `[section]` tables and the rules between keys (`RULES`).
- `check.py`: the generic checks (a table against a dataclass, one field's `setting` checks).

Route matching lives in `gateway/routes.py`, the rendering of a route's Orga settings for one
call in `gateway/orga/settings.py`. This package's face re-exports what the rest imports.

How to add a key:
- `[section]` key: a field with its default on the section's dataclass in `schema.py`, declared
  with `setting(default, lo=, hi=, unit=, ip=, template=, choices=)` when it has a simple
  check; a rule between keys goes into `rules.RULES`. Then `config/gateway.example.toml` and
  the README.
- `[[trunks]]` key: a field at the end of `TrunkConfig` (checked like a section key).
- `[[routes]]` key: an optional field on `Route` (None = as in `[orga]`), resolved in
  `gateway/orga/settings.py:session_params`.
- A new `[section]`: a dataclass in `schema.py` and a field of that type on `Config`.
"""

from gateway.config.load import (
    API_KEY_ENV,
    API_KEY_FILE_ENV,
    load_config,
    parse_config,
    read_secret_file,
)
from gateway.config.schema import (
    CODECS,
    DEFAULT_ROUTES,
    DEFAULT_TRUNKS,
    DIGEST_ALGORITHMS,
    PLACEHOLDERS,
    TRANSPORTS,
    ApiConfig,
    Config,
    ConfigError,
    HttpConfig,
    IPNetwork,
    LimitsConfig,
    McpConfig,
    OrgaConfig,
    PrivacyConfig,
    RecordingConfig,
    Route,
    RtpConfig,
    Secret,
    SecurityConfig,
    SipConfig,
    TrunkConfig,
    WebhooksConfig,
    WorkersConfig,
    is_open_public,
    split_hostport,
)

__all__ = [
    "API_KEY_ENV", "API_KEY_FILE_ENV", "CODECS", "DEFAULT_ROUTES", "DEFAULT_TRUNKS",
    "DIGEST_ALGORITHMS", "PLACEHOLDERS", "TRANSPORTS", "ApiConfig", "Config", "ConfigError",
    "HttpConfig", "IPNetwork", "LimitsConfig", "McpConfig", "OrgaConfig", "PrivacyConfig",
    "RecordingConfig", "Route", "RtpConfig", "Secret", "SecurityConfig", "SipConfig",
    "TrunkConfig", "WebhooksConfig", "WorkersConfig", "is_open_public", "load_config",
    "parse_config", "read_secret_file", "split_hostport",
]
