"""Fleet's password rule (12+ characters with a number and a symbol) on top of Django's checks."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError

from users.validators import FleetPasswordValidator


@pytest.mark.parametrize(
    ("password", "codes"),
    [
        ("no-digits-here", {"password_no_digit"}),
        ("n0symbolshere", {"password_no_symbol"}),
        ("nothing", {"password_no_digit", "password_no_symbol"}),
        ("with space 1", {"password_no_symbol"}),  # white space is not a symbol
        ("unicodé€1", set()),  # é is a letter, € a symbol
        ("Corr3ct-Horse", set()),
    ],
)
def test_the_fleet_validator_wants_a_digit_and_a_symbol(password, codes):
    try:
        FleetPasswordValidator().validate(password)
    except ValidationError as exc:
        assert {error.code for error in exc.error_list} == codes
    else:
        assert not codes


def test_the_configured_validators_are_fleets_rules(db):
    names = [type(v).__name__ for v in password_validation.get_default_password_validators()]
    assert names == [
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
        "FleetPasswordValidator",
    ]
    help_text = " ".join(password_validation.password_validators_help_texts())
    assert "at least 12 characters" in help_text and "one number and one symbol" in help_text
    with pytest.raises(ValidationError, match="at least 12 characters"):
        password_validation.validate_password("Sh0rt-pass!")
    password_validation.validate_password("Corr3ct-Horse-Battery!")


def test_create_user_itself_does_not_validate(db):
    """Tests and fixtures may still create users with short passwords; only chosen ones are checked."""
    user = get_user_model().objects.create_user("fixture", password="pw")
    assert user.check_password("pw")
