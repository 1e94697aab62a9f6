"""Seeding, settings and the command line, without a server."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from example_support import FAST_HASH, bearer
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from example_app import create_app
from example_app.__main__ import main
from example_app.auth import PasswordHasher
from example_app.models import Project, Tenant, User
from example_app.seed import SEED_USERS, init_database
from example_app.settings import DEV_JWT_SECRET, Settings, database_url, make_engine


def _count(engine: Engine, model: type[Project] | type[Tenant] | type[User]) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def test_the_first_start_seeds_and_later_starts_keep_the_data(engine: Engine) -> None:
    passwords = PasswordHasher(FAST_HASH)
    assert init_database(engine, passwords) is True
    assert (_count(engine, Tenant), _count(engine, User), _count(engine, Project)) == (3, 5, 6)

    with Session(engine) as session:
        session.add(Project(name="Kept", tenant_id="acme"))
        session.commit()

    assert init_database(engine, passwords) is False
    assert _count(engine, Project) == 7

    assert init_database(engine, passwords, reset=True) is True
    assert _count(engine, Project) == 6


def test_seeded_passwords_are_argon2_hashes(engine: Engine) -> None:
    init_database(engine, PasswordHasher(FAST_HASH))
    with Session(engine) as session:
        hashes = session.exec(select(User.password_hash)).all()
    assert len(hashes) == len(SEED_USERS)
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert not any(user.password in h for user in SEED_USERS for h in hashes)


def test_settings_default_to_a_local_sqlite_file_and_the_development_key() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(
        database_url="sqlite:///./example_app.db",
        port=8000,
        jwt_secret=DEV_JWT_SECRET,
        base_domain="example.test",
    )
    assert settings.uses_dev_secret


def test_settings_read_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app@db.internal/app",
            "PORT": "9000",
            "EXAMPLE_JWT_SECRET": "s" * 40,
            "EXAMPLE_BASE_DOMAIN": "saas.test",
        }
    )
    assert (settings.port, settings.base_domain, settings.uses_dev_secret) == (
        9000,
        "saas.test",
        False,
    )
    assert database_url(settings.database_url).drivername == "postgresql+psycopg"
    assert database_url("mysql://root@localhost/app").drivername == "mysql+pymysql"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"EXAMPLE_JWT_SECRET": "short"}, "EXAMPLE_JWT_SECRET"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ],
)
def test_bad_settings_are_refused_with_the_variables_name(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env(environ)


def test_help_lists_the_environment_and_the_seeded_logins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--reset", "DATABASE_URL", "PORT", "EXAMPLE_JWT_SECRET", "EXAMPLE_BASE_DOMAIN"):
        assert text in out
    for user in SEED_USERS:
        assert f"{user.email}" in out
        assert user.password in out


def test_a_bad_setting_stops_the_command_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "short")
    assert main([]) == 2
    assert "EXAMPLE_JWT_SECRET" in capsys.readouterr().err


def test_create_app_without_an_engine_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    engine = make_engine(url)
    init_database(engine, PasswordHasher(FAST_HASH))
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("EXAMPLE_BASE_DOMAIN", "saas.test")
    monkeypatch.delenv("EXAMPLE_JWT_SECRET", raising=False)

    with TestClient(create_app(password_hash=FAST_HASH)) as client:
        r = client.post(
            "/auth/login", json={"email": "carol@example.test", "password": "carol-pass"}
        )
        assert r.status_code == 200, r.text
        jwt.decode(r.json()["access_token"], DEV_JWT_SECRET, algorithms=["HS256"])
        r = client.get("http://acme.saas.test/stats", headers=bearer(r.json()["access_token"]))
        assert r.status_code == 200, r.text
        assert r.json() == {"projects": 3, "tasks": 6}
