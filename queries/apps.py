from django.apps import AppConfig


class QueriesConfig(AppConfig):
    name = "queries"
    verbose_name = "Query library"  # not "Queries": breadcrumbs would read "Queries › Queries"
