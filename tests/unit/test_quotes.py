"""postroom.core.quotes: the writer's own text, without quotes, originals and signatures."""

from __future__ import annotations

import pytest

from postroom.core.quotes import own_text


@pytest.mark.parametrize(
    "tail",
    [
        "> quoted line",
        "On Mon, Mar 4, 2024 at 9:12 AM Carol <carol@customer.test> wrote:\n> hi",
        "On Mon, Mar 4, 2024 at 9:12 AM Carol via Support <\noutbound@example.test> wrote:\n\n> hi",
        "Am 04.03.2024 um 09:12 schrieb Carol Müller <carol@customer.test>:\n> hallo",
        "Le lun. 4 mars 2024 à 09:12, Carol <carol@customer.test> a écrit :\n> salut",
        "El lun, 4 mar 2024 a las 9:12, Carol (<carol@customer.test>) escribió:\n> hola",
        "Il giorno lun 4 mar 2024 alle ore 09:12 Carol <carol@customer.test> ha scritto:\n> ciao",
        "Op ma 4 mrt 2024 om 09:12 schreef Carol <carol@customer.test>:\n> hoi",
        "Em seg., 4 de mar. de 2024 às 09:12, Carol <carol@customer.test> escreveu:\n> olá",
        "Den 4 mars 2024 kl. 09:12 skrev Carol <carol@customer.test>:\n> hej",
        "W dniu 4.03.2024 o 09:12, Carol <carol@customer.test> pisze:\n> cześć",
        "-----Original Message-----\nFrom: Carol\nSent: Monday\nmessage",
        "-----Ursprüngliche Nachricht-----\nVon: Carol\nNachricht",
        "---------- Forwarded message ---------\nFrom: Carol",
        "________________________________\nFrom: Carol <carol@customer.test>\nSent: Monday, March 4, 2024 9:12 AM",
        "From: Carol <carol@customer.test>\nSent: Monday, March 4, 2024 9:12 AM\nTo: Support\n\noriginal",
        "Von: Carol <carol@customer.test>\nGesendet: Montag, 4. März 2024 09:12\nAn: Support",
        "De : Carol <carol@customer.test>\nEnvoyé : lundi 4 mars 2024 09:12\nÀ : Support",
        "-- \nSam Supervisor\nHead of Support",
        "--\nSam",
        "Sent from my iPhone",
        "Get Outlook for iOS",
    ],
)
def test_the_cut_comes_before_every_kind_of_quote_and_signature(tail: str) -> None:
    assert own_text(f"My answer.\n\n{tail}\nmore text") == "My answer."


def test_text_without_quotes_is_kept_whole() -> None:
    body = "Line one\n\nFrom time to time we ship late.\nOn Mondays especially.\n"
    assert own_text(body) == body.rstrip()


def test_a_from_line_without_a_header_block_after_it_is_text() -> None:
    assert own_text("From: the warehouse, good news.\nIt ships today.") == "From: the warehouse, good news.\nIt ships today."


def test_bottom_posting_takes_the_text_below_the_quote() -> None:
    body = "On 3/4/24 9:12 AM, Postroom wrote:\n> request\n>\n> more\n\nAPPROVE\n\n-- \nSam"
    assert own_text(body) == "APPROVE"


def test_an_unquoted_original_alone_has_no_text_of_the_writer() -> None:
    assert own_text("-----Original Message-----\nFrom: x\nSent: y\n\nAPPROVE") == ""


def test_crlf_and_bare_cr_are_lines() -> None:
    assert own_text("A\r\nB\r\n> q") == "A\nB"
    assert own_text("A\rB\r> q") == "A\nB"
