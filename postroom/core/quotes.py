"""What a person wrote in a mail, without what their client added below it.

``own_text`` cuts a reply's text at the first line that starts a quotation, a forwarded
original or a signature, the way mail clients write them:

* ``>`` quoting (RFC 3676 §4.5);
* attribution lines, in the languages clients ship: "On … wrote:", "Am … schrieb …:",
  "Le … a écrit :", "El … escribió:", "Il … ha scritto:", "Op … schreef …:",
  "Em … escreveu:", "Den … skrev …:", "W dniu … pisze:", "… написал(а):", "Dne … napsal(a):",
  also when the client wrapped them over two or three lines (Gmail does);
* separators: "-----Original Message-----" and its translations, "----- Forwarded
  message -----", Outlook's line of underscores, and Outlook's unquoted header block
  ("From: …" followed by "Sent:"/"Date:"/"To:"/"Subject:", in several languages);
* signatures: the RFC 3676 §4.3 separator "-- " (and "--" from clients that trim
  trailing spaces), and mobile footers ("Sent from my iPhone", "Get Outlook for …").

Only what is above the cut is the writer's.  The cut errs towards cutting: for an
approver's decision a lost line is a refusal to act, a kept quote would be mail to a
customer.
"""

from __future__ import annotations

import re

__all__ = ["own_text"]

# An attribution starts with one of these words and ends (within three lines) with one of
# the verbs; the middle (date, name, address) is free.
_ATTRIBUTION_START = re.compile(
    r"^(On|Am|Le|El|Il|Op|Em|Den|Dne|W dniu|Le\s+\w+\.?|El\s+\w+,?|Il giorno|Op\s+\w+)\b", re.I
)
_VERBS = (
    r"(wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef|escreveu|skrev|pisze|написал[аи]?|napsal[a]?|"
    r"kirjoitti|írta|έγραψε|yazdı|tulis|menulis|写道|寫道|のメッセージ)"
)
# The verb last ("... Carol wrote:"), or the verb and then the name ("... schrieb Carol <c@x>:").
_ATTRIBUTION_END = re.compile(rf"{_VERBS}\s*:?\s*$|{_VERBS}\s+[^:]{{1,200}}:\s*$", re.I)
# "Carol <c@x> wrote:" alone on a line (Apple Mail, mobile clients, no date).
_WROTE_LINE = re.compile(r"^.{0,200}\b(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev)\s*:\s*$", re.I)
_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(original message|original nachricht|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale|oorspronkelijk bericht|mensagem original|"
    r"opprinnelig melding|ursprungligt meddelande|alkuperäinen viesti|wiadomość oryginalna|"
    r"původní zpráva|исходное сообщение|forwarded message|weitergeleitete nachricht|"
    r"message transféré|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht)\s*-{2,}\s*$",
    re.I,
)
_UNDERSCORES = re.compile(r"^\s*_{20,}\s*$")
_HEADER_FROM = re.compile(r"^\s*\*?(From|Von|De|Da|Van|Från|Fra|Od|От|Lähettäjä|Feladó)\s*:\*?\s", re.I)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(Sent|Date|To|Subject|Gesendet|Datum|An|Betreff|Envoyé|Date|À|Objet|Enviado|Fecha|Para|"
    r"Asunto|Inviato|Data|A|Oggetto|Verzonden|Aan|Onderwerp|Skickat|Till|Ämne|Sendt|Til|Emne|"
    r"Wysłano|Do|Temat|Отправлено|Кому|Тема|Odesláno|Komu|Předmět)\s*:",
    re.I,
)
_SIGNATURE = re.compile(r"^--\s?$")
_MOBILE = re.compile(
    r"^\s*(Sent from my |Sent from Mail for |Get Outlook for |Von meinem .* gesendet|"
    r"Envoyé de mon |Enviado desde mi |Inviato da )",
    re.I,
)


def _starts_quote(lines: list[str], i: int) -> bool:
    line = lines[i]
    stripped = line.strip()
    if stripped.startswith(">") or _SEPARATOR.match(line) or _WROTE_LINE.match(stripped):
        return True
    if _UNDERSCORES.match(line) or _HEADER_FROM.match(line):
        following = [next_line for next_line in lines[i + 1 : i + 4] if next_line.strip()]
        if _HEADER_FROM.match(line):
            return bool(following) and _HEADER_NEXT.match(following[0]) is not None
        return bool(following) and _HEADER_FROM.match(following[0]) is not None
    if len(stripped) < 1000 and _ATTRIBUTION_START.match(stripped):  # attributions are short
        joined = stripped
        for extra in lines[i + 1 : i + 3]:
            if _ATTRIBUTION_END.search(joined):
                break
            joined += " " + extra.strip()[:1000]
        return _ATTRIBUTION_END.search(joined) is not None and len(joined) < 400
    return False


def _cut(lines: list[str]) -> tuple[list[str], int]:
    """The lines above the first quote or signature, and where that cut is."""
    for i, line in enumerate(lines):
        if _SIGNATURE.match(line) or _MOBILE.match(line) or _starts_quote(lines, i):
            return lines[:i], i
    return lines, len(lines)


def own_text(body: str) -> str:
    """The writer's own lines of ``body`` (a reply's text), trailing blank lines dropped.

    Top-posted (the text above the quote) or, when nothing is above it, bottom-posted
    (Thunderbird's default: the first text below a ``>`` quote and its attribution).
    """
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept, at = _cut(lines)
    if any(line.strip() for line in kept) or at >= len(lines) or not _starts_quote(lines, at):
        return "\n".join(kept).rstrip()
    # Bottom-posting: step over the attribution and the ">" lines, take what follows.
    i = at
    if not lines[i].lstrip().startswith(">"):
        if _SEPARATOR.match(lines[i]) or _UNDERSCORES.match(lines[i]) or _HEADER_FROM.match(lines[i]):
            return ""  # an unquoted original follows: nothing of the writer's is below it
        while i < len(lines) and i - at < 3 and not _ATTRIBUTION_END.search(lines[i]):
            i += 1
        i += 1  # the attribution's last line
    quoted = False
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(">")):
        quoted = quoted or lines[i].lstrip().startswith(">")
        i += 1
    if not quoted:
        return ""
    return "\n".join(_cut(lines[i:])[0]).rstrip()
