"""`config check` against reality, "did you mean" for typos, strict numbers (issues 13, 9).

A config is checked when it is read (date formats, key names, numbers, node types), and
against the input file when there is one (`config check CONFIG [FILE]`): every column the
loader or the facts: mapping reads, and every field required_fields / date_fields name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from journal_loader.config import config_from_dict
from journal_loader.errors import ConfigError
from journal_loader.storage import open_store
from tests.support.example import EXAMPLE_DIR
from tests.support.licences import licences_config, licences_csv
from tests.support.loaders import write_csv
from tests.support.ops import pairs_config, run_cli
from tests.support.snapshots import sources_snapshot

# --- date formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "unknown"),
    [("yyyy-mm-dd", "'yyyy'"), ("ISO", "'ISO'"), ("DD-Mon-YYYY", "'Mon'"), ("%Y-%q-%d", "'%q'")],
)
def test_an_unknown_date_format_is_an_error_naming_the_key(declared: str, unknown: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"validation": {"date_fields": {"issued": declared}}})
    message = str(e.value)
    assert "validation.date_fields.issued" in message and unknown in message
    assert "MM/DD/YYYY" in message and "YYYY-MM-DD" in message  # the accepted forms


@pytest.mark.parametrize(
    "declared", ["MM/DD/YYYY", "YYYY-MM-DD", "DD.MM.YYYY", "YYYYMMDD", "YYYY-MM-DDTHH:mm:ss"]
)
def test_the_accepted_date_formats_still_pass(declared: str) -> None:
    cfg = config_from_dict({"validation": {"date_fields": {"issued": declared}}})
    assert cfg.validation.date_fields == {"issued": declared}


def test_a_bad_date_format_in_a_facts_mapping_fails_config_check(tmp_path: Path) -> None:
    data = yaml.safe_load((EXAMPLE_DIR / "facts.yaml").read_text())
    data["source"]["file"] = str(EXAMPLE_DIR / data["source"]["file"])
    data["facts"]["fields"]["effective_date"] = {"column": "Effective Date", "date": "ISO"}
    path = tmp_path / "facts.yaml"
    path.write_text(yaml.safe_dump(data))
    done = run_cli("config", "check", path, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "facts.fields.effective_date" in done.stderr and "'ISO'" in done.stderr


# --- against the file -----------------------------------------------------------------------


def test_config_check_reads_the_file_and_names_the_closest_column(tmp_path: Path) -> None:
    licences_csv(tmp_path / "licences_20260101.csv", 5)
    config = licences_config(tmp_path, column="Licence Number")
    for args in ([config], [config, tmp_path / "licences_20260101.csv"]):
        done = run_cli("config", "check", *args, cwd=tmp_path)
        assert done.returncode == 2, done.stdout
        assert "'Licence Number'" in done.stderr
        assert "'Licensee', 'Licence No', 'City', 'State'" in done.stderr
        assert "did you mean 'Licence No'?" in done.stderr
    # without the file: nothing to check it against, and it says so
    (tmp_path / "licences_20260101.csv").unlink()
    done = run_cli("config", "check", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(missing" in done.stdout


def test_config_check_checks_required_and_date_fields(tmp_path: Path) -> None:
    licences_csv(tmp_path / "licences_20260101.csv", 5)
    config = licences_config(
        tmp_path,
        column="Licence No",
        extra="validation:\n  required_fields: [licensees, number]\n"
        "  date_fields: {numbr: MM/DD/YYYY}\n",
    )
    done = run_cli("config", "check", config, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "validation.required_fields: 'licensees'" in done.stderr
    assert "did you mean 'licensee'?" in done.stderr
    assert "validation.date_fields: 'numbr'" in done.stderr
    assert "did you mean 'number'?" in done.stderr
    assert "validation.required_fields: 'number'" not in done.stderr  # that one is there


def test_config_check_finds_dates_the_format_does_not_read(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "licences_20260101.csv",
        ["Licensee", "Licence No", "City", "State", "Issued"],
        [[f"D {i}", f"L-{i}", "X", "IL", f"2025-10-0{i + 1}"] for i in range(5)],
    )
    config = licences_config(
        tmp_path, column="Licence No", extra="validation:\n  date_fields: {issued: MM/DD/YYYY}\n"
    )
    loader = tmp_path / "licence_loader.py"
    loader.write_text(
        loader.read_text().replace('raw["City"]}', 'raw["City"], "issued": raw["Issued"]}')
    )
    assert '"issued": raw["Issued"]' in loader.read_text()
    done = run_cli("config", "check", config, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "validation.date_fields.issued" in done.stderr
    assert "'2025-10-01'" in done.stderr and "MM/DD/YYYY" in done.stderr


def _facts_config(tmp_path: Path, column: str) -> Path:
    data = yaml.safe_load((EXAMPLE_DIR / "facts.yaml").read_text())
    data["source"]["file"] = str(EXAMPLE_DIR / data["source"]["file"])
    data["facts"]["fields"]["ho_city"] = {"column": column, "upper": True}
    path = tmp_path / "facts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_config_check_catches_a_missing_facts_column(tmp_path: Path) -> None:
    done = run_cli("config", "check", _facts_config(tmp_path, "HO Cty"), cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "no column 'HO Cty'" in done.stderr and "did you mean 'HO City'?" in done.stderr
    good = run_cli("config", "check", EXAMPLE_DIR / "facts.yaml", cwd=tmp_path)
    assert good.returncode == 0, good.stderr


def test_a_missing_column_at_run_time_is_exit_2(db_url: str, tmp_path: Path) -> None:
    done = run_cli("run", _facts_config(tmp_path, "HO Cty"), "--db", db_url, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "did you mean 'HO City'?" in done.stdout + done.stderr
    store = open_store(db_url)
    try:
        assert sources_snapshot(store)[0][2] == "failed"  # resumable once the mapping is fixed
    finally:
        store.dispose()


# --- did you mean ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"validation": {"requried_fields": ["a"]}},
            "validation.requried_fields: unknown key; did you mean 'required_fields'?",
        ),
        ({"loggin": {"level": "INFO"}}, "loggin: unknown key; did you mean 'logging'?"),
        (
            {"graph": {"fuzzy_matching": {"Company": {"treshold": 0.9}}}},
            "graph.fuzzy_matching.Company.treshold: unknown key; did you mean 'threshold'?",
        ),
        (
            {"graph": {"propose_api": {"funtion": "f"}}},
            "graph.propose_api.funtion: unknown key; did you mean 'function'?",
        ),
        (
            {"graph": {"node_types": ["Company"], "fuzzy_matching": {"Compny": True}}},
            "did you mean 'Company'?",
        ),
        (
            {
                "graph": {
                    "relationship_types": ["LOCATED_IN", "OPPOSES"],
                    "opposing_relationships": [["LOCATD_IN", "OPPOSES"]],
                }
            },
            "did you mean 'LOCATED_IN'?",
        ),
    ],
)
def test_unknown_keys_and_types_get_a_suggestion(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    assert expected in str(e.value)


def test_a_facts_mapping_suggests_keys_and_types(tmp_path: Path) -> None:
    base = {
        "graph": {"node_types": ["Company", "City"], "relationship_types": ["LOCATED_IN"]},
        "facts": [
            {
                "source": {"type": "Company", "nmae": "Name"},
                "target": {"type": "City", "name": "City"},
                "relationship": "LOCATED_IN",
            }
        ],
    }
    from journal_loader.facts import FactsLoader

    with pytest.raises(ConfigError) as e:
        FactsLoader(config_from_dict(base))
    assert "did you mean 'name'?" in str(e.value)
    base["facts"][0]["source"] = {"type": "Compnay", "name": "Name"}  # type: ignore[index]
    with pytest.raises(ConfigError) as e:
        FactsLoader(config_from_dict(base))
    assert "'Compnay' is not one of graph.node_types" in str(e.value)
    assert "did you mean 'Company'?" in str(e.value)
    base["facts"][0]["source"] = {"type": "Company", "name": "Name"}  # type: ignore[index]
    base["facts"][0]["relationship"] = "LOCATED"  # type: ignore[index]
    with pytest.raises(ConfigError) as e:
        FactsLoader(config_from_dict(base))
    assert "did you mean 'LOCATED_IN'?" in str(e.value)


def test_a_missing_class_is_named_with_the_classes_in_the_file(tmp_path: Path) -> None:
    config = pairs_config(tmp_path)
    config.write_text(config.read_text().replace(":PairLoader", ":PairsLoader"))
    done = run_cli("config", "check", config, cwd=tmp_path)
    assert done.returncode == 2
    assert "class PairsLoader not found in" in done.stderr
    assert "Loader classes in that file: PairLoader" in done.stderr
    assert "did you mean 'PairLoader'?" in done.stderr
    assert "is not a journal_loader.Loader subclass" not in done.stderr


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [(["stauts"], "status"), (["dlq", "lsit"], "list"), (["projections", "rebiuld"], "rebuild")],
)
def test_a_misspelt_command_gets_a_suggestion(args: list[str], suggestion: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert f"Did you mean '{suggestion}'?" in done.stderr, done.stderr


# --- strict numbers (issue 9) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("processing", "max_retries", True),
        ("processing", "batch_size", False),
        ("processing", "retry_delay", True),
        ("processing", "max_failure_rate", True),
        ("metrics", "port", True),
        ("graph", "conflict_penalty", True),
        ("database", "port", True),
        ("source", "max_record_bytes", True),
    ],
)
def test_a_boolean_is_not_a_number(section: str, key: str, value: bool) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({section: {key: value}})
    assert f"{section}.{key}" in str(e.value)


def test_numbers_still_come_from_strings_and_ints() -> None:
    cfg = config_from_dict(
        {"processing": {"retry_delay": 2, "max_retries": "3"}, "database": {"port": "5432"}}
    )
    assert cfg.processing.retry_delay == 2.0 and cfg.processing.max_retries == 3
    assert cfg.database.port == 5432
    assert config_from_dict({"graph": {"fuzzy_matching": {"Company": True}}}).graph.fuzzy_matching
