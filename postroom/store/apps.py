from django.apps import AppConfig


class StoreConfig(AppConfig):
    name = "postroom.store"
    label = "store"
    verbose_name = "Postroom"
