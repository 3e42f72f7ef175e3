"""The exporter's configuration: ``schema`` declares it (frozen dataclasses, defaults), ``checks`` checks one
value at a time, ``load`` reads a YAML file into it; ``web`` loads the separate web config (TLS, basic auth)."""

from exporter.config.checks import ConfigError, parse_duration, parse_listen_address
from exporter.config.load import build_config, load_config
from exporter.config.schema import AuthConfig, ClusterConfig, Config

__all__ = [
    "AuthConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "build_config",
    "load_config",
    "parse_duration",
    "parse_listen_address",
]
