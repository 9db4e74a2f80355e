"""Fleet's builtin labels (All Hosts, macOS, MS Windows, ...), with memberships for existing hosts."""

from django.db import migrations


def create_builtin_labels(apps, schema_editor):
    from hosts.labels_builtin import install

    install(
        apps.get_model("hosts", "Label"),
        apps.get_model("hosts", "LabelMembership"),
        apps.get_model("hosts", "Host"),
    )


def delete_builtin_labels(apps, schema_editor):
    apps.get_model("hosts", "Label").objects.filter(label_type="builtin").delete()


class Migration(migrations.Migration):
    dependencies = [("hosts", "0002_labels")]

    operations = [migrations.RunPython(create_builtin_labels, delete_builtin_labels)]
