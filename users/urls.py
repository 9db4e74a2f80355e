"""Pages reached from links, outside the console (mounted at the site root by ``fleet/urls.py``)."""

from django.urls import path

from users import views

app_name = "users"

urlpatterns = [
    path("invite/<str:token>/", views.accept_invite, name="accept-invite"),
    path("set-password/<str:uidb64>/<str:token>/", views.set_password, name="set-password"),
]
