"""The workspace's pure parts: report arithmetic, keyset cursors, search terms, the
sanitizer policy."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from postroom.core import figures, paging
from postroom.store.search import fts5_query, terms, tsquery
from postroom.web.sanitize import clean_mail_html, frame_policy

# -- figures --------------------------------------------------------------------------------


def test_percentiles_interpolate_between_ranks() -> None:
    assert figures.percentile([], 50) is None
    assert figures.percentile([7], 90) == 7
    assert figures.percentile([1, 2, 3, 4], 50) == 2.5
    assert figures.percentile([4, 1, 3, 2], 50) == 2.5  # order does not matter
    # rank (10 - 1) * 0.9 = 8.1: between the 9th (9) and the 10th (100)
    assert figures.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], 90) == pytest.approx(18.1)
    assert figures.percentile(list(range(101)), 90) == 90


def test_spread_ignores_missing_and_negative_values() -> None:
    found = figures.spread([60, None, 120, -5, 180])
    assert (found.count, found.median, found.mean) == (3, 120, 120)
    assert figures.spread([]) == figures.Spread(0, None, None, None)


def test_service_level_counts_unanswered_against_it() -> None:
    assert figures.service_level([], 60) is None
    assert figures.service_level([30, 60, 61, None], 60) == 0.5
    assert figures.service_level([10], 60) == 1.0


def test_age_buckets_and_daily_series() -> None:
    assert [figures.age_bucket(s) for s in (0, 3599, 3600, 86400, 4 * 86400)] == [
        "under 1 h", "under 1 h", "1-4 h", "1-3 days", "over 3 days",
    ]
    day = date(2026, 3, 1)
    series = figures.daily_series([day, day, day + timedelta(days=2)], day, day + timedelta(days=3))
    assert series == [
        (day, 2), (day + timedelta(days=1), 0), (day + timedelta(days=2), 1), (day + timedelta(days=3), 0)
    ]


def test_weighted_score_is_each_criterions_share_weighted() -> None:
    # accuracy 5/5 weight 3, tone 2/4 weight 1: (3 * 1 + 1 * 0.5) / 4 = 87.5 %
    assert figures.weighted_score([(5, 5, 3), (2, 4, 1)]) == 87.5
    assert figures.weighted_score([(0, 5, 1)]) == 0
    with pytest.raises(ValueError):
        figures.weighted_score([(6, 5, 1)])
    with pytest.raises(ValueError):
        figures.weighted_score([])


# -- keyset cursors -------------------------------------------------------------------------


def test_a_cursor_survives_the_round_trip_and_garbage_is_no_cursor() -> None:
    at = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    cursor = paging.Cursor(at, 4711)
    assert paging.decode(paging.encode(cursor)) == cursor
    for junk in (None, "", "x", "!!!", "a" * 500, paging.encode(paging.Cursor(at, 1))[:-3] + "@@@"):
        assert paging.decode(junk) is None
    naive = paging.encode(paging.Cursor(datetime(2026, 1, 1), 1))  # noqa: DTZ001 - the point
    assert paging.decode(naive) is None


def test_split_page_gives_the_next_cursor_only_when_there_is_more() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(at, n) for n in (9, 8, 7)]

    def key(row):
        return paging.Cursor(*row)

    page, after = paging.split_page(rows, 2, key)
    assert page == rows[:2] and after == paging.Cursor(at, 8)
    page, after = paging.split_page(rows, 3, key)
    assert page == rows and after is None
    assert paging.split_page([], 5, key) == ([], None)


# -- search terms ---------------------------------------------------------------------------


def test_queries_become_word_prefixes_whatever_is_typed() -> None:
    assert terms('Refund "parcel" OR NOT (x*) AND') == ["refund", "parcel", "or", "not", "x", "and"]
    assert terms("Grüße, Straße! ÉCOLE Łódź") == ["gruße", "straße", "ecole", "lodz"]
    assert terms("  ") == [] and terms("\"*'():-^") == []
    assert fts5_query(["refund", "parcel"]) == '"refund"* AND "parcel"*'
    assert tsquery(["refund", "parcel"]) == "'refund':* & 'parcel':*"
    assert len(terms(" ".join(f"w{i}" for i in range(50)))) == 12


# -- the sanitizer policy -------------------------------------------------------------------

HOSTILE = (
    '<p onclick="steal()" style="color:red;position:fixed;top:0">Hello</p>'
    "<script>alert(1)</script><style>body{background:url(http://evil.test/x)}</style>"
    '<img src="http://evil.test/pixel.png" onerror="alert(2)"><img src="cid:logo@x">'
    '<a href="javascript:alert(3)">js</a><a href="https://example.test/help">help</a>'
    '<iframe src="http://evil.test"></iframe><form action="http://evil.test"><input name=p></form>'
    '<svg onload="alert(4)"></svg><base href="http://evil.test/"><meta http-equiv="refresh" content="0">'
    '<div style="background-image:url(http://evil.test/bg.png)">bg</div>'
)


def test_the_policy_keeps_the_look_and_drops_every_active_part() -> None:
    cleaned = clean_mail_html(HOSTILE, inline={"logo@x": ("image/png", b"\x89PNG")})
    html = cleaned.html
    for gone in ("script", "onclick", "onerror", "onload", "javascript:", "<style", "iframe", "<form",
                 "<input", "<svg", "<base", "<meta", "evil.test", "position", "url("):
        assert gone not in html, gone
    assert '<p style="color:red">Hello</p>' in html
    assert 'src="data:image/png;base64,iVBORw=="' in html  # the inline image, as data:
    assert '<a href="https://example.test/help" target="_blank" rel="noopener noreferrer nofollow">' in html
    assert cleaned.blocked_images == 1


def test_remote_images_only_when_asked_and_the_frame_policy_agrees() -> None:
    html = '<img src="https://images.example.test/a.png">'
    assert clean_mail_html(html).html == "<img>"
    assert clean_mail_html(html, remote_images=True).html == html
    assert "img-src data:;" in frame_policy(remote_images=False)
    assert "img-src data: http: https:;" in frame_policy(remote_images=True)
    for policy in (frame_policy(remote_images=False), frame_policy(remote_images=True)):
        assert "script-src 'none'" in policy and "default-src 'none'" in policy
        assert "sandbox allow-popups" in policy and "allow-scripts" not in policy
        assert "frame-ancestors 'self'" in policy


def test_the_migration_folds_as_the_search_does() -> None:
    import importlib

    from postroom.store import search

    migration = importlib.import_module("postroom.store.migrations.0009_workspace")
    assert (migration.FOLD_FROM, migration.FOLD_TO) == (search.FOLD_FROM, search.FOLD_TO)
    assert len(search.FOLD_FROM) == len(search.FOLD_TO)
