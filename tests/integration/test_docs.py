"""The documentation keeps up with the code: every configuration key the embedded
default config shows (engine/config.cpp, "Every key is shown with its default") has a
row in docs/configuration.md, and every key the loader reads appears in that default."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def default_config_keys() -> set[str]:
    src = (ROOT / "engine" / "config.cpp").read_text()
    text = src.split('R"toml(', 1)[1].split(')toml"', 1)[0]
    keys, section = set(), None
    for line in text.splitlines():
        m = re.match(r"^\s*\[\[?([a-z_]+)\]\]?", line.lstrip("# "))
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^#?\s*([a-z_]+)\s*=", line)
        if m and section:
            keys.add(f"{section}.{m.group(1)}")
    return keys


def loader_keys() -> set[str]:
    """Keys read by the loader: s.integer("name"...), s.duration("name"...), ..."""
    src = (ROOT / "engine" / "config.cpp").read_text()
    return set(re.findall(r'\bs\.(?:integer<[^>]+>|duration|string|string_or|strings|boolean|size|rate|address|'
                          r'list|fraction|tls_policy_value|get)\(\s*"([a-z_]+)"', src))


def test_every_default_key_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    keys = default_config_keys()
    assert len(keys) > 40, sorted(keys)  # the parse found the config
    missing = sorted(k for k in keys if f"| `{k.split('.', 1)[1]}` |" not in doc)
    assert not missing, f"keys without a row in docs/configuration.md: {missing}"


def test_every_loader_key_is_in_the_default_config():
    shown = {k.split(".", 1)[1] for k in default_config_keys()}
    read = loader_keys()
    assert len(read) > 30, sorted(read)
    missing = sorted(read - shown)
    assert not missing, f"keys the loader reads but the embedded default does not show: {missing}"
