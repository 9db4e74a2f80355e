from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Live queries"  # not "Campaigns": breadcrumbs would read "Campaigns › Campaigns"
