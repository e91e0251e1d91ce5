"""postroom.config: the shipped files pass, every broken file names its key path."""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from postroom.config import (
    ConfigError,
    ConfigInvalid,
    check_config,
    load_config,
    mail_users,
    parse_duration,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- a minimal valid file, and a tiny TOML writer to break it in one place at a time --------


def base() -> dict[str, Any]:
    return {
        "node_id": "node-1",
        "secret": "0123456789abcdef0123456789abcdef",
        "server": {"imap_host": "127.0.0.1", "smtp_host": "127.0.0.1"},
        "sender_auth": {"servers": ["mail.example.test"]},
        "incoming": [
            {"address": "support@example.test", "password": "pw"},
            {"address": "sales@example.test", "password": "pw", "skills": ["sales"]},
        ],
        "outbound": {"address": "out@example.test", "password": "pw"},
        "dead_box": {"address": "dead@example.test", "password": "pw"},
        "agents": [
            {"name": "Alice", "address": "alice@example.test", "skills": ["support", "sales"]}
        ],
    }


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def dumps(doc: dict[str, Any]) -> str:
    lines = []
    for key, v in doc.items():
        if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict)):
            lines.append(f"{key} = {_value(v)}")
    for key, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_value(x)}" for k, x in v.items()]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {_value(x)}" for k, x in item.items()]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, doc: dict[str, Any] | str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else dumps(doc))
    return path


def errors_of(tmp_path: Path, doc: dict[str, Any] | str, **kw: Any) -> list[ConfigError]:
    return check_config(write(tmp_path, doc), environ=kw.pop("environ", {}), **kw)


# -- the shipped files ----------------------------------------------------------------------


def test_the_minimal_base_passes(tmp_path: Path) -> None:
    assert errors_of(tmp_path, base()) == []


def test_the_demo_file_passes_and_matches_the_brief() -> None:
    config = load_config(EXAMPLES / "demo.toml", environ={})
    assert config.server.imap_port == 21000 and config.server.imap_tls == "starttls"
    assert config.server.smtp_port == 21005 and config.server.smtp_tls == "starttls"
    assert config.server.cafile == "devstack"
    assert config.server.poll_seconds == 5
    assert [(b.address, b.skills) for b in config.incoming] == [
        ("support@example.test", ("support",)),
        ("sales@example.test", ("sales",)),
    ]
    assert all(b.no_reply_seconds == 3600 for b in config.incoming)
    assert config.outbound.address == "outbound@example.test"
    assert config.dead_box.address == "dead@example.test"
    agents = {a.address.split("@")[0]: a for a in config.agents}
    assert {k: (a.skills, a.auto_answer, a.supervisor) for k, a in agents.items()} == {
        "alice": (("support",), True, False),
        "bob": (("support", "sales"), True, False),
        "chloe": (("sales",), True, False),
        "dan": (("support",), False, False),
        "sam": (("support",), False, True),
    }
    assert all(a.password for a in config.agents)
    assert [c.address for c in config.customers] == [
        "carol@customer.test",
        "erin@customer.test",
        "frank@customer.test",
    ]
    assert config.devstack is not None and config.devstack.base_port == 21000
    # The demo's smtp login defaults to the outbound box.
    assert config.server.smtp_login == "outbound@example.test"
    assert config.server.smtp_password == config.outbound.password


def test_the_real_site_example_passes_once_its_env_vars_are_set() -> None:
    path = EXAMPLES / "postroom.toml"
    raw = path.read_text()
    names = _env_names(tomllib.loads(raw))
    assert names, "the example should take its secrets from the environment"
    assert check_config(path, environ={}) != []
    environ = {n: f"value-of-{n.lower()}-padded-to-32-bytes" for n in names}
    assert check_config(path, environ=environ) == []
    config = load_config(path, environ=environ)
    assert config.server.imap_tls == "tls" and config.server.cafile == "system"
    assert config.secrets == (environ["POSTROOM_TOKEN_SECRET"].encode(),)
    assert config.sender_auth.required and config.sender_auth.servers == ("mail.example.com",)


