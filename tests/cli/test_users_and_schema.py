"""`threadline user add`, and what every data command says on a database that was never migrated."""

from pathlib import Path

from sqlalchemy import select

from models.schema import Role, User
from models.users import verify_password


def test_user_add_reads_the_password_from_stdin_and_stores_only_a_hash(cli, db):
    result = cli(
        "user",
        "add",
        "Jane@Team.Example",
        "--name",
        "Jane Doe",
        "--role",
        "manager",
        "--password-stdin",
        stdin="s3cret horse battery\n",
    )
    assert (result.code, result.out, result.err) == (0, "user jane@team.example (manager) created\n", "")
    with db.sessions() as session:
        user = session.scalars(select(User)).one()
        assert (user.email, user.name, user.role) == ("jane@team.example", "Jane Doe", Role.MANAGER)
        assert "s3cret horse battery" not in user.password_hash
        assert user.password_hash.startswith("$argon2")
        assert verify_password(user, "s3cret horse battery")
        assert not verify_password(user, "s3cret horse batterY")


def test_duplicate_user_is_one_line_and_exit_1(cli, db):
    args = ("user", "add", "jane@team.example", "--name", "Jane", "--role", "rep", "--password-stdin")
    assert cli(*args, stdin="long enough password\n").code == 0
    again = cli(*args, stdin="another long password\n")
    assert again.code == 1
    assert again.err == "threadline: a user with the email jane@team.example already exists\n"
    with db.sessions() as session:
        assert len(session.scalars(select(User)).all()) == 1


def test_short_password_is_refused_without_a_traceback(cli):
    result = cli(
        "user",
        "add",
        "bob@team.example",
        "--name",
        "Bob",
        "--role",
        "rep",
        "--password-stdin",
        stdin="short\n",
    )
    assert result.code == 1
    assert result.err == "threadline: password must be at least 8 characters\n"


def test_a_name_with_a_line_break_is_refused_and_nothing_is_created(cli, db):
    for name in ("Ann\nBcc: evil@attacker.example", "Ann\r\nOwner", "Ann\u2028Owner"):
        result = cli(
            "user", "add", "ann@team.example", "--name", name, "--role", "rep", "--password-stdin",
            stdin="long enough password\n",
        )  # fmt: skip
        assert result.code == 1
        assert result.err.startswith("threadline: a name cannot contain a line break: ")
        assert "Traceback" not in result.err
    with db.sessions() as session:
        assert session.scalars(select(User)).all() == []


def _unmigrated_commands(tmp_path: Path) -> list[list[str]]:
    csv_file = tmp_path / "x.csv"
    csv_file.write_text("email\na@b.example\n", encoding="utf-8")
    return [
        ["export", "contacts"],
        ["export", "deals", "--format", "csv"],
        ["import", "contacts", str(csv_file)],
        ["import", "deals", str(csv_file)],
        ["demo"],
        ["user", "add", "x@team.example", "--name", "X", "--role", "rep", "--password-stdin"],
    ]


def test_commands_on_an_unmigrated_sqlite_database_say_run_db_upgrade(cli_for, tmp_path):
    run = cli_for(f"sqlite:///{tmp_path / 'never-migrated.db'}")
    for args in _unmigrated_commands(tmp_path):
        result = run(*args, stdin="long enough password\n")
        assert result.code == 1, args
        assert len(result.err_lines) == 1, result.err
        assert "run `threadline db upgrade`" in result.err
        assert "Traceback" not in result.err
        assert result.out == ""


def test_commands_on_an_unmigrated_postgresql_database_say_run_db_upgrade(cli_for, pg_url, tmp_path):
    run = cli_for(pg_url)
    for args in _unmigrated_commands(tmp_path):
        result = run(*args, stdin="long enough password\n")
        assert result.code == 1, args
        assert len(result.err_lines) == 1, result.err
        assert "run `threadline db upgrade`" in result.err
