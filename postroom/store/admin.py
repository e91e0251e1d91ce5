"""Django admin: configuration is editable, tracking records are read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone

from postroom.store import agents
from postroom.store.models import (
    Agent,
    ApiToken,
    Interaction,
    JournalEvent,
    Mailbox,
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


class MailboxForm(forms.ModelForm):
    class Meta:
        model = Mailbox
        fields = "__all__"
        # Never echo the stored password back into the page; blank keeps the old one.
        widgets = {"password": forms.PasswordInput(render_value=False)}

    def clean_password(self) -> str:
        password = self.cleaned_data.get("password", "")
        if not password and self.instance.pk:
            return self.instance.password
        return password


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    form = MailboxForm
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
    list_display = ["mailbox", "uidvalidity", "uid", "folder", "reason", "size", "created_at"]
    list_filter = ["mailbox"]
    search_fields = ["reason"]


@admin.register(JournalEvent)
class JournalEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "kind", "interaction", "agent", "mailbox"]
    list_filter = ["kind"]
    date_hierarchy = "at"
    list_select_related = ["interaction", "agent", "mailbox"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["name", "user", "created_at"]
    search_fields = ["name", "user__username"]
    # Issue tokens with postroom.store.agents.issue_token; only hashes are stored.
    exclude = ["key_hash"]