def _env_names(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k.endswith("_env") and isinstance(v, str)]
        return found + [n for v in node.values() for n in _env_names(v)]
    if isinstance(node, list):
        return [n for v in node for n in _env_names(v)]
    return []


# -- broken files ---------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation: set (or with value=DEL delete) the key at a dotted path like a.b[1].c."""

    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            name, _, index = part.partition("[")
            node = node[name]
            if index:
                node = node[int(index.rstrip("]"))]
        if value is DEL:
            del node[last]
        else:
            node[last] = value

    return apply


DEL = object()

BROKEN = [
    # (mutation, the one key path expected, a fragment of its message)
    (
        _set("incoming[1].no_reply_time", "soon"),
        "incoming[1].no_reply_time",
        'expected a duration like "4h" or seconds, got "soon"',
    ),
    (_set("incoming[0].no_reply_time", 0), "incoming[0].no_reply_time", "at least one second"),
    (_set("node_id", DEL), "node_id", "required"),
    (_set("node_id", "node 1!"), "node_id", "A-Z a-z 0-9 _ -"),
    (_set("node_id", "n" * 65), "node_id", "1-64"),
    (_set("secret", "short"), "secret", "at least 32 bytes, got 5"),
    (_set("secret", DEL), "secret", "give one of secret, secret_env, secret_file"),
    (_set("secret_env", "X"), "secret_env", "give only one of"),
    (_set("server", DEL), "server", "required"),
    (_set("server", [1]), "server", "expected a table"),
    (_set("server.imap_host", DEL), "server.imap_host", "required"),
    (_set("server.imap_port", 0), "server.imap_port", "between 1 and 65535, got 0"),
    (_set("server.smtp_port", 70000), "server.smtp_port", "between 1 and 65535"),
    (_set("server.imap_port", "993"), "server.imap_port", 'expected an integer, got "993"'),
    (_set("server.imap_port", True), "server.imap_port", "expected an integer, got true"),
    (_set("server.imap_tls", "ssl"), "server.imap_tls", 'got "ssl"'),
    (_set("server.smtp_tls", "STARTTLS"), "server.smtp_tls", '"tls", "starttls", "none"'),
    (_set("server.poll_interval", "5 parsecs"), "server.poll_interval", "duration"),
    (_set("server.idle", "yes"), "server.idle", "expected true or false"),
    (_set("server.cafile", "/nonexistent/ca.pem"), "server.cafile", "cannot read"),
    (_set("server.smtp_password", "pw"), "server.smtp_password", "give smtp_login too"),
    (_set("server.smtp_login", "relay@example.test"), "server.smtp_password", "required"),
    (_set("incoming", []), "incoming", "at least one [[incoming]]"),
    (_set("incoming", DEL), "incoming", "at least one [[incoming]]"),
    (_set("incoming", {"address": "x@example.test"}), "incoming", "array of tables"),
    (_set("incoming[0].address", "support"), "incoming[0].address", "email address"),
    (_set("incoming[0].address", "a b@example.test"), "incoming[0].address", "email address"),
    (_set("incoming[0].address", "a@localhost"), "incoming[0].address", "email address"),
    (_set("incoming[0].password", DEL), "incoming[0].password", "required"),
    (_set("incoming[0].password", ""), "incoming[0].password", "empty"),
    (_set("incoming[0].login", ""), "incoming[0].login", "must not be empty"),
    (_set("incoming[0].folder", 1), "incoming[0].folder", "expected a string, got 1"),
    (_set("incoming[0].skills", []), "incoming[0].skills", "at least one skill"),
    (_set("incoming[0].skills", "support"), "incoming[0].skills", "array of strings"),
    (_set("incoming[0].skills", ["support", ""]), "incoming[0].skills[1]", "non-empty string"),
    (_set("incoming[1].skills", ["billing"]), "incoming[1].skills", 'no agent has skill "billing"'),
    (_set("incoming[0].auto_response", 1), "incoming[0].auto_response", "true or false"),
    (
        _set("incoming[0].auto_response_text", "Hi {nmae}"),
        "incoming[0].auto_response_text",
        "unknown placeholder {nmae}",
    ),
    (
        _set("incoming[0].auto_response_subject", "Re: {Subject}"),
        "incoming[0].auto_response_subject",
        "unknown placeholder {Subject}; known: {name}, {subject}, {reference}, {box}",
    ),
    (_set("incoming[0].default_priority", 1.5), "incoming[0].default_priority", "an integer"),
    (_set("outbound", DEL), "outbound", "required"),
    (_set("outbound.address", "out+x@example.test"), "outbound.address", "'+'"),
    (_set("outbound.skills", ["x"]), "outbound.skills", "unknown key"),
    (
        _set("dead_box.address", "out@example.test"),
        "dead_box.address",
        'duplicate address "out@example.test" (already used by outbound.address)',
    ),
    (
        _set("agents[0].address", "Support@Example.TEST"),
        "agents[0].address",
        "already used by incoming[0].address",
    ),
    (_set("agents[0].name", DEL), "agents[0].name", "required"),
    (_set("agents[0].capacity", 0), "agents[0].capacity", "at least 1, got 0"),
    (_set("agents[0].supervisor", "no"), "agents[0].supervisor", "true or false"),
    (_set("agents[0].skills", ["support", 3]), "agents[0].skills[1]", "non-empty string, got 3"),
    (_set("agents[0].password_env", "NOT_SET"), "agents[0].password_env", "NOT_SET is not set"),
    (
        _set("agents", [{"name": "A", "address": "a@x.test", "skills": ["sales"]}]),
        "incoming[0].skills",
        'no agent has skill "support"',
    ),
    (_set("customers", [{"address": "c@customer.test"}]), "customers[0].password", "required"),
    (_set("devstack", {"base_port": 80}), "devstack.base_port", "between 1024 and 65529"),
    (_set("devstack", {"base_prot": 21000}), "devstack.base_prot", 'did you mean "base_port"'),
    (_set("nodeid", "x"), "nodeid", 'unknown key (did you mean "node_id"?)'),
    (_set("serverx", {}), "serverx", "unknown key"),
    (
        _set("incoming[0].auto_respnse", True),
        "incoming[0].auto_respnse",
        'unknown key (did you mean "auto_response"?)',
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"), BROKEN, ids=[f"{p}:{f}" for _, p, f in BROKEN]
)
def test_a_broken_file_names_the_key_path(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    doc = copy.deepcopy(base())
    mutate(doc)
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == [path], errors
    assert fragment in errors[0].message
    assert str(errors[0]) == f"{path}: {errors[0].message}"


def test_every_error_is_reported_not_only_the_first(tmp_path: Path) -> None:
    doc = base()
    doc["node_id"] = "bad id"
    doc["server"]["imap_tls"] = "ssl"
    doc["incoming"][1]["no_reply_time"] = "soon"
    doc["agents"][0]["capacity"] = -1
    doc["dead_box"]["colour"] = "red"
    paths = [e.path for e in errors_of(tmp_path, doc)]
    assert sorted(paths) == sorted(
        [
            "node_id",
            "server.imap_tls",
            "incoming[1].no_reply_time",
            "agents[0].capacity",
            "dead_box.colour",
        ]
    )


def test_load_config_raises_with_every_error(tmp_path: Path) -> None:
    doc = base()
    doc["node_id"] = "bad id"
    doc["secret"] = "short"
    with pytest.raises(ConfigInvalid) as caught:
        load_config(write(tmp_path, doc), environ={})
    assert [e.path for e in caught.value.errors] == ["node_id", "secret"]
    assert "node_id:" in str(caught.value) and "secret:" in str(caught.value)


def test_a_file_that_is_not_toml_is_one_whole_file_error(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "node_id = \n")
    assert len(errors) == 1 and errors[0].path == "" and "not valid TOML" in errors[0].message


def test_a_missing_file_is_one_whole_file_error(tmp_path: Path) -> None:
    errors = check_config(tmp_path / "nope.toml")
    assert len(errors) == 1 and errors[0].path == "" and "cannot read" in errors[0].message


# -- defaults -------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, base()), environ={})
    support = config.incoming[0]
    assert support.login == "support@example.test" and support.folder == "INBOX"
    assert support.skills == ("support",)  # the local part of the address
    assert support.auto_response is True and support.auto_response_subject == "Your message to {box} [{reference}]"
    assert support.auto_response_customer_text is False
    assert "{reference}" in support.auto_response_text and "{box}" in support.auto_response_text
    assert support.no_reply_seconds == 4 * 3600 and support.default_priority == 0
    server = config.server
    assert (server.imap_tls, server.imap_port, server.smtp_tls, server.smtp_port) == (
        "tls",
        993,
        "starttls",
        587,
    )
    assert server.cafile == "system" and server.idle is True and server.poll_seconds == 30
    assert (server.smtp_login, server.smtp_password) == ("out@example.test", "pw")
    agent = config.agents[0]
    assert (agent.supervisor, agent.auto_answer, agent.capacity, agent.password) == (
        False,
        False,
        1,
        None,
    )
    assert config.customers == () and config.devstack is None


def test_stray_braces_in_a_template_are_text(tmp_path: Path) -> None:
    doc = base()
    doc["incoming"][0]["auto_response_text"] = "Hi {name} :-} { not a placeholder }"
    doc["incoming"][0]["auto_response_customer_text"] = True
    assert errors_of(tmp_path, doc) == []


def test_the_default_ports_follow_the_tls_mode(tmp_path: Path) -> None:
    doc = base()
    doc["server"] |= {"imap_tls": "starttls", "smtp_tls": "tls"}
    server = load_config(write(tmp_path, doc), environ={}).server
    assert (server.imap_port, server.smtp_port) == (143, 465)


def test_addresses_are_lower_cased(tmp_path: Path) -> None:
    doc = base()
    doc["agents"][0]["address"] = "Alice@Example.TEST"
    config = load_config(write(tmp_path, doc), environ={})
    assert config.agents[0].address == "alice@example.test"
    assert config.agent("ALICE@example.test") is config.agents[0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("4h", 14400),
        ("1d", 86400),
        ("1h30m", 5400),
        (120, 120),
        ("120", 120),
        ("soon", None),
        ("4x", None),
        ("", None),
        (True, None),
        (1.5, None),
    ],
)
def test_parse_duration(text: object, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_a_relative_cafile_is_resolved_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    doc = base()
    doc["server"]["cafile"] = "ca.pem"
    config = load_config(write(tmp_path, doc), environ={})
    assert config.server.cafile == str(tmp_path / "ca.pem")


# -- secrets from the environment and from files ---------------------------------------------


def test_secrets_from_env_and_files(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("a-file-secret-of-32-bytes-length\n")
    (tmp_path / "secrets" / "out").write_text("out-pw-from-file\n")
    doc = base()
    del doc["secret"]
    doc["secret_file"] = "secrets/token"  # relative to the config file
    del doc["incoming"][0]["password"]
    doc["incoming"][0]["password_env"] = "SUPPORT_PW"
    del doc["outbound"]["password"]
    doc["outbound"]["password_file"] = str(tmp_path / "secrets" / "out")
    doc["agents"][0]["password_env"] = "ALICE_PW"
    environ = {"SUPPORT_PW": "support pw: with spaces ", "ALICE_PW": "alice-pw"}
    config = load_config(write(tmp_path, doc), environ=environ)
    assert config.secrets == (b"a-file-secret-of-32-bytes-length",)  # final newline dropped
    assert config.incoming[0].password == "support pw: with spaces "
    assert config.outbound.password == "out-pw-from-file"
    assert config.server.smtp_password == "out-pw-from-file"
    assert config.agents[0].password == "alice-pw"


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = base()
    del doc["secret"]
    doc["secret_env"] = "POSTROOM_TEST_SECRET"
    path = write(tmp_path, doc)
    monkeypatch.delenv("POSTROOM_TEST_SECRET", raising=False)
    assert [e.path for e in check_config(path)] == ["secret_env"]
    monkeypatch.setenv("POSTROOM_TEST_SECRET", "s" * 32)
    assert load_config(path).secrets == (b"s" * 32,)


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    doc = base()
    del doc["secret"]
    doc["secret_file"] = "missing-secret"
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == ["secret_file"]
    assert str(tmp_path / "missing-secret") in errors[0].message


def test_a_short_secret_from_env_names_the_env_key(tmp_path: Path) -> None:
    doc = base()
    del doc["secret"]
    doc["secret_env"] = "S"
    errors = errors_of(tmp_path, doc, environ={"S": "short"})
    assert [(e.path, e.message) for e in errors] == [
        ("secret_env", "the secret must be at least 32 bytes, got 5")
    ]


def test_repr_hides_every_secret(tmp_path: Path) -> None:
    doc = base()
    doc["secret"] = "TOPSECRET-token-key-of-32-bytes-len"
    doc["incoming"][0]["password"] = "TOPSECRET-support"
    doc["outbound"]["password"] = "TOPSECRET-outbound"
    doc["dead_box"]["password"] = "TOPSECRET-dead"
    doc["agents"][0]["password"] = "TOPSECRET-alice"
    doc["customers"] = [{"address": "c@customer.test", "password": "TOPSECRET-carol"}]
    doc["server"] |= {"smtp_login": "relay@example.test", "smtp_password": "TOPSECRET-relay"}
    config = load_config(write(tmp_path, doc), environ={})
    shown = repr(config) + str(config) + repr(config.server) + repr(config.incoming)
    assert "TOPSECRET" not in shown
    assert "relay@example.test" in shown  # the rest is still there to debug with
    assert config.server.smtp_password == "TOPSECRET-relay"


# -- mail_users -----------------------------------------------------------------------------


def test_mail_users_of_the_demo_are_every_box_agent_and_customer() -> None:
    users = dict(mail_users(load_config(EXAMPLES / "demo.toml", environ={})))
    assert sorted(users) == sorted(
        [f"{n}@example.test" for n in ("support", "sales", "outbound", "dead")]
        + [f"{n}@example.test" for n in ("alice", "bob", "chloe", "dan", "sam")]
        + [f"{n}@customer.test" for n in ("carol", "erin", "frank")]
    )
    assert users["alice@example.test"] == "alice-pw"
    assert users["outbound@example.test"] == "outbound-pw"


def test_mail_users_skip_agents_without_password_and_add_a_distinct_smtp_login(
    tmp_path: Path,
) -> None:
    doc = base()
    doc["agents"].append(
        {"name": "Bob", "address": "bob@example.test", "skills": ["sales"], "password": "b"}
    )
    doc["customers"] = [{"address": "c@customer.test", "password": "c"}]
    doc["server"] |= {"smtp_login": "relay@example.test", "smtp_password": "r"}
    users = mail_users(load_config(write(tmp_path, doc), environ={}))
    assert users == [
        ("support@example.test", "pw"),
        ("sales@example.test", "pw"),
        ("out@example.test", "pw"),
        ("dead@example.test", "pw"),
        ("bob@example.test", "b"),
        ("c@customer.test", "c"),
        ("relay@example.test", "r"),
    ]


def test_mail_users_do_not_repeat_the_outbound_box_as_smtp_login(tmp_path: Path) -> None:
    users = mail_users(load_config(write(tmp_path, base()), environ={}))
    assert [a for a, _ in users].count("out@example.test") == 1


# -- keys, transport and the sender check (issue 8) -------------------------------------------


def test_several_secrets_rotate_newest_first(tmp_path: Path) -> None:
    new, old = "n" * 32, "o" * 40
    doc = base()
    doc["secret"] = [new, old]
    assert load_config(write(tmp_path, doc), environ={}).secrets == (new.encode(), old.encode())
    del doc["secret"]
    doc["secret_env"] = "S"
    loaded = load_config(write(tmp_path, doc), environ={"S": f"{new}\n{old}\n"})
    assert loaded.secrets == (new.encode(), old.encode())


@pytest.mark.parametrize(
    ("value", "environ", "path", "message"),
    [
        (["x" * 32, "short"], {}, "secret[1]", "at least 32 bytes, got 5"),
        ([], {}, "secret", "at least one secret"),
        (["x" * 32, "x" * 32], {}, "secret", "the same secret is given twice"),
        (None, {"S": "x" * 32 + "\nshort"}, "secret_env", "at least 32 bytes, got 5 (line 2)"),
    ],
)
def test_every_secret_is_checked(tmp_path: Path, value: Any, environ: dict[str, str], path: str, message: str) -> None:
    doc = base()
    if value is None:
        del doc["secret"]
        doc["secret_env"] = "S"
    else:
        doc["secret"] = value
    errors = errors_of(tmp_path, doc, environ=environ)
    assert [e.path for e in errors] == [path] and message in errors[0].message


@pytest.mark.parametrize("key", ["imap_tls", "smtp_tls"])
def test_no_tls_is_refused_for_a_host_that_is_not_loopback(tmp_path: Path, key: str) -> None:
    doc = base()
    doc["server"] |= {"imap_host": "mail.example.com", "smtp_host": "mail.example.com", key: "none"}
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == [f"server.{key}"] and "clear text" in errors[0].message
    for loopback in ("127.0.0.1", "127.0.0.53", "::1", "localhost", "[::1]"):
        doc["server"] |= {"imap_host": loopback, "smtp_host": loopback}
        assert errors_of(tmp_path, doc) == [], loopback


def test_the_sender_check_is_on_by_default_and_needs_evidence(tmp_path: Path) -> None:
    doc = base()
    del doc["sender_auth"]
    assert [e.path for e in errors_of(tmp_path, doc)] == ["sender_auth"]
    doc["sender_auth"] = {}
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == ["sender_auth"] and "names no evidence" in errors[0].message
    doc["sender_auth"] = {"required": False}
    config = load_config(write(tmp_path, doc), environ={})
    assert config.sender_auth.as_policy().required is False
    doc["sender_auth"] = {"servers": ["Mail.Example.COM."], "exchange": True, "authserv_ids": ["mx.example.com"]}
    policy = load_config(write(tmp_path, doc), environ={}).sender_auth.as_policy()
    assert policy.required and policy.servers == {"mail.example.com"} and policy.exchange
    assert policy.authserv_ids == {"mx.example.com"}
    doc["sender_auth"] = {"servers": ["not a host"]}
    assert [e.path for e in errors_of(tmp_path, doc)] == ["sender_auth.servers[0]"]


def test_customer_words_in_auto_responses_need_the_opt_in(tmp_path: Path) -> None:
    doc = base()
    doc["incoming"][0]["auto_response_subject"] = "Re: {subject}"
    errors = errors_of(tmp_path, doc)
    assert [e.path for e in errors] == ["incoming[0].auto_response_subject"]
    assert "the sender's own words" in errors[0].message
    doc["incoming"][0]["auto_response_customer_text"] = True
    assert errors_of(tmp_path, doc) == []


def test_auto_response_limit(tmp_path: Path) -> None:
    doc = base()
    assert load_config(write(tmp_path, doc), environ={}).auto_response.max_per_address == 3
    doc["auto_response"] = {"max_per_address": 0, "window": "1h"}
    config = load_config(write(tmp_path, doc), environ={})
    assert (config.auto_response.max_per_address, config.auto_response.window_seconds) == (0, 3600)
    doc["auto_response"] = {"max_per_address": -1}
    assert [e.path for e in errors_of(tmp_path, doc)] == ["auto_response.max_per_address"]


def test_switching_the_sender_check_off_warns_at_every_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from postroom.engine.site import site_from_config

    doc = base()
    with caplog.at_level("WARNING"):
        site = site_from_config(load_config(write(tmp_path, doc), environ={}))
    assert site.sender_auth.required and "required = false" not in caplog.text
    doc["sender_auth"] = {"required": False}
    with caplog.at_level("WARNING"):
        site = site_from_config(load_config(write(tmp_path, doc), environ={}))
    assert not site.sender_auth.required
    assert "required = false" in caplog.text and "From header alone" in caplog.text
