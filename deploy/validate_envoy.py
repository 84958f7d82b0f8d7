"""Parses an Envoy bootstrap (YAML) against Envoy's own API definitions (PyPI's
`envoy-data-plane`, generated from Envoy's protos): an unknown field, a wrong type or an
unregistered `@type` anywhere, typed_config included, is an error. Usage:
`validate_envoy.py FILE…` (exit 1 on the first invalid file)."""

import importlib
import sys

import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap


def type_urls(node):
    if isinstance(node, dict):
        url = node.get("@type")
        if isinstance(url, str):
            yield url
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_urls(value)


def register(url):
    """Imports the module defining `url`'s message, which registers it for Any."""
    full = url.rsplit("/", 1)[-1]
    package = full.rsplit(".", 1)[0]
    importlib.import_module("envoy_data_plane." + package)


for path in sys.argv[1:]:
    with open(path) as f:
        config = yaml.safe_load(f)
    try:
        for url in set(type_urls(config)):
            register(url)
        Bootstrap.from_dict(config)
    except Exception as e:  # noqa: BLE001 - every failure is the file's
        print(f"{path}: invalid Envoy bootstrap: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{path}: a valid Envoy bootstrap")
