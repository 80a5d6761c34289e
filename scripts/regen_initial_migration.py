"""Regenerate the initial schema migration (0001) from the models.

Threadline has not shipped a release yet, so the schema still lives in one initial migration. After changing
models/schema.py run `.venv/bin/python scripts/regen_initial_migration.py`; once a release is out, new
migrations are added with `alembic revision --autogenerate` instead and this script goes away.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from models.migrate import MIGRATIONS_DIR, alembic_config

VERSIONS = MIGRATIONS_DIR / "versions"


def main() -> None:
    later = sorted(p for p in VERSIONS.glob("*.py") if not p.name.startswith("0001_"))
    with tempfile.TemporaryDirectory() as tmp:
        parked = Path(tmp) / "parked"
        parked.mkdir()
        for path in later:
            shutil.move(path, parked / path.name)
        for old in VERSIONS.glob("0001_*.py"):
            old.unlink()
        try:
            engine = create_engine(f"sqlite:///{tmp}/empty.db")
            config = alembic_config(engine)
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.revision(config, "initial schema", autogenerate=True, rev_id="0001")
        finally:
            for path in parked.iterdir():
                shutil.move(path, VERSIONS / path.name)
    generated = next(VERSIONS.glob("0001_*.py"))
    target = VERSIONS / "0001_initial_schema.py"
    generated.rename(target)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(target)], check=False)
    subprocess.run([sys.executable, "-m", "ruff", "check", "-q", "--fix", str(target)], check=False)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
