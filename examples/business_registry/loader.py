"""A loader for a state business-registry CSV (the shipped example).

Columns: Corp Number, Legal Name, Corporation Type, Effective Date (MM/DD/YYYY), Registered
Agent, RA Address 1, RA Address 2, RA City, RA State, RA Zip, HO Address 1, HO Address 2,
HO City, HO State, HO Zip, HO Country, HO Location (``POINT (lon lat)`` or empty).

Facts per record:
  Company --LOCATED_IN--> City ("SPRINGFIELD, IL": a city is identified with its state)
  City --IN_STATE--> State
  Company --HEADQUARTERED_AT--> Address (street, city and state: "100 MAIN ST" in Springfield,
      IL is not "100 MAIN ST" in Springfield, MA)
  Agent (Person or Company) --REGISTERED_AGENT_OF--> Company
  Agent --HAS_ADDRESS--> Address
Company attributes: corp_number (also its external key), corporation_type, effective_date.

Rows without a legal name or a corporation type are skipped; malformed zips and dates fail
to the dead-letter queue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from journal_loader import Entity, Loader, ProposeClient, ProposeResult
from journal_loader.loader import parse_date

US_ZIP = re.compile(r"^\d{5}(-\d{4})?$")
COMPANY_WORDS = re.compile(
    r"\b(INC|INCORPORATED|LLC|L\.L\.C|CORP|CORPORATION|COMPANY|CO|LTD|LP|LLP|PLLC|PC|"
    r"SERVICES?|AGENTS?|SYSTEMS?|GROUP|TRUST|BANK|ASSOCIATES|PARTNERS)\b\.?",
    re.IGNORECASE,
)


def _clean(value: str | None) -> str:
    return " ".join((value or "").split())


def address_name(line1: str, line2: str, city: str, state: str) -> str:
    return ", ".join(p for p in (line1, line2, city, state) if p)


class BusinessRegistryLoader(Loader):
    name = "business_registry"
    source_type = "business_registry"

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        legal_name = _clean(raw["Legal Name"])
        if not legal_name:
            return self.skip("no legal name")
        corporation_type = _clean(raw["Corporation Type"])
        if not corporation_type:
            return self.skip("no corporation type")
        return {
            "corp_number": _clean(raw["Corp Number"]),
            "legal_name": legal_name,
            "corporation_type": corporation_type,
            "effective_date": _clean(raw["Effective Date"]),
            "agent_name": _clean(raw["Registered Agent"]),
            "ra_address1": _clean(raw["RA Address 1"]),
            "ra_address2": _clean(raw["RA Address 2"]),
            "ra_city": _clean(raw["RA City"]).upper(),
            "ra_state": _clean(raw["RA State"]).upper(),
            "ra_zip": _clean(raw["RA Zip"]),
            "ho_address1": _clean(raw["HO Address 1"]),
            "ho_address2": _clean(raw["HO Address 2"]),
            "ho_city": _clean(raw["HO City"]).upper(),
            "ho_state": _clean(raw["HO State"]).upper(),
            "ho_zip": _clean(raw["HO Zip"]),
            "ho_country": _clean(raw["HO Country"]).upper() or "US",
            "ho_location": _clean(raw["HO Location"]),
        }

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        problems = super().validate(record)  # required_fields and date_fields from the config
        if record["ra_zip"] and not US_ZIP.match(record["ra_zip"]):
            problems.append(f"RA Zip {record['ra_zip']!r} is not a US zip (12345 or 12345-6789)")
        if record["ho_country"] == "US" and record["ho_zip"] and not US_ZIP.match(record["ho_zip"]):
            problems.append(f"HO Zip {record['ho_zip']!r} is not a US zip (12345 or 12345-6789)")
        return problems

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        company = Entity(
            type="Company",
            name=record["legal_name"],
            key=record["corp_number"] or None,
            attributes={
                "corp_number": record["corp_number"],
                "corporation_type": record["corporation_type"],
                "effective_date": _iso_date(record["effective_date"]),
            },
        )
        results = []
        city_name, state = record["ho_city"], record["ho_state"]
        if city_name and state:
            city = ("City", f"{city_name}, {state}")
            results.append(graph.propose_fact(company, city, "LOCATED_IN"))
            results.append(graph.propose_fact(city, ("State", state), "IN_STATE"))
            if record["ho_address1"]:
                office = Entity(
                    type="Address",
                    name=address_name(
                        record["ho_address1"], record["ho_address2"], city_name, state
                    ),
                    attributes={
                        "zip": record["ho_zip"],
                        "country": record["ho_country"],
                        "location": record["ho_location"],
                    },
                )
                results.append(graph.propose_fact(company, office, "HEADQUARTERED_AT"))
        if record["agent_name"]:
            kind = "Company" if COMPANY_WORDS.search(record["agent_name"]) else "Person"
            agent = (kind, record["agent_name"])
            results.append(graph.propose_fact(agent, company, "REGISTERED_AGENT_OF"))
            if record["ra_address1"] and record["ra_city"] and record["ra_state"]:
                ra = Entity(
                    type="Address",
                    name=address_name(
                        record["ra_address1"],
                        record["ra_address2"],
                        record["ra_city"],
                        record["ra_state"],
                    ),
                    attributes={"zip": record["ra_zip"]},
                )
                results.append(graph.propose_fact(agent, ra, "HAS_ADDRESS"))
        return results


def _iso_date(value: str) -> str:
    day = parse_date(value, "%m/%d/%Y") if value else None
    return day.isoformat() if day else ""
