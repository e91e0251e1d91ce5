"""Django admin: configuration is editable, tracking records are read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone

from postroom.store import agents
from postroom.store.models import (
    Agent,
    AgentGroup,
    ApiToken,
    AuditEntry,
    Evaluation,
    EvaluationCriterion,
    Interaction,
    JournalEvent,
    Mailbox,
    OAuth2Grant,
    OutboundMessage,
    Outgoing,
    Quarantined,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the engine: look, never touch."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    # No password here: mailbox passwords live in the configuration file only (0017).
    list_display = [
        "address",
        "kind",
        "display_name",
        "login",
        "folder",
        "auto_response",
        "default_priority",
        "last_uid",
    ]
    list_filter = ["kind", "auto_response"]
    search_fields = ["address", "display_name", "login"]
    readonly_fields = ["uidvalidity", "last_uid", "updated_at"]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "address",
        "ready",
        "skills",
        "auto_answer",
        "is_supervisor",
        "capacity",
        "state_changed_at",
        "routed_count",
        "user",
    ]
    list_filter = ["ready", "auto_answer", "is_supervisor"]
    search_fields = ["name", "address"]
    # Ready / Not Ready goes through postroom.store.agents.set_ready (stamped, journaled).
    readonly_fields = ["ready", "state_changed_at", "routed_count"]
    raw_id_fields = ["user"]
    # Box rights (decision 0022): the boxes this agent reads besides its groups' boxes.
    filter_horizontal = ["boxes", "supervisors"]
    actions = ["make_ready", "make_not_ready"]

    @admin.action(description="Make the selected agents Ready")
    def make_ready(self, request, queryset) -> None:
        self._set_ready(request, queryset, True)

    @admin.action(description="Make the selected agents Not Ready")
    def make_not_ready(self, request, queryset) -> None:
        self._set_ready(request, queryset, False)

    def _set_ready(self, request, queryset, ready: bool) -> None:
        now = timezone.now()
        changed = sum(
            agents.set_ready(agent, ready, now=now, by=request.user) for agent in queryset
        )
        self.message_user(request, f"{changed} agent(s) changed.")


@admin.register(AgentGroup)
class AgentGroupAdmin(admin.ModelAdmin):
    """Teams and the incoming boxes their members may read (decision 0022)."""

    list_display = ["name", "member_count", "box_list"]
    search_fields = ["name", "members__address", "boxes__address"]
    filter_horizontal = ["members", "boxes"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("members", "boxes")

    @admin.display(description="members")
    def member_count(self, obj: AgentGroup) -> int:
        return len(obj.members.all())

    @admin.display(description="boxes")
    def box_list(self, obj: AgentGroup) -> str:
        return ", ".join(b.address for b in obj.boxes.all())


@admin.register(EvaluationCriterion)
class EvaluationCriterionAdmin(admin.ModelAdmin):
    list_display = ["position", "code", "label", "weight", "max_score", "active"]
    list_editable = ["active"]
    list_display_links = ["code"]


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "interaction", "agent", "mailbox", "evaluator", "score"]
    list_filter = ["agent", "mailbox"]
    search_fields = ["evaluator", "comment", "interaction__subject"]
    list_select_related = ["interaction", "agent", "mailbox"]


class JournalInline(admin.TabularInline):
    model = JournalEvent
    fields = ["at", "kind", "agent", "mailbox", "detail"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Interaction)
class InteractionAdmin(ReadOnlyAdmin):
    list_display = [
        "guid",
        "subject",
        "customer",
        "mailbox",
        "status",
        "priority",
        "agent",
        "arrival_time",
        "answered_at",
        "replied_at",
    ]
    list_filter = ["status", "mailbox", "agent", "approval"]
    search_fields = ["subject", "customer", "customer_name", "message_id", "guid"]
    date_hierarchy = "arrival_time"
    list_select_related = ["mailbox", "agent"]
    inlines = [JournalInline]


@admin.register(Outgoing)
class OutgoingAdmin(ReadOnlyAdmin):
    list_display = ["key", "kind", "state", "attempts", "next_attempt_at", "sent_at", "interaction"]
    list_filter = ["state", "kind"]
    search_fields = ["key", "message_id"]
    exclude = ["raw"]
    list_select_related = ["interaction"]


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ReadOnlyAdmin):
    list_display = [
        "mailbox",
        "uid",
        "sender",
        "subject",
        "outcome",
        "reason",
        "interaction",
        "removed_at",
        "created_at",
    ]
    list_filter = ["outcome", "mailbox"]
    search_fields = ["message_id", "sender", "subject"]


@admin.register(Quarantined)
class QuarantinedAdmin(ReadOnlyAdmin):
    list_display = ["mailbox", "uidvalidity", "uid", "folder", "reason", "size", "created_at", "moved_at", "released_at"]
    list_filter = ["mailbox"]
    search_fields = ["reason", "message_id"]
    actions = ["release"]

    @admin.action(description="Release: give back to the box, to be taken again as mail")
    def release(self, request, queryset) -> None:
        from postroom.store.commands import CommandError
        from postroom.store.quarantine import request_release

        for row in queryset:
            try:
                request_release(row.pk, request.user.get_username(), timezone.now())
            except CommandError as exc:
                self.message_user(request, exc.message, level="warning")


@admin.register(JournalEvent)
class JournalEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "kind", "interaction", "agent", "mailbox"]
    list_filter = ["kind"]
    date_hierarchy = "at"
    list_select_related = ["interaction", "agent", "mailbox"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "user", "created_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username"]
    # Issue tokens with `postroom token`; only hashes are stored, and never shown.
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_change_permission(self, request, obj=None) -> bool:
        # The revoke action needs it; every field stays read-only (ReadOnlyAdmin's view).
        return obj is None and request.user.is_staff

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        return ["user", "name", "created_at", "expires_at", "revoked_at"]

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset) -> None:
        done = agents.revoke_tokens(queryset.select_related("user"), by=request.user.get_username())
        self.message_user(request, f"{done} token(s) revoked.")


@admin.register(OAuth2Grant)
class OAuth2GrantAdmin(ReadOnlyAdmin):
    """Boxes on OAuth2 (decision 0046): their grant's state, and signing one in again.

    The action sends the administrator to the identity provider; its redirect comes back
    to `callback`, which stores the new grant (the running engine's next login uses it).
    Every failure on the way (no configuration, a refused or lost grant, the IdP away, a
    stale or forged redirect) is a message on the list, never an error page: this is the
    page people open when a grant was revoked. The redirect URI to register at the IdP is
    this site's /admin/store/oauth2grant/callback/."""

    list_display = ["login", "provider", "state", "access_expires_at", "refresh_expires_at", "failures",
                    "last_error", "authorized_at"]
    list_filter = ["state", "provider"]
    search_fields = ["login"]
    # Tokens are credentials: never shown.
    exclude = ["refresh_token", "access_token"]
    actions = ["authorize"]

    def has_change_permission(self, request, obj=None) -> bool:
        # The action needs it, as ApiTokenAdmin's; every field stays read-only.
        return obj is None and request.user.is_staff and request.user.has_perm("store.change_oauth2grant")

    def get_urls(self):
        from django.urls import path

        own = [path("callback/", self.admin_site.admin_view(self.callback), name="store_oauth2grant_callback")]
        return own + super().get_urls()

    def _back(self):
        from django.http import HttpResponseRedirect
        from django.urls import reverse

        return HttpResponseRedirect(reverse("admin:store_oauth2grant_changelist"))

    @admin.action(description="Authorize again: sign the box in at its identity provider", permissions=["change"])
    def authorize(self, request, queryset):
        from django.http import HttpResponseRedirect
        from django.urls import reverse

        from postroom.store.oauth2 import authorization_url, site_providers

        grants = list(queryset[:2])
        if len(grants) != 1:
            self.message_user(request, "Select one box to authorize at a time.", level="warning")
            return None
        login = grants[0].login
        provider = site_providers().get(login)
        if provider is None:
            self.message_user(request, f"{login} is not a box on OAuth2 in the site's configuration "
                              "(POSTROOM_CONFIG); use `postroom oauth2 authorize`.", level="error")
            return None
        redirect_uri = request.build_absolute_uri(reverse("admin:store_oauth2grant_callback"))
        url, state, verifier = authorization_url(provider, login, redirect_uri)
        request.session[f"oauth2:{state}"] = {"login": login, "verifier": verifier, "redirect_uri": redirect_uri}
        return HttpResponseRedirect(url)

    def callback(self, request):
        from postroom.core.oauth2 import Answer
        from postroom.store.audit import record
        from postroom.store.oauth2 import authorize, site_providers

        if not self.has_change_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        pending = request.session.pop(f"oauth2:{request.GET.get('state', '')}", None)
        if pending is None:
            self.message_user(request, "This sign-in is not one this session started (or it was used "
                              "already); start it again from the action.", level="error")
            return self._back()
        login = pending["login"]
        if request.GET.get("error") or not request.GET.get("code"):
            reason = request.GET.get("error_description") or request.GET.get("error") or "no code"
            self.message_user(request, f"{login}: the identity provider did not authorize: {reason}", level="error")
            return self._back()
        provider = site_providers().get(login)
        if provider is None:
            self.message_user(request, f"{login} is no longer a box on OAuth2 in the configuration.", level="error")
            return self._back()
        reply = authorize(provider, login, request.GET["code"], pending["verifier"], timezone.now(),
                          pending["redirect_uri"])
        if reply.answer is not Answer.OK:
            self.message_user(request, f"{login}: not authorized: {reply.detail}", level="error")
            return self._back()
        record("oauth2_authorized", actor=request.user.get_username(), target=login, provider=provider.name)
        self.message_user(request, f"{login}: authorized; the engine uses the new grant at its next login.")
        return self._back()


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit trail: read-only, and nothing in it can be deleted from the web."""

    list_display = ["at", "actor", "action", "target", "ip", "via"]
    list_filter = ["action", "via"]
    search_fields = ["actor", "target", "ip"]
    date_hierarchy = "at"

    def get_actions(self, request):
        return {}


# -- routing rules, contacts, wrap-up codes ---------------------------------------------------
# Imported here, not at the top, so this block can be appended without touching the rest.

import json  # noqa: E402

from django.core.exceptions import ValidationError  # noqa: E402
from django.utils.html import format_html_join  # noqa: E402

from postroom.core import rules as core_rules  # noqa: E402
from postroom.store.models import Contact, Rule, WrapUpCode  # noqa: E402


def _describe_condition(data: object) -> str:
    if isinstance(data, dict):
        op = str(data.get("op", "?")).replace("_", " ")
        return f'{data.get("field", "?")} {op} "{data.get("value", "")}"'
    return repr(data)


def _describe_action(data: object) -> str:
    if isinstance(data, dict):
        value = data.get("value")
        shown = f'"{value}"' if isinstance(value, str) else json.dumps(value)
        return f"{data.get('action', '?')} {shown}"
    return repr(data)


def rule_summary(rule: Rule) -> str:
    """``if subject contains "refund" → require_approval true, add_priority 5 (continue)``."""
    joiner = " and " if rule.match == Rule.ALL else " or "
    conditions = rule.conditions if isinstance(rule.conditions, list) else []
    actions = rule.actions if isinstance(rule.actions, list) else []
    when = (
        "if " + joiner.join(_describe_condition(c) for c in conditions) if conditions else "always"
    )
    then = ", ".join(_describe_action(a) for a in actions) or "nothing (the check ends here)"
    tail = " (continue)" if rule.continue_after else ""
    return f"{when} → {then}{tail}"


class RuleForm(forms.ModelForm):
    """Conditions and actions are JSON lists, checked by ``core.rules`` as the site file is."""

    class Meta:
        model = Rule
        fields = ["position", "name", "enabled", "match", "conditions", "actions", "continue_after"]
        help_texts = {
            "conditions": (
                'A list like [{"field": "subject", "op": "contains", "value": "refund"}]. '
                "Fields: to, cc, from, from_domain, subject, body, header:Name. "
                "Ops: contains, equals, regex, not_contains (case-insensitive). "
                "An empty list matches every mail."
            ),
            "actions": (
                'A list like [{"action": "queue", "value": "sales"}]. Actions: queue (skill), '
                "agent (address), set_priority / add_priority (integer), require_approval "
                '(true/false), auto_response (text or "off"), forward_copy (address), '
                "delete (reason)."
            ),
        }

    def _check(self, field: str, check: core_rules.ProblemCheck) -> object:
        value = self.cleaned_data.get(field)
        if not isinstance(value, list):
            raise ValidationError("Expected a JSON list.")
        found = core_rules.list_problems(value, field, check)
        if found:
            raise ValidationError([f"{path}: {message}" for path, message in found])
        return value

    def clean_conditions(self) -> object:
        return self._check("conditions", core_rules.condition_problems)

    def clean_actions(self) -> object:
        return self._check("actions", core_rules.action_problems)

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        actions = cleaned.get("actions")
        if isinstance(actions, list) and "actions" not in self.errors:
            whole = {
                "name": cleaned.get("name") or "rule",
                "match": cleaned.get("match") or Rule.ALL,
                "actions": actions,
            }
            found = core_rules.rule_problems(whole)
            if found:
                self.add_error("actions", [f"{path}: {message}" for path, message in found])
        return cleaned


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ["position", "name", "enabled", "summary", "updated_at"]
    list_display_links = ["name"]
    list_editable = ["position", "enabled"]
    list_filter = ["enabled", "match", "continue_after"]
    search_fields = ["name"]
    ordering = ["position", "id"]
    readonly_fields = ["readable", "updated_at"]

    @admin.display(description="what it does")
    def summary(self, rule: Rule) -> str:
        return rule_summary(rule)

    @admin.display(description="in words")
    def readable(self, rule: Rule) -> str:
        if rule.pk is None:
            return "-"
        return format_html_join("", "<div>{}</div>", [(rule_summary(rule),)])


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = "__all__"

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        if not cleaned.get("address") and not cleaned.get("domain"):
            raise ValidationError("Give an address (one person) or a domain (a whole company).")
        return cleaned


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactForm
    list_display = ["__str__", "address", "domain", "level", "priority", "requires_approval"]
    list_filter = ["level", "requires_approval"]
    search_fields = ["name", "address", "domain", "notes"]

    def save_model(self, request, obj: Contact, form, change: bool) -> None:
        # Lookups compare lower-cased addresses and domains; store them that way.
        obj.address = obj.address.strip().lower() or None if obj.address else None
        obj.domain = obj.domain.strip().lower().removeprefix("@") or None if obj.domain else None
        super().save_model(request, obj, form, change)


@admin.register(WrapUpCode)
class WrapUpCodeAdmin(admin.ModelAdmin):
    list_display = ["code", "label"]
    search_fields = ["code", "label"]
