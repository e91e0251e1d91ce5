from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "postroom.store"
    label = "store"
    verbose_name = "Postroom"

    def ready(self) -> None:
        from postroom.store import search  # noqa: F401 - indexes replies as they are queued
