#!/usr/bin/env python3
"""Deterministic generator of a synthetic state business-registry CSV.

The file imitates a state's public business-entity export: one row per filing, with the
entity, its registered agent and two addresses (the registered agent's and the head
office's). It is built to exercise a knowledge-graph loader:

* shared nodes: a few commercial registered agents serve a large share of the companies,
  office buildings host many companies, and individual agents appear once or a few times;
* identity traps: the same street line in different cities/states (``100 MAIN ST`` in
  SPRINGFIELD, IL and SPRINGFIELD, MA are two addresses), the same city name in several
  states, the same company repeated under its Corp Number with its name written
  differently (case, punctuation, whitespace);
* CSV traps: commas, double quotes and apostrophes in names, non-ASCII letters, zips with
  leading zeros;
* deliberately bad rows at small, exact rates, whose 0-based data-row offsets are reported
  in the :class:`GenerationSummary`: missing Legal Name or Corporation Type (a loader
  should skip them), malformed zips or dates (a loader should fail them).

Output is a pure function of ``(rows, seed, bad_rows)``: same arguments, byte-identical
file (gzip output too: the gzip header carries no name and no timestamp).

Usable three ways: ``python bench/generate_registry.py OUT.csv --rows N``; imported by path
from tests and benchmarks (``importlib``); or copied anywhere (standard library only).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip as gzip_module
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

__all__ = [
    "BAD_KINDS",
    "COLUMNS",
    "DEFAULT_SEED",
    "GenerationSummary",
    "generate",
    "main",
]

DEFAULT_SEED = 20251001

COLUMNS: tuple[str, ...] = (
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
)

# Column indexes, for readers of this module (tests, benchmarks).
COL = {name: i for i, name in enumerate(COLUMNS)}

BAD_KINDS: tuple[str, ...] = ("missing_name", "missing_type", "bad_zip", "bad_date")

# Exact share of the rows of each bad kind (round(rows * rate) rows each; the kinds are
# mutually exclusive: a bad row has exactly one defect).
BAD_RATES: dict[str, float] = {
    "missing_name": 0.003,
    "missing_type": 0.002,
    "bad_zip": 0.004,
    "bad_date": 0.003,
}
# Share of the rows that repeat an earlier (good) row's Corp Number, with the company name
# written differently. These rows are valid; they are the only repeated Corp Numbers.
REPEAT_RATE = 0.005

# Malformed values. None of them matches ``^\d{5}(-\d{4})?$`` / ``MM/DD/YYYY`` (a real date).
BAD_ZIPS: tuple[str, ...] = ("1234", "ABCDE", "123456", "9021", "6060I", "12345-67", "0000")
BAD_DATES: tuple[str, ...] = (
    "13/45/2020",
    "2020-01-05",
    "02/30/2021",
    "00/12/2019",
    "31/12/2018",
    "11/31/2022",
    "06/15/20O4",
)

GZIP_LEVEL = 3  # fast (the benchmarks write big files), ~4x smaller than the CSV

HOME_STATE = "IL"
FIRST_DATE = dt.date(1950, 1, 1)
LAST_DATE = dt.date(2025, 9, 30)  # the file is the 2025-10-01 extract

# --------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------

# (city, state, country, base zip, lon, lat). Several city names occur in more than one
# state on purpose. Zips with a leading zero (New England, Puerto Rico) on purpose.
CITIES: tuple[tuple[str, str, str, int, float, float], ...] = (
    ("CHICAGO", "IL", "US", 60601, -87.6298, 41.8781),
    ("SPRINGFIELD", "IL", "US", 62701, -89.6501, 39.7817),
    ("NAPERVILLE", "IL", "US", 60540, -88.1535, 41.7508),
    ("AURORA", "IL", "US", 60502, -88.3201, 41.7606),
    ("ROCKFORD", "IL", "US", 61101, -89.0940, 42.2711),
    ("PEORIA", "IL", "US", 61602, -89.5890, 40.6936),
    ("JOLIET", "IL", "US", 60431, -88.0817, 41.5250),
    ("EVANSTON", "IL", "US", 60201, -87.6877, 42.0451),
    ("CHAMPAIGN", "IL", "US", 61820, -88.2434, 40.1164),
    ("SCHAUMBURG", "IL", "US", 60173, -88.0834, 42.0334),
    ("OAK BROOK", "IL", "US", 60523, -87.9290, 41.8328),
    ("SPRINGFIELD", "MA", "US", 1101, -72.5898, 42.1015),
    ("SPRINGFIELD", "MO", "US", 65801, -93.2923, 37.2090),
    ("SPRINGFIELD", "OH", "US", 45501, -83.8088, 39.9242),
    ("SPRINGFIELD", "OR", "US", 97477, -123.0220, 44.0462),
    ("PORTLAND", "OR", "US", 97201, -122.6765, 45.5231),
    ("PORTLAND", "ME", "US", 4101, -70.2553, 43.6591),
    ("COLUMBUS", "OH", "US", 43215, -82.9988, 39.9612),
    ("COLUMBUS", "GA", "US", 31901, -84.9877, 32.4610),
    ("COLUMBUS", "IN", "US", 47201, -85.9214, 39.2014),
    ("ARLINGTON", "VA", "US", 22201, -77.1067, 38.8816),
    ("ARLINGTON", "TX", "US", 76010, -97.1081, 32.7357),
    ("FRANKLIN", "TN", "US", 37064, -86.8689, 35.9251),
    ("FRANKLIN", "MA", "US", 2038, -71.3967, 42.0834),
    ("KANSAS CITY", "MO", "US", 64105, -94.5786, 39.0997),
    ("KANSAS CITY", "KS", "US", 66101, -94.6275, 39.1142),
    ("AURORA", "CO", "US", 80010, -104.8319, 39.7294),
    ("PEORIA", "AZ", "US", 85345, -112.2374, 33.5806),
    ("JACKSON", "MS", "US", 39201, -90.1848, 32.2988),
    ("JACKSON", "TN", "US", 38301, -88.8139, 35.6145),
    ("RICHMOND", "VA", "US", 23219, -77.4360, 37.5407),
    ("RICHMOND", "CA", "US", 94801, -122.3477, 37.9358),
    ("ROCHESTER", "NY", "US", 14604, -77.6109, 43.1566),
    ("ROCHESTER", "MN", "US", 55901, -92.4802, 44.0121),
    ("ALBANY", "NY", "US", 12207, -73.7562, 42.6526),
    ("ALBANY", "GA", "US", 31701, -84.1557, 31.5785),
    ("CHARLESTON", "SC", "US", 29401, -79.9311, 32.7765),
    ("CHARLESTON", "WV", "US", 25301, -81.6326, 38.3498),
    ("NEW YORK", "NY", "US", 10001, -73.9967, 40.7506),
    ("LOS ANGELES", "CA", "US", 90012, -118.2437, 34.0522),
    ("SAN FRANCISCO", "CA", "US", 94105, -122.3937, 37.7898),
    ("HOUSTON", "TX", "US", 77002, -95.3698, 29.7604),
    ("DALLAS", "TX", "US", 75201, -96.7970, 32.7767),
    ("MIAMI", "FL", "US", 33131, -80.1918, 25.7617),
    ("ATLANTA", "GA", "US", 30303, -84.3880, 33.7490),
    ("BOSTON", "MA", "US", 2108, -71.0589, 42.3601),
    ("SEATTLE", "WA", "US", 98101, -122.3321, 47.6062),
    ("DENVER", "CO", "US", 80202, -104.9903, 39.7392),
    ("PHOENIX", "AZ", "US", 85003, -112.0740, 33.4484),
    ("MINNEAPOLIS", "MN", "US", 55401, -93.2650, 44.9778),
    ("DETROIT", "MI", "US", 48226, -83.0458, 42.3314),
    ("MILWAUKEE", "WI", "US", 53202, -87.9065, 43.0389),
    ("INDIANAPOLIS", "IN", "US", 46204, -86.1581, 39.7684),
    ("ST. LOUIS", "MO", "US", 63101, -90.1994, 38.6270),
    ("WILMINGTON", "DE", "US", 19801, -75.5398, 39.7391),
    ("WILMINGTON", "NC", "US", 28401, -77.9447, 34.2257),
    ("NEWARK", "NJ", "US", 7102, -74.1724, 40.7357),
    ("NEWARK", "DE", "US", 19711, -75.7497, 39.6837),
    ("HARTFORD", "CT", "US", 6103, -72.6851, 41.7658),
    ("PROVIDENCE", "RI", "US", 2903, -71.4128, 41.8240),
    ("BURLINGTON", "VT", "US", 5401, -73.2121, 44.4759),
    ("BURLINGTON", "IA", "US", 52601, -91.1129, 40.8076),
    ("LAS VEGAS", "NV", "US", 89101, -115.1398, 36.1699),
    ("SAN JUAN", "PR", "PR", 901, -66.1057, 18.4655),
    ("MÜNCHEN", "BY", "DE", 80331, 11.5755, 48.1374),
    ("KÖLN", "NW", "DE", 50667, 6.9603, 50.9375),
    ("DÜSSELDORF", "NW", "DE", 40213, 6.7735, 51.2277),
    ("BERLIN", "BE", "DE", 10117, 13.4050, 52.5200),
    ("MILANO", "MI", "IT", 20121, 9.1900, 45.4642),
    ("ROMA", "RM", "IT", 184, 12.4964, 41.9028),
    ("TORINO", "TO", "IT", 10121, 7.6869, 45.0703),
)
_HOME = tuple(i for i, c in enumerate(CITIES) if c[1] == HOME_STATE and c[2] == "US")
_US_OTHER = tuple(i for i, c in enumerate(CITIES) if c[1] != HOME_STATE and c[2] == "US")
_ABROAD = tuple(i for i, c in enumerate(CITIES) if c[2] != "US")
_SAME_NAME: tuple[int, ...] = tuple(
    i
    for i, c in enumerate(CITIES)
    if c[2] == "US" and sum(1 for d in CITIES if d[0] == c[0] and d[2] == "US") > 1
)

# (type, suffix family, domestic?, weight)
CORP_TYPES: tuple[tuple[str, str, bool, int], ...] = (
    ("Domestic Limited Liability Company", "llc", True, 30),
    ("Domestic Business Corporation", "corp", True, 19),
    ("Foreign Limited Liability Company", "llc", False, 13),
    ("Foreign Business Corporation", "corp", False, 10),
    ("Domestic Nonprofit Corporation", "nonprofit", True, 8),
    ("Foreign Nonprofit Corporation", "nonprofit", False, 2),
    ("Domestic Professional Corporation", "pc", True, 3),
    ("Professional Limited Liability Company", "pllc", True, 2),
    ("Limited Partnership", "lp", True, 4),
    ("Foreign Limited Partnership", "lp", False, 2),
    ("Limited Liability Partnership", "llp", True, 3),
    ("Foreign Limited Liability Partnership", "llp", False, 1),
    ("Cooperative Corporation", "coop", True, 1),
    ("Benefit Corporation", "corp", True, 1),
    ("Series Limited Liability Company", "llc", True, 1),
)

# Entity-type suffixes of the names, by family.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "llc": ("LLC",),
    "corp": ("INC.", "INC", "CORPORATION", "CORP.", "COMPANY"),
    "nonprofit": ("FOUNDATION", "ASSOCIATION", "SOCIETY", "ALLIANCE, INC.", "COUNCIL", "FUND"),
    "pc": ("P.C.", "PC", "LTD."),
    "pllc": ("PLLC", "P.L.L.C."),
    "lp": ("L.P.", "LP", "LIMITED PARTNERSHIP"),
    "llp": ("LLP", "L.L.P."),
    "coop": ("COOPERATIVE", "CO-OP, INC."),
}
# Other ways to write each suffix (a leading comma attaches to the word before).
SUFFIX_SPELLINGS: dict[str, tuple[str, ...]] = {
    "LLC": (", LLC", "L.L.C.", ", L.L.C."),
    "INC.": ("INC", ", INC.", ", INC"),
    "INC": ("INC.", ", INC."),
    "CORPORATION": ("CORP.", "CORP", ", CORPORATION"),
    "CORP.": ("CORPORATION", "CORP"),
    "COMPANY": ("CO.", "CO"),
    "FOUNDATION": ("FOUNDATION, INC.", "FOUNDATION INC"),
    "ASSOCIATION": ("ASSOCIATION, INC.", "ASSN"),
    "SOCIETY": ("SOCIETY, INC.", "SOCIETY INC"),
    "ALLIANCE, INC.": ("ALLIANCE INC", "ALLIANCE"),
    "COUNCIL": ("COUNCIL, INC.", "COUNCIL INC"),
    "FUND": ("FUND, INC.", "FUND INC"),
    "P.C.": ("PC", ", P.C."),
    "PC": ("P.C.", ", PC"),
    "LTD.": ("LTD", ", LTD."),
    "PLLC": ("P.L.L.C.", ", PLLC"),
    "P.L.L.C.": ("PLLC", ", PLLC"),
    "L.P.": ("LP", ", L.P."),
    "LP": ("L.P.", ", LP"),
    "LIMITED PARTNERSHIP": ("L.P.", "LP"),
    "LLP": ("L.L.P.", ", LLP"),
    "L.L.P.": ("LLP", ", LLP"),
    "COOPERATIVE": ("CO-OP", "COOPERATIVE, INC."),
    "CO-OP, INC.": ("COOPERATIVE, INC.", "CO-OP INC"),
}

ADJECTIVES: tuple[str, ...] = (
    "ACME", "ALPINE", "AMBER", "ATLAS", "AURORA", "BLUE", "BOLD", "BRIGHT", "CANYON",
    "CAPITAL", "CARDINAL", "CEDAR", "CENTRAL", "CITADEL", "CLEAR", "COASTAL", "COPPER",
    "CRESCENT", "CRYSTAL", "DELTA", "EAGLE", "EASTERN", "ELM", "EMERALD", "EVERGREEN",
    "FALCON", "FIRST", "FRONTIER", "GALAXY", "GATEWAY", "GOLDEN", "GRANITE", "GREAT LAKES",
    "GREEN", "HARBOR", "HERITAGE", "HIGHLAND", "HORIZON", "IRON", "KEYSTONE", "LAKESIDE",
    "LIBERTY", "LINCOLN", "MAPLE", "MERIDIAN", "MIDWEST", "MILLENNIUM", "MONARCH", "NOBLE",
    "NORTHERN", "NORTH STAR", "OAK", "OMEGA", "ORCHARD", "PACIFIC", "PARAMOUNT", "PEAK",
    "PINNACLE", "PIONEER", "PRAIRIE", "PREMIER", "PRIME", "QUANTUM", "RED OAK", "REGAL",
    "RIVERSIDE", "ROYAL", "SILVER", "SOUTHERN", "SPRUCE", "STERLING", "SUMMIT", "SUNRISE",
    "TITAN", "TRINITY", "TRUE NORTH", "UNITED", "VALLEY", "VANGUARD", "VICTORY", "VISTA",
    "WESTERN", "WILLOW", "WINDY CITY", "ZENITH",
)  # fmt: skip
NOUNS: tuple[str, ...] = (
    "ADVISORS", "ANALYTICS", "APPAREL", "ARCHITECTS", "AUTO REPAIR", "BAKERY", "BREWING",
    "BUILDERS", "CAPITAL", "CARE", "CATERING", "CLEANING", "CONSTRUCTION", "CONSULTING",
    "DENTAL", "DESIGN", "DEVELOPMENT", "DISTRIBUTION", "ELECTRIC", "ENERGY", "ENGINEERING",
    "ENTERPRISES", "EQUIPMENT", "FARMS", "FINANCIAL", "FITNESS", "FOODS", "FREIGHT",
    "GROUP", "HEALTH", "HOLDINGS", "HOME SERVICES", "HOSPITALITY", "INDUSTRIES",
    "INSURANCE", "INVESTMENTS", "LANDSCAPING", "LOGISTICS", "MACHINE WORKS", "MANAGEMENT",
    "MARKETING", "MEDIA", "MEDICAL", "MOTORS", "PARTNERS", "PHARMACY", "PLUMBING",
    "PROPERTIES", "REALTY", "RESOURCES", "RESTAURANT", "ROOFING", "SECURITY", "SOFTWARE",
    "SOLUTIONS", "STAFFING", "STUDIOS", "SUPPLY", "SYSTEMS", "TECHNOLOGIES", "TRADING",
    "TRANSPORT", "TRUCKING", "VENTURES", "WIDGETS", "WIRELESS", "PUB", "GRILL", "TAVERN",
)  # fmt: skip
CAUSES: tuple[str, ...] = (
    "ANIMAL RESCUE", "ARTS", "CHILDREN'S", "COMMUNITY", "EDUCATION", "FOOD PANTRY",
    "HISTORICAL", "HOMEOWNERS", "LITERACY", "MUSIC", "NEIGHBORHOOD", "PARENT TEACHER",
    "SENIOR CITIZENS", "SOCCER", "VETERANS", "YOUTH",
)  # fmt: skip
FIRST_NAMES: tuple[str, ...] = (
    "JAMES", "MARY", "JOHN", "PATRICIA", "ROBERT", "JENNIFER", "MICHAEL", "LINDA", "WILLIAM",
    "ELIZABETH", "DAVID", "BARBARA", "RICHARD", "SUSAN", "JOSEPH", "JESSICA", "THOMAS",
    "SARAH", "CHARLES", "KAREN", "DANIEL", "NANCY", "MATTHEW", "LISA", "ANTHONY", "BETTY",
    "MARK", "MARGARET", "DONALD", "SANDRA", "STEVEN", "ASHLEY", "PAUL", "KIMBERLY",
    "ANDREW", "EMILY", "JOSHUA", "DONNA", "KENNETH", "MICHELLE", "KEVIN", "CAROL", "BRIAN",
    "AMANDA", "GEORGE", "MELISSA", "TIMOTHY", "DEBORAH", "JOSÉ", "MARÍA", "JUAN", "ANA",
    "LUIS", "SOFÍA", "WEI", "MEI", "HIROSHI", "YUKI", "RAJESH", "PRIYA", "OLUWASEUN",
    "AMARA", "SEAN", "SIOBHÁN", "PATRICK", "BRIDGET", "FRANÇOIS", "ZOË", "BJÖRN", "JANE",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
    "RODRIGUEZ", "MARTINEZ", "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON",
    "THOMAS", "TAYLOR", "MOORE", "JACKSON", "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE",
    "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS", "ROBINSON", "WALKER", "YOUNG",
    "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN", "HILL", "FLORES", "GREEN",
    "ADAMS", "NELSON", "BAKER", "HALL", "RIVERA", "CAMPBELL", "MITCHELL", "CARTER",
    "ROBERTS", "KOWALSKI", "NOWAK", "PATEL", "SHAH", "KIM", "PARK", "CHEN", "WANG", "ZHANG",
    "TANAKA", "O'BRIEN", "O'REILLY", "O'CONNOR", "D'ANGELO", "DEL RIO", "VAN DER BERG",
    "MACDONALD", "MÜLLER", "GARCÍA", "NÚÑEZ", "PEÑA", "SCHRÖDER", "DVOŘÁK", "DOE",
    "SMITH-JONES", "ST. JAMES",
)  # fmt: skip
SPECIAL_NAMES: tuple[str, ...] = (
    "CAFÉ MÜNCHEN",
    "JOSÉ'S TAQUERÍA",
    "CRÈME DE LA CRÈME PÂTISSERIE",
    "ÅNGSTRÖM OPTICS",
    "SÃO PAULO IMPORTS",
    "NIÑOS FELICES DAYCARE",
    "BÉLA'S HUNGARIAN KITCHEN",
    "ZÜRICH PRECISION TOOLS",
    "ÉCLAIR & CO.",
    'THE "BEST" PIZZA',
    '"BIG AL" PLUMBING',
    "THE 'CORNER' DELI",
    "MOM & POP'S SHOP",
    "A-1 AUTO BODY",
    "24/7 LOCKSMITH",
    "ROCK 'N' ROLL MUSIC",
    "B&B BED AND BREAKFAST",
    "SMITH, JONES & CO",
    "WE'RE #1 CLEANERS",
    "50% OFF OUTLET",
)
STREET_NAMES: tuple[str, ...] = (
    "MAIN", "OAK", "PINE", "MAPLE", "CEDAR", "ELM", "WASHINGTON", "LAKE", "HILL", "PARK",
    "WALNUT", "LINCOLN", "JEFFERSON", "MADISON", "FRANKLIN", "MARKET", "CHURCH", "MILL",
    "RIVER", "SPRING", "CENTER", "HIGH", "UNION", "PROSPECT", "GRAND", "STATE", "MONROE",
    "JACKSON", "ADAMS", "WACKER", "LASALLE", "MICHIGAN", "CLARK", "DEARBORN", "WABASH",
    "HALSTED", "ASHLAND", "BROADWAY", "CHESTNUT", "SYCAMORE", "HICKORY", "WILLOW", "BIRCH",
    "RIDGE", "SUNSET", "HIGHLAND", "FOREST", "MEADOW", "ORCHARD", "VALLEY", "KING", "QUEEN",
    "MARTIN LUTHER KING JR", "O'HARE", "1ST", "2ND", "3RD", "4TH", "5TH", "10TH", "22ND",
)  # fmt: skip
STREET_TYPES: tuple[str, ...] = (
    "ST", "ST", "ST", "AVE", "AVE", "RD", "DR", "BLVD", "LN", "CT", "PL", "WAY", "PKWY", "HWY",
)  # fmt: skip
DIRECTIONS: tuple[str, ...] = ("N ", "S ", "E ", "W ")
UNITS: tuple[str, ...] = ("SUITE", "STE", "STE.", "FL", "UNIT", "APT", "#", "ROOM")

# Commercial registered agents: (canonical name, variant spellings, relative weight).
COMMERCIAL_AGENTS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("CT CORPORATION SYSTEM", ("C T CORPORATION SYSTEM", "CT Corporation System"), 30),
    ("REGISTERED AGENTS INC.", ("REGISTERED AGENTS INC", "Registered Agents, Inc."), 18),
    (
        "NORTHWEST REGISTERED AGENT LLC",
        ("NORTHWEST REGISTERED AGENT, LLC", "Northwest Registered Agent LLC"),
        16,
    ),
    (
        "ILLINOIS CORPORATION SERVICE COMPANY",
        ("ILLINOIS CORPORATION SERVICE CO.", "ILLINOIS CORPORATION SERVICE CO"),
        14,
    ),
    ("CORPORATION SERVICE COMPANY", ("CORPORATION SERVICE CO.", "Corporation Service Company"), 12),
    ("INCORP SERVICES, INC.", ("INCORP SERVICES INC", "InCorp Services, Inc."), 8),
    ("UNITED AGENT GROUP INC.", ("UNITED AGENT GROUP INC",), 6),
    ("COGENCY GLOBAL INC.", ("COGENCY GLOBAL INC",), 5),
    ("NATIONAL REGISTERED AGENTS, INC.", ("NATIONAL REGISTERED AGENTS INC",), 5),
    ("LEGALZOOM.COM, INC.", ("LEGALZOOM.COM INC",), 4),
    ("HARBOR COMPLIANCE LLC", ("HARBOR COMPLIANCE, LLC",), 3),
    ("ZENBUSINESS INC.", ("ZENBUSINESS INC",), 3),
)
AGENT_VARIANT_RATE = 0.04  # share of commercial-agent rows spelled other than canonically

# Row-mix probabilities.
P_COMMERCIAL_AGENT = 0.55
P_AGENT_REUSE = 0.30  # of individual-agent rows: reuse an earlier individual
P_AGENT_IS_OWNER = 0.45  # of individual-agent rows: the agent sits at the head office
P_HO_BUILDING = 0.30  # head office in a shared office building
P_HO_TWIN = 0.10  # head office on a street line that exists in several cities
P_ADDR2 = 0.25
P_NO_LOCATION = 0.12  # addresses without a location (HO Location empty)
P_ZIP4 = 0.20  # fresh addresses written with a ZIP+4
P_TITLE_CASE = 0.08  # names written "Acme Widgets, Inc." instead of upper case
P_SPECIAL_NAME = 0.04
P_ADDRESS_NAME = 0.06  # LLCs and LPs named after a street address ("1425 N HALSTED ST LLC")
P_INITIAL = 0.45  # individual agents written FIRST M. LAST


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


@dataclass
class GenerationSummary:
    """What :func:`generate` wrote. Offsets are 0-based data-row indexes (header excluded).

    The bad kinds are mutually exclusive, never coincide with ``repeated_corp`` rows, and a
    bad row's Corp Number occurs nowhere else in the file.
    """

    path: str
    rows: int
    bytes: int
    seed: int
    gzip: bool
    missing_name: list[int] = field(default_factory=list)
    missing_type: list[int] = field(default_factory=list)
    bad_zip: list[int] = field(default_factory=list)
    bad_date: list[int] = field(default_factory=list)
    # Valid rows reusing an earlier valid row's Corp Number, name written differently.
    repeated_corp: list[int] = field(default_factory=list)
    distinct_agents: int = 0  # distinct Registered Agent strings, exactly as written
    distinct_companies: int = 0  # distinct Corp Numbers over all rows

    @property
    def skipped(self) -> list[int]:
        """Offsets a loader should skip (a required field is empty)."""
        return sorted(self.missing_name + self.missing_type)

    @property
    def failed(self) -> list[int]:
        """Offsets a loader should fail to the dead-letter queue (a malformed value)."""
        return sorted(self.bad_zip + self.bad_date)

    @property
    def good_rows(self) -> int:
        """Rows a loader should accept."""
        return self.rows - len(self.skipped) - len(self.failed)

    @property
    def good_companies(self) -> int:
        """Distinct Corp Numbers among the rows a loader should accept."""
        return self.distinct_companies - len(self.skipped) - len(self.failed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["good_rows"] = self.good_rows
        data["good_companies"] = self.good_companies
        return data


# --------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------


_KEEP_UPPER = frozenset(
    {"LLC", "L.L.C.", "LP", "L.P.", "LLP", "L.L.P.", "PLLC", "P.L.L.C.", "PC", "P.C.", "II"}
)


def _title(text: str) -> str:
    """Title-case word by word (``str.title`` would give ``O'Reilly'S``); LLC, LP... stay."""
    return " ".join(
        w if w in _KEEP_UPPER else w[:1].upper() + w[1:].lower() for w in text.split(" ")
    )


_SUFFIXES_LONGEST_FIRST = sorted(SUFFIX_SPELLINGS, key=len, reverse=True)


def _respell_suffix(name: str, x: float) -> str:
    """``name`` with its entity-type suffix written another way (``x`` picks the way)."""
    upper = name.upper()
    for suffix in _SUFFIXES_LONGEST_FIRST:
        if upper.endswith(" " + suffix):
            spellings = SUFFIX_SPELLINGS[suffix]
            other = spellings[int(x * len(spellings))]
            if not name.isupper():
                other = _title(other)
            base = name[: len(name) - len(suffix) - 1]
            return base + other if other.startswith(",") else f"{base} {other}"
    return name


# Precomputed pieces (module level: built once per process, independent of the seed).
_ZIP_SPREAD = 20  # a city's zips are base .. base+19
_POINTS_PER_CITY = 256
_STREETS: tuple[str, ...] = tuple(
    s
    for name in STREET_NAMES
    for kind in STREET_TYPES
    for s in ([f"{name} {kind}"] * 9 + [f"{d}{name} {kind}" for d in DIRECTIONS])
)
_ADJ_NOUN: tuple[str, ...] = tuple(f"{a} {n}" for a in ADJECTIVES for n in NOUNS)
_LAST_NOUN: tuple[str, ...] = tuple(f"{a} {n}" for a in LAST_NAMES for n in NOUNS)
_POSSESSIVE: tuple[str, ...] = tuple(
    f"{a}' {n}" if a.endswith("S") else f"{a}'S {n}" for a in LAST_NAMES for n in NOUNS
)
_HOME_NAMES: tuple[str, ...] = tuple(CITIES[i][0] for i in _HOME)
_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (a, b) for a in LAST_NAMES for b in LAST_NAMES if a != b
)
# Name cores (tails add an optional qualifier and the entity-type suffix).
_CORES: tuple[str, ...] = (
    _ADJ_NOUN
    + _LAST_NOUN
    + _POSSESSIVE
    + tuple(f"{a}, {b} & ASSOCIATES" for a, b in _PAIRS)
    + tuple(f"{a} & {b}" for a, b in _PAIRS)
    + tuple(f"THE {core}" for core in _ADJ_NOUN)
)
_NONPROFIT_CORES: tuple[str, ...] = (
    tuple(f"{area} {cause}" for area in _HOME_NAMES for cause in CAUSES)
    + tuple(f"{adj} {cause}" for adj in ADJECTIVES for cause in CAUSES)
    + tuple(
        f"{adj} {area} {cause}" for adj in ADJECTIVES for area in _HOME_NAMES for cause in CAUSES
    )
    + tuple(f"FRIENDS OF THE {area} {cause}" for area in _HOME_NAMES for cause in CAUSES)
    + tuple(f"{last} FAMILY" for last in LAST_NAMES)
    + tuple(f"{last} MEMORIAL" for last in LAST_NAMES)
)
_US_CITY_NAMES: tuple[str, ...] = tuple(sorted({c[0] for c in CITIES if c[2] == "US"}))
QUALIFIERS: tuple[str, ...] = (
    ("",) * 90  # most names have no qualifier
    + ("II", "III", "IV", "GROUP", "HOLDINGS", "PARTNERS", "USA", "AMERICA", "GLOBAL")
    + ("INTERNATIONAL", "NORTH", "SOUTH", "MIDWEST", "& SONS", "& DAUGHTERS", "ONE", "360")
    + ("PLUS", "PRO", "EXPRESS", "DIRECT", "WORLDWIDE", "SERVICES", "OF ILLINOIS")
    + tuple(f"OF {city}" for city in _US_CITY_NAMES)
    + tuple(str(year) for year in range(1985, 2026))
    + tuple(str(n) for n in range(1, 21))
)
_NONPROFIT_QUALIFIERS: tuple[str, ...] = ("",) * 20 + (
    "OF ILLINOIS",
    "OF AMERICA",
    "OF NORTHERN ILLINOIS",
    "OF CENTRAL ILLINOIS",
    "OF SOUTHERN ILLINOIS",
    "OF GREATER CHICAGO",
)
_PLAIN_TAILS: dict[str, tuple[str, ...]] = {
    family: tuple(f" {s}" for s in suffixes) for family, suffixes in SUFFIXES.items()
}
_TAILS: dict[str, tuple[str, ...]] = {
    family: tuple(f" {q} {s}" if q else f" {s}" for q in QUALIFIERS for s in suffixes)
    for family, suffixes in SUFFIXES.items()
}
_NONPROFIT_TAILS: tuple[str, ...] = tuple(
    f" {q} {s}" if q else f" {s}" for q in _NONPROFIT_QUALIFIERS for s in SUFFIXES["nonprofit"]
)
_ADDRESS_FAMILIES = frozenset({"llc", "lp"})
_ZIPS: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"{c[3] + k:05d}" for k in range(_ZIP_SPREAD)) for c in CITIES
)
_TYPE_TABLE: tuple[int, ...] = tuple(i for i, t in enumerate(CORP_TYPES) for _ in range(t[3]))
_AGENT_TABLE: tuple[int, ...] = tuple(
    i for i, a in enumerate(COMMERCIAL_AGENTS) for _ in range(a[2])
)
# Street lines that exist in many cities (mostly in the same-name cities).
TWIN_STREETS: tuple[str, ...] = (
    "100 MAIN ST",
    "1 MARKET ST",
    "200 E WASHINGTON ST",
    "500 WASHINGTON AVE",
    "10 CHURCH ST",
    "123 ELM ST",
    "2 CENTER ST",
    "400 N STATE ST",
)
# The same lines as (house number, index in _STREETS), so that they get their zip and
# location from the same formula as any other address.
_TWIN_NK: tuple[tuple[int, int], ...] = tuple(
    (int(line.split(" ", 1)[0]), _STREETS.index(line.split(" ", 1)[1])) for line in TWIN_STREETS
)

_DATES: tuple[str, ...] = tuple(
    dt.date.fromordinal(o).strftime("%m/%d/%Y")
    for o in range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1)
)
_N_DATES = len(_DATES)
_SQRT = math.sqrt

# Lengths, for ``seq[int(r() * n)]`` picks in the hot path.
_N_HOME = len(_HOME)
_N_US_OTHER = len(_US_OTHER)
_N_ABROAD = len(_ABROAD)
_N_SAME_NAME = len(_SAME_NAME)
_N_STREETS = len(_STREETS)
_N_FIRST_NAMES = len(FIRST_NAMES)
_N_LAST_NAMES = len(LAST_NAMES)
_N_SPECIAL_NAMES = len(SPECIAL_NAMES)
_N_HOME_NAMES = len(_HOME_NAMES)
_N_CAUSES = len(CAUSES)
_N_ADJ_NOUN = len(_ADJ_NOUN)
_N_LAST_NOUN = len(_LAST_NOUN)
_N_CORES = len(_CORES)
_N_NONPROFIT_CORES = len(_NONPROFIT_CORES)
_N_TYPE_TABLE = len(_TYPE_TABLE)
_N_TWIN_STREETS = len(TWIN_STREETS)
_N_AGENT_TABLE = len(_AGENT_TABLE)
_N_BAD_ZIPS = len(BAD_ZIPS)
_N_BAD_DATES = len(BAD_DATES)

_UNIT_STRINGS: tuple[str, ...] = tuple(f"{u} {n}" for u in UNITS for n in range(1, 3001))
_N_UNIT_STRINGS = len(_UNIT_STRINGS)
_PLUS4: tuple[str, ...] = tuple(f"-{i:04d}" for i in range(10000))
_N_PLUS4 = len(_PLUS4)
_N_STREET_LINES = 9999 * _N_STREETS  # house numbers 1..9999 on every street
# Head-office city tables (index into CITIES), by weight: domestic entities ~85% in the
# home state; foreign ones ~25% abroad, ~10% in the home state, the rest elsewhere in the US.
_DOMESTIC_CITIES: tuple[int, ...] = _HOME * 80 + _US_OTHER * 3
_FOREIGN_CITIES: tuple[int, ...] = _ABROAD * 14 + _HOME * 4 + _US_OTHER * 5
_N_BUILDINGS = 60  # shared office buildings
_N_OFFICES = 4096  # (building, suite) head offices
_N_COMMERCIAL = 4096  # (commercial agent spelling, agent office), by weight
_PEOPLE_POOL = 2000  # individual agents that later rows may reuse
_COMPANY_POOL = 4000  # companies that later (repeated Corp Number) rows may reuse


def _scale(n: int, p: float) -> float:
    """Factor turning a draw ``x < p`` into an index below ``n`` (``int(x * factor)``)."""
    return (n - 1e-6) / p


_ZIP4_EVERY = round(1 / P_ZIP4)
_NO_LOCATION_PCT = round(100 * P_NO_LOCATION)
_K_UNIT2 = _scale(_N_UNIT_STRINGS, P_ADDR2)
_K_INITIAL = _scale(26, P_INITIAL)
_K_SPECIAL = _scale(_N_SPECIAL_NAMES, P_SPECIAL_NAME)
_K_OFFICES = _scale(_N_OFFICES, P_HO_BUILDING)
_K_COMMERCIAL = _scale(_N_COMMERCIAL, P_COMMERCIAL_AGENT)

# An address as written in a row: (line 1, line 2, city, state, zip).
_Address = tuple[str, str, str, str, str]


class _Rows:
    """Row factory; all randomness comes from one ``random.Random(seed)``.

    Built for speed (the benchmarks generate millions of rows): weighted choices are
    lookup tables built once, and one draw often serves both a branch and a pick. Within
    one address (street line + city + state) the zip (ZIP+4 or not) and the location (or
    its absence) are the same on every row: they derive from the address, not from a draw
    per row.
    """

    def __init__(self, rng: random.Random, rows: int) -> None:
        r = rng.random
        self.r = r
        self.points = [
            [
                f"POINT ({c[4] + (r() - 0.5) * 0.1:.4f} {c[5] + (r() - 0.5) * 0.1:.4f})"
                for _ in range(_POINTS_PER_CITY)
            ]
            for c in CITIES
        ]
        # Office buildings, ~60% in the home state: (line 1, city index, zip, location).
        buildings: list[tuple[str, int, str, str]] = []
        seen: set[tuple[int, int, int]] = set()
        while len(buildings) < _N_BUILDINGS:
            city = _HOME[int(r() * _N_HOME)] if r() < 0.6 else _US_OTHER[int(r() * _N_US_OTHER)]
            n = 100 + int(r() * 2400)
            k = int(r() * _N_STREETS)
            if (n, k, city) not in seen:
                seen.add((n, k, city))
                buildings.append((f"{n} {_STREETS[k]}", city, *self._zip_point(n, k, city)))
        # Head offices in those buildings (a suite, or none): (address, city index, point).
        self.offices: list[tuple[_Address, int, str]] = []
        for _ in range(_N_OFFICES):
            line, city, z, point = buildings[int(r() * _N_BUILDINGS)]
            c = CITIES[city]
            unit = self._unit() if r() < 0.8 else ""
            self.offices.append(((line, unit, c[0], c[1], z), city, point))

        # Each commercial agent has one to three offices in the big home-state cities;
        # the table holds (agent name as written, agent's address), by weight.
        agent_offices: list[list[_Address]] = []
        for _ in COMMERCIAL_AGENTS:
            places: list[_Address] = []
            for _k in range(1 + int(r() * 3)):
                city = _HOME[int(r() * 4)]
                n = 100 + int(r() * 2400)
                k = int(r() * _N_STREETS)
                z = self._zip_point(n, k, city)[0]
                c = CITIES[city]
                places.append((f"{n} {_STREETS[k]}", self._unit(), c[0], c[1], z))
            agent_offices.append(places)
        # Head offices on the street lines found in many cities: [twin][city] -> (address,
        # location).
        self.twins: list[list[tuple[_Address, str]]] = []
        for t, (n, k) in enumerate(_TWIN_NK):
            per_city: list[tuple[_Address, str]] = []
            for city, c in enumerate(CITIES):
                z, point = self._zip_point(n, k, city)
                per_city.append(((TWIN_STREETS[t], "", c[0], c[1], z), point))
            self.twins.append(per_city)

        self.commercial: list[tuple[str, _Address]] = []
        for _ in range(_N_COMMERCIAL):
            k = _AGENT_TABLE[int(r() * _N_AGENT_TABLE)]
            canonical, variants, _w = COMMERCIAL_AGENTS[k]
            name = variants[int(r() * len(variants))] if r() < AGENT_VARIANT_RATE else canonical
            places = agent_offices[k]
            self.commercial.append((name, places[int(r() * len(places))]))

        # Bounded pools (memory stays flat for any row count) of the individual agents and
        # the companies that later rows may reuse.
        self.individuals: list[tuple[str, _Address]] = []
        # (Corp Number, name, type, domestic?, head-office city index)
        self.companies: list[tuple[str, str, str, bool, int]] = []

        # Corp Numbers ascend with random gaps; C + 7 digits up to a few million rows.
        self.next_number = 1_000_000 + int(r() * 1000)
        self.max_step = max(1, min(9, (2 * 8_999_000) // max(rows, 1) - 1))

    # -- pieces ------------------------------------------------------------------------

    def _zip_point(self, n: int, k: int, city: int) -> tuple[str, str]:
        """Zip (maybe ZIP+4) and location ("" for none) of house ``n`` on street ``k``.

        Functions of the address, so an address looks the same on every row. ``row`` and
        ``_address`` inline the same formula (keep them in step).
        """
        h = n * 31 + k
        z = _ZIPS[city][n % _ZIP_SPREAD]
        if h % _ZIP4_EVERY == 0:
            z += _PLUS4[(h // _ZIP4_EVERY) % _N_PLUS4]
        point = "" if h % 100 < _NO_LOCATION_PCT else self.points[city][h % _POINTS_PER_CITY]
        return z, point

    def _unit(self) -> str:
        return _UNIT_STRINGS[int(self.r() * _N_UNIT_STRINGS)]

    def _address(self, city: int) -> tuple[_Address, str]:
        """A fresh street address in ``city`` and its location (``POINT (...)``)."""
        r = self.r
        v = int(r() * _N_STREET_LINES)  # one draw for house number and street
        n = 1 + v // _N_STREETS
        k = v % _N_STREETS
        # Zip, ZIP+4 and location are functions of the address (see the class docstring).
        h = n * 31 + k
        z = _ZIPS[city][n % _ZIP_SPREAD]
        if h % _ZIP4_EVERY == 0:
            z += _PLUS4[(h // _ZIP4_EVERY) % _N_PLUS4]
        point = "" if h % 100 < _NO_LOCATION_PCT else self.points[city][h % _POINTS_PER_CITY]
        x = r()
        c = CITIES[city]
        return (
            f"{n} {_STREETS[k]}",
            _UNIT_STRINGS[int(x * _K_UNIT2)] if x < P_ADDR2 else "",
            c[0],
            c[1],
            z,
        ), point

    def _person(self) -> str:
        r = self.r
        first = FIRST_NAMES[int(r() * _N_FIRST_NAMES)]
        last = LAST_NAMES[int(r() * _N_LAST_NAMES)]
        style = r()
        if style < 0.45:
            return f"{first} {chr(65 + int(style * _K_INITIAL))}. {last}"
        if style < 0.75:
            return f"{last}, {first}"
        if style < 0.95:
            return f"{first} {last}"
        return _title(f"{first} {last}")

    def _name(self, family: str) -> str:
        """A company name: a core (words, a special name or a street address) + a tail.

        The space of names is large (millions), so at a million rows few names repeat.
        """
        r = self.r
        x = r()
        if x < P_SPECIAL_NAME:
            core = SPECIAL_NAMES[int(x * _K_SPECIAL)]
            tails = _PLAIN_TAILS[family]
        elif family == "nonprofit":
            core = _NONPROFIT_CORES[int(r() * _N_NONPROFIT_CORES)]
            tails = _NONPROFIT_TAILS
        elif x < P_SPECIAL_NAME + P_ADDRESS_NAME and family in _ADDRESS_FAMILIES:
            v = int(r() * _N_STREET_LINES)  # "1425 N HALSTED ST LLC"
            core = f"{1 + v // _N_STREETS} {_STREETS[v % _N_STREETS]}"
            tails = _PLAIN_TAILS[family]
        else:
            core = _CORES[int(r() * _N_CORES)]
            tails = _TAILS[family]
        name = core + tails[int(r() * len(tails))]
        return _title(name) if r() < P_TITLE_CASE else name

    def _variant(self, name: str) -> str:
        """The same company name written differently (never identical to ``name``)."""
        r = self.r
        for _ in range(8):
            kind = int(r() * 5)
            if kind == 0:
                out = _title(name) if name.isupper() else name.upper()
            elif kind == 1:
                out = name.replace(",", "").replace(".", "")
            elif kind == 2:
                out = name.replace(" ", "  ", 1) if " " in name else name + " "
            elif kind == 3:
                out = _respell_suffix(name, r())
            else:
                out = f" {name.lower()}" if r() < 0.3 else _title(name).replace(",", "")
            if out != name:
                return out
        return name + " "

    def _city(self, domestic: bool) -> int:
        """A head-office city: domestic entities mostly at home, foreign ones elsewhere."""
        table = _DOMESTIC_CITIES if domestic else _FOREIGN_CITIES
        return table[int(self.r() * len(table))]

    # -- rows --------------------------------------------------------------------------

    def row(self, repeat: bool, remember: bool = True) -> list[str]:
        """A valid row; ``repeat`` reuses an earlier company (the name written differently).

        ``remember`` False keeps the row's company out of the pool that repeats draw from.
        """
        r = self.r
        companies = self.companies
        if repeat and companies:
            number, name, ctype, domestic, ho_city = companies[int(r() * len(companies))]
            name = self._variant(name)
        else:
            self.next_number += 1 + int(r() * self.max_step)
            number = f"C{self.next_number}"
            ctype, family, domestic, _w = CORP_TYPES[_TYPE_TABLE[int(r() * _N_TYPE_TABLE)]]
            name = self._name(family)
            ho_city = -1

        # Head office. A draw below a threshold doubles as the pick among the choices.
        ho: _Address
        x = r()
        if x < P_HO_BUILDING:
            ho, city, point = self.offices[int(x * _K_OFFICES)]
        elif x < P_HO_BUILDING + P_HO_TWIN:
            t = int(r() * _N_TWIN_STREETS)
            city = _SAME_NAME[int(r() * _N_SAME_NAME)] if r() < 0.8 else self._city(domestic)
            ho, point = self.twins[t][city]
        else:  # a fresh street address (the code of _address, inlined for speed)
            if ho_city >= 0 and r() < 0.5:
                city = ho_city
            else:
                table = _DOMESTIC_CITIES if domestic else _FOREIGN_CITIES
                city = table[int(r() * len(table))]
            v = int(r() * _N_STREET_LINES)
            n = 1 + v // _N_STREETS
            k = v % _N_STREETS
            h = n * 31 + k
            z = _ZIPS[city][n % _ZIP_SPREAD]
            if h % _ZIP4_EVERY == 0:
                z += _PLUS4[(h // _ZIP4_EVERY) % _N_PLUS4]
            point = "" if h % 100 < _NO_LOCATION_PCT else self.points[city][h % _POINTS_PER_CITY]
            x = r()
            c = CITIES[city]
            ho = (
                f"{n} {_STREETS[k]}",
                _UNIT_STRINGS[int(x * _K_UNIT2)] if x < P_ADDR2 else "",
                c[0],
                c[1],
                z,
            )
        country = CITIES[city][2]
        location = point

        # Registered agent and the agent's address.
        ra: _Address
        x = r()
        if x < P_COMMERCIAL_AGENT:
            agent, ra = self.commercial[int(x * _K_COMMERCIAL)]
        else:
            people = self.individuals
            if people and r() < P_AGENT_REUSE:
                agent, ra = people[int(r() * len(people))]
            else:
                agent = self._person()
                if country == "US" and ho[3] == HOME_STATE and r() < P_AGENT_IS_OWNER:
                    ra = ho
                else:
                    ra = self._address(_HOME[int(r() * _N_HOME)])[0]
                if len(people) < _PEOPLE_POOL:
                    people.append((agent, ra))
                else:
                    people[int(r() * _PEOPLE_POOL)] = (agent, ra)

        date = _DATES[int(_N_DATES * _SQRT(r()))]  # later dates are more frequent
        # Remember about one company in four for later repeats (enough, and cheaper).
        if remember and not repeat and not self.next_number & 3:
            entry = (number, name, ctype, domestic, city)
            if len(companies) < _COMPANY_POOL:
                companies.append(entry)
            else:
                companies[int(r() * _COMPANY_POOL)] = entry
        return [number, name, ctype, date, agent, *ra, *ho, country, location]

    def bad_row(self, kind: str) -> list[str]:
        """A fresh row (never repeated later) with exactly one defect."""
        row = self.row(repeat=False, remember=False)
        r = self.r
        if kind == "missing_name":
            row[COL["Legal Name"]] = ""
        elif kind == "missing_type":
            row[COL["Corporation Type"]] = ""
        elif kind == "bad_zip":
            # A loader checks HO Zip against US rules only when HO Country is US.
            us = row[COL["HO Country"]] == "US"
            column = "HO Zip" if r() < 0.5 and us else "RA Zip"
            row[COL[column]] = BAD_ZIPS[int(r() * _N_BAD_ZIPS)]
        elif kind == "bad_date":
            row[COL["Effective Date"]] = BAD_DATES[int(r() * _N_BAD_DATES)]
        else:  # pragma: no cover - internal
            raise ValueError(kind)
        return row


def _plan(rng: random.Random, rows: int, bad_rows: bool) -> tuple[dict[str, list[int]], list[int]]:
    """Choose the offsets of the bad rows and of the repeated-Corp-Number rows."""
    counts = {k: (round(rows * BAD_RATES[k]) if bad_rows else 0) for k in BAD_KINDS}
    n_repeat = round(rows * REPEAT_RATE)
    total = sum(counts.values()) + n_repeat
    # A repeat drawn before any company exists is written as an ordinary row.
    picked = rng.sample(range(rows), min(total, rows)) if total else []
    bad: dict[str, list[int]] = {}
    start = 0
    for k in BAD_KINDS:
        bad[k] = sorted(picked[start : start + counts[k]])
        start += counts[k]
    repeats = sorted(picked[start:])
    return bad, repeats


def _open_text(path: str | os.PathLike[str], gz: bool) -> tuple[IO[str], IO[bytes]]:
    """A UTF-8 text stream (no BOM, no newline translation) and the raw file under it."""
    raw = open(path, "wb")  # noqa: SIM115 - closed by the caller
    if gz:
        # No file name and a zero mtime in the header: the bytes depend on the content only.
        zipped = gzip_module.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL
        )
        return io.TextIOWrapper(zipped, encoding="utf-8", newline=""), raw
    return io.TextIOWrapper(raw, encoding="utf-8", newline=""), raw


def generate(
    path: str | os.PathLike[str],
    rows: int,
    seed: int = DEFAULT_SEED,
    *,
    bad_rows: bool = True,
    gzip: bool = False,
) -> GenerationSummary:
    """Write a synthetic business-registry CSV of ``rows`` data rows to ``path``.

    Deterministic in ``(rows, seed, bad_rows)``. With ``gzip`` the file is gzip-compressed
    (deterministically: no name, zero mtime). Returns what was written.
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    rng = random.Random(seed)
    bad, repeats = _plan(rng, rows, bad_rows)
    special: dict[int, str] = {off: kind for kind, offs in bad.items() for off in offs}
    special.update((off, "repeat") for off in repeats)
    factory = _Rows(rng, rows)
    row_of = factory.row
    agent_col = COL["Registered Agent"]

    agents: set[str] = set()
    repeated: list[int] = []
    text, raw = _open_text(path, gzip)
    try:
        writer = csv.writer(text, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(COLUMNS)
        write = writer.writerow
        add_agent = agents.add
        for offset in range(rows):
            kind = special.get(offset)
            if kind is None:
                row = row_of(False)
            elif kind != "repeat":
                row = factory.bad_row(kind)
            elif factory.companies:
                row = row_of(True)
                repeated.append(offset)
            else:  # nothing to repeat yet: an ordinary row
                row = row_of(False)
            add_agent(row[agent_col])
            write(row)
        text.flush()
    finally:
        text.close()
        raw.close()
    return GenerationSummary(
        path=os.fspath(path),
        rows=rows,
        bytes=os.path.getsize(path),
        seed=seed,
        gzip=gzip,
        missing_name=bad["missing_name"],
        missing_type=bad["missing_type"],
        bad_zip=bad["bad_zip"],
        bad_date=bad["bad_date"],
        repeated_corp=repeated,
        distinct_agents=len(agents),
        # Only the repeated rows reuse a Corp Number.
        distinct_companies=rows - len(repeated),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a deterministic synthetic state business-registry CSV."
    )
    parser.add_argument("out", help="output file (.csv, or .csv.gz with --gzip)")
    parser.add_argument("--rows", type=int, required=True, help="number of data rows")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--gzip", action="store_true", help="gzip-compress the output")
    parser.add_argument(
        "--no-bad-rows", dest="bad_rows", action="store_false", help="only valid rows"
    )
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    started = time.perf_counter()
    summary = generate(args.out, args.rows, args.seed, bad_rows=args.bad_rows, gzip=args.gzip)
    seconds = time.perf_counter() - started
    report = summary.to_dict()
    report["seconds"] = round(seconds, 3)
    report["rows_per_second"] = round(args.rows / seconds) if seconds > 0 else None
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
