"""Customer HTML made safe to show: the sanitizer policy (nh3) for the transcript's frames.

Defence in depth, three layers, each enough on its own against script:
1. this policy: an allow-list of tags and attributes (no script, no style element, no
   event handler, no form, no frame, no base), links only to http(s) and mailto and marked
   external, images only inline (cid: turned into data: URIs) unless the reader asked for
   remote ones, inline styles reduced to a list of harmless properties (no url(), no
   positioning);
2. the frame: a sandboxed iframe (no scripts, no same origin, popups only for links);
3. the frame's own Content-Security-Policy: no script at all, images from data: only
   (plus http(s) once the reader asks), no fetch, no form, no base, no parent but ours.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import nh3

__all__ = ["ALLOWED_TAGS", "Cleaned", "clean_mail_html", "frame_document", "frame_policy"]

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
        "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike",
        "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt",
        "u", "ul",
    }
)
_COMMON = {"title", "lang", "dir", "align", "style", "class"}
ALLOWED_ATTRIBUTES = {
    "*": _COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height", "border"},
    "font": {"color", "face", "size"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor", "summary"},
    "td": {"width", "colspan", "rowspan", "valign", "bgcolor", "nowrap"},
    "th": {"width", "colspan", "rowspan", "valign", "bgcolor", "scope"},
    "tr": {"valign", "bgcolor"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "ol": {"start", "type"},
    "li": {"value"},
    "blockquote": {"cite"},
}
# Properties that change how mail looks and nothing else: no url() can hide in them and
# none takes text out of the flow over other text.
STYLE_PROPERTIES = frozenset(
    {
        "color", "background-color", "font", "font-family", "font-size", "font-style",
        "font-weight", "font-variant", "text-align", "text-decoration", "text-indent",
        "text-transform", "letter-spacing", "line-height", "white-space", "word-spacing",
        "vertical-align", "margin", "margin-top", "margin-right", "margin-bottom",
        "margin-left", "padding", "padding-top", "padding-right", "padding-bottom",
        "padding-left", "border", "border-top", "border-right", "border-bottom", "border-left",
        "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
        "width", "height", "max-width", "min-width", "list-style-type", "direction",
    }
)
_LINK_SCHEMES = ("http://", "https://", "mailto:")
_REMOTE = ("http://", "https://", "//")


@dataclass(frozen=True)
class Cleaned:
    html: str
    # Remote images left out (the reader may ask for them).
    blocked_images: int


def clean_mail_html(
    html: str, *, remote_images: bool = False, inline: dict[str, tuple[str, bytes]] | None = None
) -> Cleaned:
    """`html` sanitized for a transcript frame; `inline` maps Content-IDs to (type, bytes)
    of the message's own images, shown as data: URIs."""
    inline = inline or {}
    blocked = 0

    def attribute(tag: str, name: str, value: str) -> str | None:
        nonlocal blocked
        low = value.strip().lower()
        if name == "href":
            return value if low.startswith(_LINK_SCHEMES) or low.startswith("#") else None
        if name == "src" and tag == "img":
            if low.startswith("cid:"):
                found = inline.get(value.strip()[4:].strip("<>"))
                if found is None:
                    return None
                kind, data = found
                return f"data:{kind};base64,{base64.b64encode(data).decode()}"
            if low.startswith("data:image/") and not low.startswith("data:image/svg"):
                return value
            if low.startswith(_REMOTE):
                if remote_images:
                    return value
                blocked += 1
            return None
        if name == "style" and "url(" in low.replace(" ", ""):
            return None
        return value

    cleaned = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=attribute,
        url_schemes={"http", "https", "mailto", "data", "cid"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=set(STYLE_PROPERTIES),
        strip_comments=True,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template"},
    )
    return Cleaned(html=cleaned, blocked_images=blocked)


FRAME_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;color:#1f2328;background:#fff;margin:.75rem;"
    "overflow-wrap:anywhere}img{max-width:100%;height:auto}"
    "blockquote{margin:.5rem 0;padding-left:.75rem;border-left:3px solid #d1d9e0;color:#59636e}"
    'a[href^="http"]::after,a[href^="mailto"]::after{content:" \\2197";font-size:.8em}'
    "table{max-width:100%}"
)


def frame_document(cleaned_html: str) -> str:
    """The frame's whole document around sanitized HTML (our style, then the mail)."""
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer">'
        f"<style>{FRAME_STYLE}</style></head><body>{cleaned_html}</body></html>"
    )


def frame_policy(*, remote_images: bool) -> str:
    """The frame's Content-Security-Policy: nothing runs, nothing is fetched (but the
    images the reader asked for), nothing but our page may embed it."""
    images = "data: http: https:" if remote_images else "data:"
    return (
        "default-src 'none'; "
        "style-src 'unsafe-inline'; "
        f"img-src {images}; "
        "script-src 'none'; "
        "form-action 'none'; "
        "base-uri 'none'; "
        "frame-ancestors 'self'; "
        "sandbox allow-popups allow-popups-to-escape-sandbox"
    )
