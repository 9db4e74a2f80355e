from django.apps import AppConfig


class AgentapiConfig(AppConfig):
    name = "agentapi"
