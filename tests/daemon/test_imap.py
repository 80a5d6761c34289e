"""daemon.imap against a real Dovecot (tests/fixtures/dovecot.py): security modes, reading mail without
marking it read, UIDVALIDITY changes, IDLE, and failing fast when the server goes away."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP

import imapclient
import pytest

from daemon import imap
from daemon.imap import (
    FolderInfo,
    ImapAuthError,
    ImapError,
    ImapSecurityError,
    ImapSession,
    ImapTarget,
)
from tests.fixtures.dovecot import DovecotServer

MakeUser = Callable[[], tuple[str, str]]


def make_message(n: int, subject: str = "Quote request") -> bytes:
    message = EmailMessage()
    message["From"] = f"Customer {n} <customer{n}@example.com>"
    message["To"] = "sales@threadline.test"
    message["Subject"] = f"{subject} #{n}"
    message["Message-ID"] = f"<msg{n}.{time.monotonic_ns()}@example.com>"
    message.set_content(f"Hello,\n\nplease send a quote for {n} licences.\n\nRegards\n")
    return message.as_bytes(policy=SMTP)


def plain_target(dovecot: DovecotServer, user: tuple[str, str], **overrides: object) -> ImapTarget:
    fields: dict[str, object] = {
        "host": dovecot.host,
        "port": dovecot.port,
        "security": "none",
        "username": user[0],
        "password": user[1],
        "timeout": 5.0,
    }
    fields.update(overrides)
    return ImapTarget(**fields)  # type: ignore[arg-type]


@pytest.fixture
def user(mailbox_user: MakeUser) -> tuple[str, str]:
    return mailbox_user()


@pytest.fixture
def session(dovecot: DovecotServer, user: tuple[str, str]) -> Iterator[ImapSession]:
    with ImapSession(plain_target(dovecot, user)) as opened:
        yield opened


# -- login and transport security ----------------------------------------------------------------------------


def test_login_reports_server_capabilities(session: ImapSession) -> None:
    assert {"IMAP4REV1", "IDLE", "CONDSTORE", "UIDPLUS"} <= session.capabilities
    assert session.supports_idle
    assert session.supports_condstore


def test_wrong_password_is_an_auth_error(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    target = plain_target(dovecot, (user[0], "not-" + user[1]))

    with pytest.raises(
        ImapAuthError, match=rf"{dovecot.port}: login refused for {user[0]}: .*Authentication"
    ):
        ImapSession(target).connect()


def test_password_is_not_in_repr(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    target = plain_target(dovecot, user)

    assert user[1] not in repr(target)
    assert user[1] not in repr(ImapSession(target))


@pytest.mark.parametrize(
    "host", ["imap.example.com", "192.0.2.10", "10.0.0.1", "::2", "localhost.example.com"]
)
def test_plaintext_to_a_remote_host_is_refused_without_connecting(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("tried to connect")

    monkeypatch.setattr(socket, "create_connection", no_network)
    target = ImapTarget(host=host, port=143, security="none", username="sales", password="secret")

    with pytest.raises(ImapSecurityError, match="refusing to send the password unencrypted"):
        ImapSession(target).connect()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_plaintext_is_allowed_on_loopback(dovecot: DovecotServer, user: tuple[str, str], host: str) -> None:
    with ImapSession(plain_target(dovecot, user, host=host)) as session:
        assert "INBOX" in [folder.name for folder in session.list_folders()]


def test_unknown_security_mode_is_refused(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    with pytest.raises(ImapSecurityError, match="unknown security 'tls'"):
        ImapSession(plain_target(dovecot, user, security="tls")).connect()


def test_tls_with_a_self_signed_certificate_is_refused_by_default(
    dovecot: DovecotServer, user: tuple[str, str]
) -> None:
    target = plain_target(dovecot, user, port=dovecot.tls_port, security="ssl")

    with pytest.raises(ImapSecurityError, match=r"certificate for 127\.0\.0\.1 not trusted: .*tls_ca_file"):
        ImapSession(target).connect()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_works_when_the_certificate_is_trusted(
    dovecot: DovecotServer, user: tuple[str, str], host: str
) -> None:
    target = plain_target(
        dovecot, user, host=host, port=dovecot.tls_port, security="ssl", ca_file=dovecot.cert_file
    )

    with ImapSession(target) as session:
        assert session.status("INBOX").messages == 0


def test_tls_with_an_unreadable_ca_file_is_a_security_error(
    dovecot: DovecotServer, user: tuple[str, str], tmp_path: object
) -> None:
    target = plain_target(dovecot, user, port=dovecot.tls_port, security="ssl", ca_file="/nonexistent/ca.pem")

    with pytest.raises(ImapSecurityError, match=r"cannot load tls_ca_file /nonexistent/ca\.pem"):
        ImapSession(target).connect()


def test_starttls_upgrades_the_plain_port(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    untrusted = plain_target(dovecot, user, security="starttls")
    trusted = plain_target(dovecot, user, security="starttls", ca_file=dovecot.cert_file)

    with pytest.raises(ImapSecurityError, match="not trusted"):
        ImapSession(untrusted).connect()
    with ImapSession(trusted) as session:
        assert session.status("INBOX").messages == 0
        assert "STARTTLS" not in session.capabilities

    logins = [line for line in dovecot.log_tail(200).splitlines() if f"Login: user=<{user[0]}>" in line]
    assert logins
    assert all(", TLS" in line for line in logins)


def test_starttls_is_refused_when_the_server_does_not_offer_it() -> None:
    received: list[bytes] = []
    with ScriptedServer(received, capabilities=b"IMAP4rev1 AUTH=PLAIN") as port:
        target = ImapTarget(host="127.0.0.1", port=port, security="starttls", username="u", password="secret")

        with pytest.raises(ImapSecurityError, match="does not offer STARTTLS"):
            ImapSession(target).connect()

    assert not any(b"secret" in line for line in received)


# -- reading mail --------------------------------------------------------------------------------------------


def test_status_reports_uidvalidity_uidnext_messages_and_modseq(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    empty = session.status("INBOX")
    dovecot.append(user[0], "INBOX", [make_message(n) for n in range(3)])

    status = session.status("INBOX")

    assert status.uidvalidity == empty.uidvalidity == dovecot.uidvalidity(user[0], "INBOX")
    assert (status.messages, status.uidnext) == (3, 4)
    assert status.highestmodseq is not None
    assert empty.highestmodseq is not None
    assert status.highestmodseq > empty.highestmodseq


def test_select_readonly_reports_the_same_status(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    dovecot.append(user[0], "INBOX", [make_message(n) for n in range(2)])

    assert session.select_readonly("INBOX") == session.status("INBOX")


def test_fetch_messages_returns_the_exact_bytes_and_leaves_them_unread(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    raws = [make_message(n) for n in range(3)]
    uids = dovecot.append(user[0], "INBOX", raws)
    session.select_readonly("INBOX")

    fetched = session.fetch_messages(list(reversed(uids)))

    assert [m.uid for m in fetched] == uids
    assert [m.data for m in fetched] == raws
    assert [m.size for m in fetched] == [len(raw) for raw in raws]
    assert dovecot.flags(user[0], "INBOX") == {uid: () for uid in uids}


def test_fetch_keeps_other_flags_and_never_adds_seen(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    uids = dovecot.append(user[0], "INBOX", [make_message(1)], flags=["\\Flagged"])
    session.select_readonly("INBOX")

    session.fetch_messages(uids)
    session.fetch_headers(uids)

    assert dovecot.flags(user[0], "INBOX") == {uids[0]: ("\\Flagged",)}


def test_fetch_headers_returns_the_header_block_and_message_size(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    raws = [make_message(n) for n in range(2)]
    uids = dovecot.append(user[0], "INBOX", raws)
    session.select_readonly("INBOX")

    headers = session.fetch_headers(uids)

    assert [h.uid for h in headers] == uids
    assert [h.data for h in headers] == [raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" for raw in raws]
    assert [h.size for h in headers] == [len(raw) for raw in raws]


def test_expunged_uids_come_back_empty_and_are_no_longer_present(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    uids = dovecot.append(user[0], "INBOX", [make_message(n) for n in range(2)])
    session.select_readonly("INBOX")
    dovecot.expunge_all(user[0], "INBOX")

    # Dovecot answers BODY[] NIL for messages another client expunged while this one had the folder open
    assert [(m.uid, m.data) for m in session.fetch_messages(uids)] in ([], [(uid, b"") for uid in uids])
    assert session.still_present(uids) == set()
    assert session.fetch_messages([]) == []


def test_fetch_many_messages_in_one_call(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    raws = [make_message(n) for n in range(1200)]
    uids = dovecot.append(user[0], "INBOX", raws)
    session.select_readonly("INBOX")

    fetched = session.fetch_messages(uids)

    assert [m.uid for m in fetched] == uids
    assert fetched[-1].data == raws[-1]


def test_fetch_responses_in_every_shape_a_server_may_answer_are_read() -> None:
    # imaplib's pieces for answers Dovecot does not give but other servers do: the size after the literal,
    # a quoted or NIL body, a literal holding a parenthesis, an unsolicited FLAGS update without a UID
    pieces = [
        (b"1 (UID 5 RFC822.SIZE 10 BODY[HEADER]<0> {4}", b"ab)c"),
        b")",
        (b"2 (UID 7 BODY[] {3}", b"xyz"),
        b" RFC822.SIZE 3)",
        b"3 (UID 9 RFC822.SIZE 0 BODY[] NIL)",
        b'4 (FLAGS (\\Seen) UID 10 BODY[] "a \\"q\\" b" RFC822.SIZE 7)',
        b"5 (FLAGS (\\Seen))",
        b'6 (UID 11 MODSEQ (12345) body[] "")',
    ]

    read = imap._read_fetch_response(pieces)

    assert sorted(read) == [5, 7, 9, 10, 11]
    assert (read[5][b"BODY[HEADER]<0>"], read[5][b"RFC822.SIZE"]) == (b"ab)c", b"10")
    assert (read[7][b"BODY[]"], read[7][b"RFC822.SIZE"]) == (b"xyz", b"3")
    assert read[9][b"BODY[]"] is None
    assert read[10][b"BODY[]"] == b'a "q" b'
    assert read[11][b"BODY[]"] == b""
    assert imap._uid_set([1, 2, 3, 5, 7, 8, 10]) == "1:3,5,7:8,10"


def test_a_fetch_response_the_fast_reader_cannot_read_goes_to_imapclient_and_fails_there() -> None:
    # a literal's marker without the literal: imapclient's parser refuses it too, and the session turns
    # that into an ImapError and drops the connection
    with pytest.raises(imapclient.exceptions.ProtocolError):
        imap._read_fetch_response([b"1 (UID 5 BODY[] {1}", b")"])
    assert imap._read_fetch_response([(b"1 (UID 5 BODY[] {1}", b"x"), b")"]) == {
        5: {b"UID": b"5", b"BODY[]": b"x"}
    }


def test_search_uids_from_returns_only_uids_at_or_above(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    uids = dovecot.append(user[0], "INBOX", [make_message(n) for n in range(5)])
    status = session.select_readonly("INBOX")

    assert session.search_uids_from(1) == uids
    assert session.search_uids_from(uids[2]) == uids[2:]
    # 'UID 6:*' matches the highest UID (5) on every server: nothing new must mean nothing returned.
    assert session.search_uids_from(status.uidnext) == []
    assert session.search_uids_from(0) == uids


def test_search_uids_from_in_windows_finds_everything(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imap, "_SEARCH_WINDOW", 3)
    uids = dovecot.append(user[0], "INBOX", [make_message(n) for n in range(10)])
    session.select_readonly("INBOX")

    assert session.search_uids_from(2) == uids[1:]


def test_search_needs_a_selected_folder(session: ImapSession) -> None:
    with pytest.raises(RuntimeError, match="select_readonly"):
        session.search_uids_from(1)


def test_a_missing_folder_is_an_error_and_the_session_goes_on(session: ImapSession) -> None:
    with pytest.raises(ImapError, match=r"opening 'No such folder' failed: .*Mailbox doesn't exist"):
        session.select_readonly("No such folder")

    assert session.select_readonly("INBOX").messages == 0


# -- folders -------------------------------------------------------------------------------------------------


def test_list_folders_shows_special_use_flags(session: ImapSession) -> None:
    folders = {folder.name: folder for folder in session.list_folders()}

    assert set(folders) >= {"INBOX", "Sent"}
    assert "\\Sent" in folders["Sent"].flags
    assert isinstance(folders["INBOX"], FolderInfo)


def test_sent_folder_is_found(session: ImapSession) -> None:
    assert session.sent_folder() == "Sent"


def test_folders_with_international_names(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    dovecot.append(user[0], "Envoyés & reçus", [make_message(1)])

    assert "Envoyés & reçus" in [folder.name for folder in session.list_folders()]
    assert session.select_readonly("Envoyés & reçus").messages == 1


@pytest.mark.parametrize("folder", ["Projects", "INBOX"])
def test_reset_mailbox_changes_uidvalidity_and_restarts_uids(
    dovecot: DovecotServer, user: tuple[str, str], folder: str
) -> None:
    dovecot.append(user[0], folder, [make_message(n) for n in range(3)])
    with ImapSession(plain_target(dovecot, user)) as session:
        before = session.select_readonly(folder)

    new_uidvalidity = dovecot.reset_mailbox(user[0], folder)
    new_uids = dovecot.append(user[0], folder, [make_message(9)])

    with ImapSession(plain_target(dovecot, user)) as session:
        after = session.select_readonly(folder)
        assert after.uidvalidity == new_uidvalidity != before.uidvalidity
        assert after.messages == 1
        assert new_uids == [1]
        assert session.search_uids_from(1) == [1]


# -- IDLE ----------------------------------------------------------------------------------------------------


def test_idle_wait_returns_true_soon_after_new_mail(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession
) -> None:
    status = session.select_readonly("INBOX")
    delivery = threading.Timer(0.3, dovecot.append, args=(user[0], "INBOX", [make_message(1)]))
    delivery.start()
    started = time.monotonic()
    try:
        signalled = session.idle_wait(20)
    finally:
        delivery.join()

    assert signalled
    assert time.monotonic() - started < 3
    assert session.search_uids_from(status.uidnext) == [status.uidnext]


def test_idle_wait_returns_false_when_nothing_arrives(session: ImapSession) -> None:
    session.select_readonly("INBOX")
    started = time.monotonic()

    assert session.idle_wait(0.5) is False
    assert 0.4 < time.monotonic() - started < 3
    # IDLE was ended with DONE: the session takes commands again.
    assert session.search_uids_from(1) == []


# -- failures ------------------------------------------------------------------------------------------------


def test_server_stop_is_an_error_not_a_hang(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    dovecot.append(user[0], "INBOX", [make_message(1)])
    session = ImapSession(plain_target(dovecot, user, timeout=5.0))
    session.connect()
    idling = ImapSession(plain_target(dovecot, user, timeout=5.0))
    idling.connect()
    idling.select_readonly("INBOX")
    idle_result: list[BaseException | bool] = []

    def idle() -> None:
        try:
            idle_result.append(idling.idle_wait(60))
        except BaseException as exc:
            idle_result.append(exc)

    idler = threading.Thread(target=idle)
    idler.start()
    time.sleep(0.3)
    try:
        started = time.monotonic()
        dovecot.stop()
        idler.join(10)

        with pytest.raises(ImapError, match=rf"127\.0\.0\.1:{dovecot.port}: "):
            session.status("INBOX")
        with pytest.raises(ImapError, match="not connected"):
            session.status("INBOX")
        with pytest.raises(ImapError, match="connection refused"):
            ImapSession(plain_target(dovecot, user)).connect()
        assert time.monotonic() - started < 5
        assert not idler.is_alive()
        assert len(idle_result) == 1
        assert isinstance(idle_result[0], ImapError)
    finally:
        dovecot.start()
        session.close()
        idling.close()

    # The restarted server has the same data; a new session picks up where the old one stopped.
    session.connect()
    try:
        assert session.status("INBOX").messages == 1
    finally:
        session.close()


@pytest.mark.parametrize(
    ("abrupt", "error"),
    [(False, "server closed the connection"), (True, "connection lost while waiting for new mail")],
    ids=["kicked", "killed"],
)
def test_a_dropped_connection_ends_idle_with_an_error(
    dovecot: DovecotServer, user: tuple[str, str], session: ImapSession, abrupt: bool, error: str
) -> None:
    session.select_readonly("INBOX")
    drop = threading.Timer(0.3, dovecot.kick, args=(user[0],), kwargs={"abrupt": abrupt})
    drop.start()
    started = time.monotonic()
    try:
        with pytest.raises(ImapError, match=error):
            session.idle_wait(30)
    finally:
        drop.join()

    assert time.monotonic() - started < 5
    with pytest.raises(ImapError, match="not connected"):
        session.search_uids_from(1)


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = ImapTarget(
            host="127.0.0.1",
            port=silent.getsockname()[1],
            security="none",
            username="u",
            password="p",
            timeout=0.5,
        )
        started = time.monotonic()

        with pytest.raises(ImapError, match=r"no answer within 0\.5s while connecting"):
            ImapSession(target).connect()

    assert time.monotonic() - started < 3


def test_close_never_raises(dovecot: DovecotServer, user: tuple[str, str]) -> None:
    session = ImapSession(plain_target(dovecot, user))
    session.close()
    session.connect()
    session.close()
    session.close()


# -- helpers -------------------------------------------------------------------------------------------------


class ScriptedServer:
    """A loopback server that greets, answers CAPABILITY with the given list and records what it receives:
    for the one case Dovecot cannot be made to show here (no STARTTLS on offer)."""

    def __init__(self, received: list[bytes], capabilities: bytes) -> None:
        self._received = received
        self._capabilities = capabilities
        self._listener = socket.socket()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> int:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._thread.start()
        port: int = self._listener.getsockname()[1]
        return port

    def __exit__(self, *exc_info: object) -> None:
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"* OK fake server ready\r\n")
            for line in lines:
                self._received.append(line)
                tag, _, command = line.decode().partition(" ")
                verb = command.split()[0].upper() if command.split() else ""
                if verb == "CAPABILITY":
                    connection.sendall(b"* CAPABILITY " + self._capabilities + b"\r\n")
                if verb == "LOGOUT":
                    connection.sendall(b"* BYE bye\r\n" + tag.encode() + b" OK done\r\n")
                    return
                connection.sendall(tag.encode() + b" OK done\r\n")
