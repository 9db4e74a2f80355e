"""Apple MDM paths, as Fleet serves them (so a device or tool pointed at Fleet works unchanged)."""

from django.urls import path

from mdm import views

app_name = "mdm"

urlpatterns = [
    path("mdm/apple/mdm", views.mdm_channel, name="channel"),
    path("mdm/apple/scep", views.scep_endpoint, name="scep"),
    path("api/mdm/apple/enroll", views.enroll, name="enroll"),
]
