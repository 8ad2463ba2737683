"""`journal-loader config check` and the config items of issue 6: the schema, key paths in
errors, ${VAR} interpolation, secrets masked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from journal_loader.config import LoggingSection, config_from_dict
from journal_loader.errors import ConfigError
from tests.support.example import REPO
from tests.support.ops import pairs_config, run_cli

FULL = """\
loader:
  name: pairs
  class: pairs_loader.py:PairLoader
source:
  type: pairs
  file: pairs.csv
  update_frequency: quarterly
database:
  driver: postgresql
  host: ${DB_HOST}
  port: ${DB_PORT:-5432}
  name: graph
  user: loader
  password: ${DB_PASSWORD}
processing:
  batch_size: 500
  checkpoint_interval: 1000
  max_retries: 3
  retry_delay: 1.5
validation:
  required_fields: [name]
  date_fields:
    founded: MM/DD/YYYY
logging:
  level: WARNING
  format: json
  file: logs/pairs.log
  max_size: 5MB
  retention: 3
metrics:
  textfile: /var/lib/node_exporter/textfile_collector/pairs.prom
hooks:
  on_failure: mail -s "pairs failed" ops@example.com
"""

ENV = {"DB_HOST": "db.internal", "DB_PASSWORD": "Pw-Sentinel-42"}


@pytest.fixture
def full_config(tmp_path: Path) -> Path:
    pairs_config(tmp_path)
    path = tmp_path / "full.yaml"
    path.write_text(FULL)
    return path


def test_the_full_schema_resolves_with_secrets_masked(full_config: Path) -> None:
    if "DB_PORT" in os.environ:
        pytest.skip("DB_PORT is set in this environment")
    r = run_cli("config", "check", full_config, env=ENV, cwd=full_config.parent)
    assert r.returncode == 0, r.stderr
    assert "Pw-Sentinel-42" not in r.stdout + r.stderr
    body = yaml.safe_load(r.stdout)
    assert body["database"]["host"] == "db.internal"
    assert body["database"]["port"] == 5432  # the default, as an int
    assert body["database"]["password"] == "***"
    assert body["processing"]["batch_size"] == 500
    assert body["validation"]["date_fields"] == {"founded": "MM/DD/YYYY"}
    assert body["logging"]["max_size"] == "5MB"
    assert body["source"]["update_frequency"] == "quarterly"
    assert "# database: postgresql+psycopg://loader:***@db.internal:5432/graph" in r.stdout
    assert "PairLoader imported" in r.stdout
    assert "${" not in r.stdout


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            {"processing": {"batch_size": "many"}},
            "processing.batch_size: Input should be a valid integer",
        ),
        ({"processing": {"batch_sise": 10}}, "processing.batch_sise: unknown key"),
        ({"loggin": {"level": "INFO"}}, "loggin: unknown key"),
        ({"logging": {"level": "LOUD"}}, "logging.level: Input should be 'DEBUG', 'INFO'"),
        ({"logging": {"format": "xml"}}, "logging.format: Input should be 'text' or 'json'"),
        ({"logging": {"max_size": "huge"}}, "logging.max_size: Value error, must be a size like"),
        (
            {"logging": {"retention": -1}},
            "logging.retention: Input should be greater than or equal to 0",
        ),
        (
            {"source": {"update_frequency": "hourly"}},
            "source.update_frequency: Value error, must be one of",
        ),
        (
            {"processing": {"checkpoint_interval": 15}},
            "checkpoint_interval must be a multiple of batch_size",
        ),
        (
            {"validation": {"required_fields": "name"}},
            "validation.required_fields: Input should be a valid list",
        ),
        ({"metrics": {"port": 70000}}, "metrics.port: Input should be less than or equal to 65535"),
        (
            {"metrics": {"pushgateway": "pushgateway:9091"}},
            "metrics.pushgateway: Value error, must be an http",
        ),
        ({"hooks": {"timeout": 0}}, "hooks.timeout: Input should be greater than 0"),
        ({"database": {"port": "${DB_PORT}"}}, "database.port: Input should be a valid integer"),
    ],
)
def test_errors_name_the_key_and_what_was_expected(
    tmp_path: Path, edit: dict[str, dict[str, object]], expected: str
) -> None:
    pairs_config(tmp_path)
    data = yaml.safe_load((tmp_path / "pairs.yaml").read_text())
    for section, values in edit.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data))
    r = run_cli("config", "check", path, env={"DB_PORT": "five"}, cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert expected in r.stderr, r.stderr
    assert r.stdout == ""


def test_a_missing_variable_is_an_error_naming_it(full_config: Path) -> None:
    r = run_cli(
        "config", "check", full_config, env={"DB_PASSWORD": "x" * 8}, cwd=full_config.parent
    )
    if "DB_HOST" in os.environ:
        pytest.skip("DB_HOST is set in this environment")
    assert r.returncode == 2
    assert "database.host: environment variable DB_HOST is not set" in r.stderr
    assert "${DB_HOST}" not in r.stdout


def test_a_missing_variable_never_reaches_the_driver(tmp_path: Path) -> None:
    if "DB_HOST" in os.environ:
        pytest.skip("DB_HOST is set in this environment")
    config = pairs_config(tmp_path, extra="database:\n  url: postgresql+psycopg://u@${DB_HOST}/g\n")
    r = run_cli("run", config, cwd=tmp_path)
    assert r.returncode == 2
    assert "environment variable DB_HOST is not set" in r.stderr
    assert "connection" not in r.stderr.lower()


def test_a_variable_cannot_inject_yaml(tmp_path: Path) -> None:
    config = pairs_config(tmp_path, extra="logging:\n  file: ${LOG_FILE}\n")
    r = run_cli("config", "check", config, env={"LOG_FILE": "x.log\n  level: DEBUG"}, cwd=tmp_path)
    assert r.returncode == 0
    body = yaml.safe_load(r.stdout.split("\n", 4)[-1])
    assert body["logging"]["level"] == "INFO"
    assert body["logging"]["file"] == "x.log\n  level: DEBUG"


def test_an_unexpanded_reference_is_refused(tmp_path: Path) -> None:
    """A default holding another ${...} is expanded in turn; a variable missing there too is
    an error naming the key, never a literal ${...} shown as valid."""
    if "B_HOST" in os.environ or "A_HOST" in os.environ:
        pytest.skip("A_HOST/B_HOST set in this environment")
    config = pairs_config(
        tmp_path, extra="database:\n  host: ${A_HOST:-${B_HOST}}\n  driver: postgresql\n"
    )
    r = run_cli("config", "check", config, cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert "database.host: environment variable B_HOST is not set" in r.stderr


def test_nested_default_does_not_leak_into_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("A_HOST", raising=False)
    monkeypatch.delenv("B_HOST", raising=False)
    with pytest.raises(ConfigError, match=r"database\.host: environment variable B_HOST"):
        config_from_dict({"database": {"host": "${A_HOST:-${B_HOST}}"}})
    monkeypatch.setenv("B_HOST", "db.internal")
    cfg = config_from_dict({"database": {"host": "${A_HOST:-${B_HOST}}"}})
    assert cfg.database.host == "db.internal"
    for bad in ("${1A}", "${A B}", "${A", "${A:-x"):
        with pytest.raises(ConfigError, match=r"database\.host: (malformed|unterminated)"):
            config_from_dict({"database": {"host": bad}})


def test_the_example_config_checks(tmp_path: Path) -> None:
    r = run_cli("config", "check", REPO / "examples" / "business_registry" / "loader.yaml")
    assert r.returncode == 0, r.stderr
    assert "BusinessRegistryLoader imported" in r.stdout


def test_config_check_of_a_missing_or_broken_file(tmp_path: Path) -> None:
    r = run_cli("config", "check", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "config file not found" in r.stderr
    (tmp_path / "broken.yaml").write_text("loader: [unclosed\n")
    r = run_cli("config", "check", tmp_path / "broken.yaml")
    assert r.returncode == 2 and "invalid YAML" in r.stderr and "line" in r.stderr
    (tmp_path / "noloader.yaml").write_text("loader:\n  class: missing.py:Nope\n")
    r = run_cli("config", "check", tmp_path / "noloader.yaml")
    assert r.returncode == 2 and "missing.py" in r.stderr
    r = run_cli("config", "check", tmp_path / "noloader.yaml", "--no-loader")
    assert r.returncode == 0


def test_password_never_shown_even_in_errors(tmp_path: Path) -> None:
    pairs_config(tmp_path)
    path = tmp_path / "pw.yaml"
    path.write_text(
        "loader:\n  class: pairs_loader.py:PairLoader\n"
        "database:\n  host: h\n  password: ${DB_PASSWORD}\n  port: notaport\n"
    )
    r = run_cli("config", "check", path, env={"DB_PASSWORD": "Pw-Sentinel-42"}, cwd=tmp_path)
    assert r.returncode == 2 and "database.port" in r.stderr
    assert "Pw-Sentinel-42" not in r.stdout + r.stderr


def test_sizes() -> None:
    assert LoggingSection.size_in_bytes("10MB") == 10 * 1024 * 1024
    assert LoggingSection.size_in_bytes("512KB") == 512 * 1024
    assert LoggingSection.size_in_bytes("1GiB") == 1024**3
    assert LoggingSection.size_in_bytes("2048") == 2048
    assert LoggingSection(max_size="0", retention=0).max_bytes == 0
    with pytest.raises(ValueError):
        LoggingSection.size_in_bytes("ten megs")
