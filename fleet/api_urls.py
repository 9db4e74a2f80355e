"""The REST API under /api/v1/: each app registers its viewsets here."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from activities import api as activities_api
from campaigns import api as campaigns_api
from fleet.api_auth import TokenLoginView, TokenLogoutAllView, TokenLogoutView
from fleet.api_docs import ApiDocsView
from hosts import api as hosts_api
from hosts import labels_api
from hostscripts import api as hostscripts_api
from mdm import api as mdm_api
from mdm import profiles_api
from packs import api as packs_api
from packs.spec_api import SpecView
from queries import api as queries_api
from queries.report_api import QueryReportView
from software import api as software_api
from taskserver import api as taskserver_api

router = DefaultRouter()
hosts_api.register(router)
labels_api.register(router)
campaigns_api.register(router)
queries_api.register(router)
packs_api.register(router)
activities_api.register(router)
software_api.register(router)
hostscripts_api.register(router)
mdm_api.register(router)
profiles_api.register(router)
taskserver_api.register(router)

urlpatterns = [
    path("auth/token/", TokenLoginView.as_view(), name="api-token"),
    path("auth/logout/", TokenLogoutView.as_view(), name="api-logout"),
    path("auth/logout-all/", TokenLogoutAllView.as_view(), name="api-logout-all"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script from this server (no inline script: the CSP forbids it).
    path("docs/", ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("queries/<int:pk>/report/", QueryReportView.as_view(), name="query-report"),
    path("spec/", SpecView.as_view(), name="api-spec"),
    path("mdm/apple/", mdm_api.MdmStateView.as_view(), name="mdm-state"),
    path("mdm/apple/apns/csr/", mdm_api.ApnsCsrView.as_view(), name="mdm-apns-csr"),
    path("mdm/apple/apns/", mdm_api.ApnsUploadView.as_view(), name="mdm-apns-upload"),
    path(
        "mdm/apple/enrollment-profile/",
        mdm_api.EnrollmentProfileView.as_view(),
        name="mdm-enrollment-profile",
    ),
    path("", include(router.urls)),
]
