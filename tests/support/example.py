"""The shipped example and the registry generator: paths, the example's loader class, a
config with its own source type, generated registry files."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from sqlalchemy import text

from journal_loader import Loader, RunReport, run
from journal_loader.storage import open_store
from tests.support.snapshots import sources_snapshot

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLE_DIR = REPO / "examples" / "business_registry"
EXAMPLE_CONFIG = EXAMPLE_DIR / "loader.yaml"
EXAMPLE_DATA = EXAMPLE_DIR / "data" / "business_registry_20251001.csv"


def import_path(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def generator() -> ModuleType:
    return import_path("generate_registry", REPO / "bench" / "generate_registry.py")


def example_loader_class() -> type[Loader]:
    module = import_path(
        "example_business_registry", REPO / "examples" / "business_registry" / "loader.py"
    )
    cls: type[Loader] = module.BusinessRegistryLoader
    return cls


def typed_config(
    folder: Path, source_type: str, batch: int = 100, *, file: Path | None = None, name: str = ""
) -> Path:
    """The example's loader and config, with the config's source type (a loader subclass
    that leaves source_type to the config) and small batches."""
    folder.mkdir(parents=True, exist_ok=True)
    module = folder / "typed_loader.py"
    module.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('example_registry_loader', {str(REPO / 'examples' / 'business_registry' / 'loader.py')!r})\n"
        "example = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(example)\n\n\n"
        "class TypedLoader(example.BusinessRegistryLoader):\n"
        "    source_type = ''\n"
    )
    config = folder / f"{name or source_type}.yaml"
    config.write_text(
        f"""loader:
  name: {source_type}
  class: typed_loader.py:TypedLoader
source:
  type: {source_type}
  format: csv{f"{chr(10)}  file: {file}" if file else ""}
  update_frequency: quarterly
processing:
  batch_size: {batch}
  retry_delay: 0.05
validation:
  required_fields: [corp_number, legal_name, corporation_type]
  date_fields:
    effective_date: MM/DD/YYYY
graph:
  node_types: [Company, Person, City, State, Address]
  relationship_types: [LOCATED_IN, IN_STATE, HEADQUARTERED_AT, REGISTERED_AGENT_OF, HAS_ADDRESS]
"""
    )
    return config


def registry(path: Path, rows: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    generator().generate(path, rows=rows, seed=seed)
    return path


class LoadedExample(NamedTuple):
    """The example loaded into the database at ``url`` (tests/conftest.py's example_*)."""

    url: str
    report: RunReport


def _fingerprint(url: str) -> tuple[object, ...]:
    store = open_store(url)
    try:
        with store.read() as conn:
            counts = conn.execute(
                text(
                    "SELECT (SELECT COUNT(*) FROM journal), (SELECT MAX(position) FROM journal),"
                    " (SELECT COUNT(*) FROM nodes), (SELECT COUNT(*) FROM relationships),"
                    " (SELECT COUNT(*) FROM failed_records)"
                )
            ).one()
        return (*counts, sources_snapshot(store))
    finally:
        store.dispose()


def load_example(url: str) -> Iterator[LoadedExample]:
    """Load the example, hand it out, then check that nobody wrote to it."""
    report = run(config=EXAMPLE_CONFIG, db=url)
    assert report.status == "completed", report.message
    before = _fingerprint(url)
    yield LoadedExample(url, report)
    # shared by every test of this process that asks for it: none may have written to it
    assert _fingerprint(url) == before, "a test wrote to the shared example journal"
