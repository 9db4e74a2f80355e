"""Enroll secrets get an indexed SHA-256 digest (enrolment looks them up by it, then compares the
value in constant time). Also drops the table of the removed ``rest_framework.authtoken`` app: its
rows are plaintext API tokens, and API tokens are now knox's hashed ones."""

import hashlib

from django.db import migrations

import hosts.models


def fill_digests(apps, schema_editor):
    EnrollSecret = apps.get_model("hosts", "EnrollSecret")
    for pk, secret in EnrollSecret.objects.values_list("pk", "secret"):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        EnrollSecret.objects.filter(pk=pk).update(secret_digest=digest)


def drop_plaintext_tokens(apps, schema_editor):
    from django.db.migrations.recorder import MigrationRecorder

    connection = schema_editor.connection
    if "authtoken_token" in connection.introspection.table_names():
        schema_editor.execute(f"DROP TABLE {schema_editor.quote_name('authtoken_token')}")
    recorder = MigrationRecorder(connection)
    if recorder.has_table():
        recorder.migration_qs.filter(app="authtoken").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0003_builtin_labels"),
    ]

    operations = [
        migrations.AddField(
            model_name="enrollsecret",
            name="secret_digest",
            field=hosts.models.SecretDigestField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(fill_digests, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="enrollsecret",
            name="secret_digest",
            field=hosts.models.SecretDigestField(editable=False, max_length=64, unique=True),
        ),
        migrations.RunPython(drop_plaintext_tokens, migrations.RunPython.noop),
    ]
