"""Wrong old passwords on the console's password-change page are throttled like failed logins."""

from __future__ import annotations

from hosts.choices import Role
from tests.factories import user_with_role


def test_wrong_old_passwords_are_throttled(db, client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    user = user_with_role("pat", Role.OBSERVER)
    client.force_login(user)
    new = {"new_password1": "Correct-horse-42!", "new_password2": "Correct-horse-42!"}
    for _ in range(3):
        response = client.post("/admin/password_change/", {"old_password": "guess", **new})
        assert response.status_code == 200 and "old_password" in response.context["form"].errors
    blocked = client.post("/admin/password_change/", {"old_password": "pw-pat", **new})
    assert blocked.status_code == 429
    user.refresh_from_db()
    assert user.check_password("pw-pat")  # nothing changed while blocked
