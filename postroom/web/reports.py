"""The reports page (iceReporting, MailFlow's reports) and its downloads: every table as
CSV and as Excel (openpyxl), with the same figures as the page (`postroom.store.reports`).
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import conditional_escape, escape
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from postroom.config import parse_duration
from postroom.store import reports
from postroom.store.models import Agent, Mailbox
from postroom.store.permissions import Role, readable_boxes, visible_agents
from postroom.web import charts
from postroom.web.access import page, principal_of
from postroom.web.pages import a_date, an_int
from postroom.web.views import nav

DEFAULT_DAYS = 7
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Spreadsheet programs run a cell that starts with one of these as a formula (CSV
# injection): text from customers is written with a leading apostrophe instead.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def query_from(request: HttpRequest) -> reports.ReportQuery:
    today = timezone.localdate()
    until = a_date(request.GET.get("until")) or today
    since = a_date(request.GET.get("since")) or until - timedelta(days=DEFAULT_DAYS - 1)
    if since > until:
        since, until = until, since
    since = max(since, until - timedelta(days=reports.MAX_DAYS - 1))
    within = parse_duration((request.GET.get("within") or "").strip()[:20] or None)
    return reports.ReportQuery(
        since=since,
        until=until,
        box=an_int(request.GET.get("box"), 1),
        agent=an_int(request.GET.get("agent"), 1),
        contact=(request.GET.get("contact") or "").replace("\x00", "").strip()[:320],
        within=within if within and within > 0 else None,
    )


def _chart_inputs(report: reports.Report) -> dict[str, Any]:
    days = tuple(d for d, _, _ in report.trend)
    boxes = [r for r in report.tables["boxes"].rows if r[3] is not None]
    found: dict[str, Any] = {
        "trend": charts.trend(days, tuple(i for _, i, _ in report.trend), tuple(o for _, _, o in report.trend))
        if days else None,
        "responses": None,
    }
    if boxes:
        found["responses"] = charts.response_times(
            tuple(r[0] for r in boxes), tuple(r[3] for r in boxes), tuple(r[4] or 0 for r in boxes)
        )
    return found


@require_GET
@never_cache
@page(Role.AGENT)
def reports_page(request: HttpRequest) -> HttpResponse:
    who = principal_of(request)
    query = query_from(request)
    report = reports.build(who, query)
    params = request.GET.copy()
    return render(
        request,
        "postroom/reports.html",
        {
            "nav": nav(who),
            "query": query,
            "report": report,
            "tables": [_shown(t) for t in report.tables.values()],
            "charts": _chart_inputs(report),
            "params": params.urlencode(),
            "within_text": request.GET.get("within", ""),
            "choices": {
                "boxes": readable_boxes(who, Mailbox.objects.all()).order_by("address"),
                "agents": visible_agents(who, Agent.objects.all()).order_by("name"),
            },
        },
    )


def _shown(table: reports.Table) -> dict[str, Any]:
    """A table for the page, its rows already HTML: a number right-aligned, nothing as a
    dash, an interaction's id as the link to its transcript, everything else escaped.

    Built here rather than by a template loop: at 100,000 interactions the template's tags
    per cell (a few thousand cells) cost as much as computing the report."""
    keys = [k for k, _ in table.columns]
    rows = []
    for row in table.rows:
        cells = []
        for key, value in zip(keys, row, strict=True):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is None:
                shown = "—"
            elif key == "guid" and value:
                shown = f'<a href="{escape(reverse("transcript", args=[value]))}">transcript</a>'
            else:
                shown = conditional_escape(localize(value))
            cells.append(f'<td class="num">{shown}</td>' if number else f"<td>{shown}</td>")
        rows.append(mark_safe("<tr>" + "".join(cells) + "</tr>"))  # noqa: S308 - every value escaped above
    return {"name": table.name, "title": table.title, "columns": table.columns, "note": table.note,
            "rows": rows}


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


@require_GET
@never_cache
@page(Role.AGENT)
def reports_download(request: HttpRequest) -> HttpResponse:
    """?table=NAME&format=csv|xlsx and the page's filters: one table as a file."""
    who = principal_of(request)
    query = query_from(request)
    name = request.GET.get("table", "daily")
    if name not in reports.TABLES:
        name = "daily"
    table = reports.build(who, query).tables[name]
    stem = f"postroom-{name}-{query.since.isoformat()}-{query.until.isoformat()}"
    header = [label for _, label in table.columns]
    rows = [[_cell(v) for v in row] for row in table.rows]
    if request.GET.get("format") == "xlsx":
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet(name[:31])
        sheet.append(header)
        for row in rows:
            sheet.append(row)
        buffer = io.BytesIO()
        book.save(buffer)
        response = HttpResponse(buffer.getvalue(), content_type=XLSX)
        response["Content-Disposition"] = f'attachment; filename="{stem}.xlsx"'
        return response
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    # The BOM makes spreadsheet programs read the file as UTF-8.
    response = HttpResponse("\ufeff" + text.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{stem}.csv"'
    return response
