from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "postroom.web"
    label = "web"

    def ready(self) -> None:
        from postroom.web import signals  # noqa: F401 - connects the audit receivers
