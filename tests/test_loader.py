"""The loader API's built-in validation (required_fields, date_fields)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from journal_loader import Loader
from journal_loader.config import config_from_dict
from journal_loader.loader import is_date, strptime_format


def _strptime_ok(value: str, fmt: str) -> bool:
    try:
        dt.datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


date_like = st.builds(
    lambda a, s1, b, s2, c: f"{a}{s1}{b}{s2}{c}",
    st.integers(0, 9999).map(str) | st.text("0123456789", max_size=5),
    st.sampled_from(["/", "-", ".", "", " "]),
    st.integers(0, 99).map(str) | st.text("0123456789x", max_size=3),
    st.sampled_from(["/", "-", ".", ""]),
    st.integers(0, 9999).map(str) | st.text("0123456789", max_size=5),
)


@settings(deadline=None)  # a stall on a loaded CI machine is not a failure
@given(date_like, st.sampled_from(["%m/%d/%Y", "%Y-%m-%d", "%d.%m.%Y"]))
def test_fast_date_check_agrees_with_strptime(value: str, fmt: str) -> None:
    assert is_date(value, fmt) == _strptime_ok(value, fmt)


def test_declared_formats_translate() -> None:
    assert strptime_format("MM/DD/YYYY") == "%m/%d/%Y"
    assert strptime_format("YYYY-MM-DD HH:mm:ss") == "%Y-%m-%d %H:%M:%S"
    assert strptime_format("%d.%m.%Y") == "%d.%m.%Y"


def test_config_rules() -> None:
    cfg = config_from_dict(
        {
            "validation": {
                "required_fields": ["name", "number"],
                "date_fields": {"since": "MM/DD/YYYY"},
            }
        }
    )
    loader = Loader(cfg)
    assert loader.validate({"name": "A", "number": "1", "since": "01/31/2020"}) == []
    assert loader.validate({"name": " ", "number": None, "since": ""}) == [
        "required field 'name' is missing or empty",
        "required field 'number' is missing or empty",
    ]
    assert loader.validate({"name": "A", "number": "1", "since": "31/01/2020"}) == [
        "field 'since': '31/01/2020' is not a date in the format MM/DD/YYYY"
    ]
