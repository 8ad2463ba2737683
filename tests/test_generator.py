"""Tests of bench/generate_registry.py, the synthetic business-registry generator.

The generator is a plain script (no package), loaded here by path.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "generate_registry.py"
EXAMPLE = ROOT / "examples" / "business_registry" / "data" / "business_registry_20251001.csv"
EXAMPLE_ROWS = 3000

HEADER = [
    "Corp Number",
    "Legal Name",
    "Corporation Type",
    "Effective Date",
    "Registered Agent",
    "RA Address 1",
    "RA Address 2",
    "RA City",
    "RA State",
    "RA Zip",
    "HO Address 1",
    "HO Address 2",
    "HO City",
    "HO State",
    "HO Zip",
    "HO Country",
    "HO Location",
]
ZIP_RE = re.compile(r"^\d{5}(-\d{4})?$")
DATE_RE = re.compile(r"^\d{2}/\d{2}/\d{4}$")
POINT_RE = re.compile(r"^POINT \(-?\d+\.\d+ -?\d+\.\d+\)$")
CORP_RE = re.compile(r"^C\d{7}$")


def _load() -> ModuleType:
    name = "generate_registry"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while building the class
    spec.loader.exec_module(module)
    return module


gen = _load()
# (path, GenerationSummary, data rows); the summary class lives in the loaded module.
Sample = tuple[Path, Any, list[list[str]]]


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _valid_date(text: str) -> bool:
    if not DATE_RE.match(text):
        return False
    try:
        dt.datetime.strptime(text, "%m/%d/%Y")
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """A 3,000-row file with the default seed (the same as the shipped example)."""
    path = tmp_path_factory.mktemp("gen") / "registry.csv"
    summary = gen.generate(path, EXAMPLE_ROWS)
    header, rows = _read(path)
    assert header == HEADER
    return path, summary, rows


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    sa = gen.generate(a, 2000, seed=7)
    sb = gen.generate(b, 2000, seed=7)
    gen.generate(c, 2000, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert sa.to_dict() | {"path": ""} == sb.to_dict() | {"path": ""}
    assert a.read_bytes() != c.read_bytes()


def test_gzip_is_deterministic_and_holds_the_same_csv(tmp_path: Path) -> None:
    plain = tmp_path / "r.csv"
    gz1 = tmp_path / "one.csv.gz"
    gz2 = tmp_path / "two.csv.gz"  # a different name must not change the bytes
    gen.generate(plain, 500)
    summary = gen.generate(gz1, 500, gzip=True)
    gen.generate(gz2, 500, gzip=True)
    assert gz1.read_bytes() == gz2.read_bytes()
    assert gzip.decompress(gz1.read_bytes()) == plain.read_bytes()
    assert summary.gzip and summary.bytes == gz1.stat().st_size


def test_example_file_equals_regeneration(tmp_path: Path) -> None:
    out = tmp_path / EXAMPLE.name
    gen.generate(out, EXAMPLE_ROWS, gen.DEFAULT_SEED)
    assert EXAMPLE.is_file(), "regenerate it: python bench/generate_registry.py ... --rows 3000"
    assert out.read_bytes() == EXAMPLE.read_bytes()
    assert EXAMPLE.stat().st_size < 1_000_000


# -- format ---------------------------------------------------------------------------------


def test_header_and_encoding(sample: Sample) -> None:
    path, summary, rows = sample
    data = path.read_bytes()
    assert data.startswith(b"Corp Number,Legal Name,Corporation Type,Effective Date,")
    assert data.splitlines()[0].decode() == ",".join(HEADER)
    assert not data.startswith(b"\xef\xbb\xbf")  # no BOM
    assert b"\r" not in data  # LF line ends
    assert data.endswith(b"\n")
    data.decode("utf-8")  # valid UTF-8
    assert all(len(row) == 17 for row in rows)
    assert len(rows) == summary.rows == EXAMPLE_ROWS
    assert summary.bytes == len(data)


def test_zero_rows_gives_a_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    summary = gen.generate(path, 0)
    assert path.read_bytes() == (",".join(HEADER) + "\n").encode()
    assert summary.rows == 0 and summary.distinct_companies == 0 and summary.distinct_agents == 0
    assert not (summary.missing_name or summary.missing_type or summary.bad_zip)
    assert not summary.bad_date


def test_good_rows_are_well_formed(sample: Sample) -> None:
    _path, summary, rows = sample
    bad = set(summary.skipped) | set(summary.failed)
    for i, row in enumerate(rows):
        if i in bad:
            continue
        (number, name, ctype, date, agent, ra1, _ra2, ra_city, ra_state, ra_zip) = row[:10]
        (ho1, _ho2, ho_city, ho_state, ho_zip, country, location) = row[10:]
        assert CORP_RE.match(number), row
        assert name.strip() and ctype and agent, row
        assert _valid_date(date), row
        assert ZIP_RE.match(ra_zip) and ZIP_RE.match(ho_zip), row
        assert ra1 and ra_city and ho1 and ho_city, row
        assert re.fullmatch(r"[A-Z]{2}", ra_state) and re.fullmatch(r"[A-Z]{2}", ho_state), row
        assert re.fullmatch(r"[A-Z]{2}", country), row
        assert location == "" or POINT_RE.match(location), row


# -- bad rows -------------------------------------------------------------------------------


def test_reported_bad_rows_are_bad_and_the_others_are_not(
    sample: Sample,
) -> None:
    _path, s, rows = sample
    kinds = {k: set(getattr(s, k)) for k in gen.BAD_KINDS}
    for k, offsets in kinds.items():
        assert getattr(s, k) == sorted(offsets), f"{k} offsets are not sorted/unique"
    for a in kinds:
        for b in kinds:
            assert a == b or not kinds[a] & kinds[b], "a row has one defect at most"
    for i, row in enumerate(rows):
        assert (row[1] == "") == (i in kinds["missing_name"]), (i, row)
        assert (row[2] == "") == (i in kinds["missing_type"]), (i, row)
        zips_ok = bool(ZIP_RE.match(row[9]) and ZIP_RE.match(row[14]))
        assert zips_ok == (i not in kinds["bad_zip"]), (i, row)
        assert _valid_date(row[3]) == (i not in kinds["bad_date"]), (i, row)


def test_bad_row_rates_are_small_and_nonzero(
    sample: Sample,
) -> None:
    _path, s, rows = sample
    for k in gen.BAD_KINDS:
        n = len(getattr(s, k))
        assert 0.001 * len(rows) <= n <= 0.01 * len(rows), (k, n)
    assert s.good_rows == len(rows) - len(s.skipped) - len(s.failed)
    # The malformed values are the ones the brief names (among others).
    values = {rows[i][9] for i in s.bad_zip} | {rows[i][14] for i in s.bad_zip}
    assert values & {"1234", "ABCDE", "123456"}


def test_rates_hold_at_scale_and_no_bad_rows_turns_them_off(tmp_path: Path) -> None:
    s = gen.generate(tmp_path / "a.csv", 20_000, seed=3)
    for k, rate in gen.BAD_RATES.items():
        assert len(getattr(s, k)) == round(20_000 * rate)
    clean = gen.generate(tmp_path / "b.csv", 20_000, seed=3, bad_rows=False)
    assert not (clean.skipped or clean.failed)
    _header, rows = _read(tmp_path / "b.csv")
    assert all(r[1] and r[2] and _valid_date(r[3]) for r in rows)
    assert all(ZIP_RE.match(r[9]) and ZIP_RE.match(r[14]) for r in rows)


# -- shared and tricky values ---------------------------------------------------------------


def test_agents_are_shared(sample: Sample) -> None:
    _path, s, rows = sample
    agents = Counter(row[4] for row in rows)
    top_agent, top = agents.most_common(1)[0]
    assert top >= 50, agents.most_common(5)
    assert sum(1 for n in agents.values() if n >= 50) >= 5  # a pool of commercial agents
    assert sum(1 for n in agents.values() if n == 1) >= 300  # many one-off individuals
    assert any(1 < n <= 5 for n in agents.values())  # individuals used a few times
    assert any(re.fullmatch(r"[A-Z' -]+, [A-Z]+", a) for a in agents)  # "O'BRIEN, PATRICK"
    assert s.distinct_agents == len(agents)
    assert top_agent == "CT CORPORATION SYSTEM"


def test_addresses_are_shared_and_streets_repeat_across_states(
    sample: Sample,
) -> None:
    _path, _s, rows = sample
    addresses: Counter[tuple[str, str, str]] = Counter()
    states_of_street: dict[str, set[str]] = defaultdict(set)
    states_of_city: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        for line, city, state in ((row[5], row[7], row[8]), (row[10], row[12], row[13])):
            addresses[(line, city, state)] += 1
            states_of_street[line].add(state)
            states_of_city[city].add(state)
    assert addresses.most_common(1)[0][1] >= 20  # an office building with many companies
    assert any(len(states) >= 2 for states in states_of_street.values())
    assert len(states_of_street["100 MAIN ST"]) >= 2
    assert {"IL", "MA"} <= states_of_city["SPRINGFIELD"]


def test_an_address_has_one_zip_and_one_location(sample: Sample) -> None:
    """Zip and location belong to the address (street + city + state), not to the row."""
    _path, s, rows = sample
    failed = set(s.failed)
    zips: dict[tuple[str, str, str], str] = {}
    locations: dict[tuple[str, str, str], str] = {}
    for i, row in enumerate(rows):
        if i in failed:
            continue
        ra, ho = (row[5], row[7], row[8]), (row[10], row[12], row[13])
        assert zips.setdefault(ra, row[9]) == row[9], (ra, row[9], zips[ra])
        assert zips.setdefault(ho, row[14]) == row[14], (ho, row[14], zips[ho])
        assert locations.setdefault(ho, row[16]) == row[16], (ho, row[16], locations[ho])


def test_company_names_rarely_repeat_across_corp_numbers(sample: Sample) -> None:
    _path, _s, rows = sample
    numbers: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row[1]:
            numbers[row[1]].add(row[0])
    shared = sum(1 for n in numbers.values() if len(n) > 1)
    assert shared <= 0.02 * len(numbers), shared


def test_names_have_csv_and_unicode_traps(sample: Sample) -> None:
    path, _s, rows = sample
    names = [row[1] for row in rows]
    assert any("," in n for n in names)
    assert any('"' in n for n in names)
    assert any("'" in n for n in names)
    assert any(any(ord(ch) > 127 for ch in n) for n in names)
    assert any(n != n.upper() for n in names)  # some names are not upper case
    # csv quoting round-trips: the raw file holds doubled quotes for embedded ones.
    assert '""' in path.read_text(encoding="utf-8")
    countries = Counter(row[15] for row in rows)
    assert countries["US"] > 0.8 * len(rows) and len(countries) > 1
    assert any(row[16] == "" for row in rows) and any(row[16] for row in rows)
    assert any(row[9].startswith("0") or row[14].startswith("0") for row in rows)
    assert any("-" in row[14] for row in rows)  # ZIP+4


def test_repeated_corp_numbers_are_name_variants(
    sample: Sample,
) -> None:
    _path, s, rows = sample
    first: dict[str, int] = {}
    repeats: list[int] = []
    for i, row in enumerate(rows):
        if row[0] in first:
            repeats.append(i)
        else:
            first[row[0]] = i
    assert repeats == s.repeated_corp and repeats
    assert len(first) == s.distinct_companies
    bad = set(s.skipped) | set(s.failed)
    assert s.good_companies == len(first) - len(bad)

    suffix_words = {
        w
        for suffix, others in gen.SUFFIX_SPELLINGS.items()
        for spelling in (suffix, *others)
        for w in _words(spelling)
    } - {"FOUNDATION", "ASSOCIATION", "SOCIETY", "ALLIANCE", "COUNCIL", "FUND"}

    def core(name: str) -> list[str]:
        words = _words(name)
        while words and words[-1] in suffix_words:
            words.pop()
        return words

    for i in repeats:
        original = rows[first[rows[i][0]]]
        assert first[rows[i][0]] not in bad and i not in bad
        assert rows[i][1] != original[1]  # written differently...
        assert rows[i][2] == original[2]  # ...same company...
        assert core(rows[i][1]) == core(original[1]), (rows[i][1], original[1])  # ...same name


def _words(name: str) -> list[str]:
    """Upper-case words of ``name`` without punctuation (case/space/punctuation-blind)."""
    return re.sub(r"[^\w&' ]", "", name.upper()).split()


# -- CLI ------------------------------------------------------------------------------------


def test_cli_prints_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "cli.csv.gz"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--rows", "300", "--seed", "5", "--gzip"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert report["rows"] == 300 and report["gzip"] is True
    assert report["bytes"] == out.stat().st_size
    assert set(gen.BAD_KINDS) <= report.keys()
    assert {"distinct_agents", "distinct_companies", "rows_per_second"} <= report.keys()
    direct = gen.generate(tmp_path / "direct.csv.gz", 300, 5, gzip=True)
    assert out.read_bytes() == (tmp_path / "direct.csv.gz").read_bytes()
    assert report["bad_zip"] == direct.bad_zip


def test_cli_no_bad_rows(tmp_path: Path) -> None:
    out = tmp_path / "clean.csv"
    assert gen.main([str(out), "--rows", "1000", "--no-bad-rows"]) == 0
    _header, rows = _read(out)
    assert len(rows) == 1000 and all(r[1] and r[2] for r in rows)


def test_negative_rows_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        gen.generate(tmp_path / "x.csv", -1)
