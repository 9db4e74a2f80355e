"""The detail queries that collect a host's software, one per platform family.

Like Fleet (``software_macos``, ``software_windows``, ``software_linux``, ``software_chrome`` in
``server/service/osquery_utils/queries.go``), each platform gets one ``UNION ALL`` over the
tables that list installed software, every branch selecting the same columns:

    name, version, source, bundle_identifier, extension_id, extension_for,
    installed_path, last_opened_at

One query per host rather than one per table: the server then sees the host's whole list at
once, so a single digest tells whether anything changed (``software.ingest``), and a table that
has no rows on this host costs nothing. Every table used exists in osquery 5 on its platform.

Per-user tables (browser extensions) are joined to ``users`` with ``CROSS JOIN ... USING (uid)``:
osquery then asks the table for each user's profile, and ``CROSS JOIN`` keeps SQLite from
reordering the loop so that the table is scanned without its ``uid`` constraint. The users are
read once, in a ``WITH`` clause. ``python_packages`` is read without a user join, which every
osquery 5 accepts (5.16+ would also look in users' directories with one).

The queries run on the detail interval (``OSQUERY_DETAIL_UPDATE_INTERVAL``, an hour by default,
plus the host's jitter), like every detail query: ``SoftwareConfig.ready`` registers them with
``hosts.details``.
"""

from __future__ import annotations

from hosts.details import DetailQuery
from hosts.models import Host

_PEOPLE = "WITH people AS (SELECT uid FROM users) "


def _branch(
    table: str,
    source: str,
    *,
    name: str = "name",
    version: str = "version",
    bundle: str = "''",
    extension_id: str = "''",
    extension_for: str = "''",
    path: str = "path",
    last_opened: str = "''",
    per_user: bool = False,
    where: str = "",
) -> str:
    """One ``SELECT`` of the union, with the shared column names."""
    source_table = f"people CROSS JOIN {table} USING (uid)" if per_user else table
    return (
        f"SELECT {name} AS name, {version} AS version, '{source}' AS source, "
        f"{bundle} AS bundle_identifier, {extension_id} AS extension_id, "
        f"{extension_for} AS extension_for, {path} AS installed_path, {last_opened} AS last_opened_at "
        f"FROM {source_table}{f' WHERE {where}' if where else ''}"
    )


def _union(*branches: str) -> str:
    uses_people = any("people CROSS JOIN" in b for b in branches)
    return (_PEOPLE if uses_people else "") + " UNION ALL ".join(branches)


# macOS: an app's display name, else its bundle name, else the file name without ".app".
_APP_NAME = (
    "COALESCE(NULLIF(display_name, ''), NULLIF(bundle_name, ''), "
    "CASE WHEN name LIKE '%.app' THEN substr(name, 1, length(name) - 4) ELSE name END)"
)
_CHROME = {"extension_id": "identifier", "extension_for": "browser_type", "per_user": True}
_FIREFOX = {"extension_id": "identifier", "extension_for": "'firefox'", "per_user": True}

SOFTWARE_MACOS = _union(
    _branch(
        "apps",
        "apps",
        name=_APP_NAME,
        version="COALESCE(NULLIF(bundle_short_version, ''), bundle_version)",
        bundle="bundle_identifier",
        last_opened="last_opened_time",
    ),
    # osquery's safari_extensions has no stable identifier column on every release: name it by name.
    _branch("safari_extensions", "safari_extensions", extension_for="'safari'", per_user=True),
    _branch("chrome_extensions", "chrome_extensions", **_CHROME),
    _branch("firefox_addons", "firefox_addons", **_FIREFOX),
    _branch("python_packages", "python_packages"),
    _branch("npm_packages", "npm_packages"),
)

SOFTWARE_WINDOWS = _union(
    _branch("programs", "programs", path="install_location"),
    _branch("python_packages", "python_packages"),
    _branch("chocolatey_packages", "chocolatey_packages"),
    _branch("ie_extensions", "ie_extensions", extension_id="registry_path", extension_for="'ie'"),
    _branch("chrome_extensions", "chrome_extensions", **_CHROME),
    _branch("firefox_addons", "firefox_addons", **_FIREFOX),
)

SOFTWARE_LINUX = _union(
    # Only installed packages: "deinstall ok config-files" means removed with its configuration kept.
    _branch("deb_packages", "deb_packages", path="''", where="status LIKE '% ok installed'"),
    # The release is part of what distinguishes two builds of a package (1.0.2k-25.el7_9).
    _branch(
        "rpm_packages",
        "rpm_packages",
        version="CASE WHEN release = '' THEN version ELSE version || '-' || release END",
        path="''",
        where="name != 'gpg-pubkey'",  # the keys rpm trusts, listed as packages
    ),
    _branch("python_packages", "python_packages"),
    _branch("npm_packages", "npm_packages"),
    _branch("chrome_extensions", "chrome_extensions", **_CHROME),
    _branch("firefox_addons", "firefox_addons", **_FIREFOX),
)

SOFTWARE_CHROME = _union(
    _branch(
        "chrome_extensions", "chrome_extensions", extension_id="identifier", extension_for="browser_type"
    ),
)


def _ingest(host: Host, rows: list[dict[str, str]]) -> list[str]:
    from software.ingest import ingest_rows

    ingest_rows(host.pk, rows)
    return []  # written to the software tables, nothing on the host row


SOFTWARE_QUERIES: tuple[DetailQuery, ...] = (
    DetailQuery("software_macos", SOFTWARE_MACOS, frozenset({"darwin"}), _ingest),
    DetailQuery("software_windows", SOFTWARE_WINDOWS, frozenset({"windows"}), _ingest),
    DetailQuery("software_linux", SOFTWARE_LINUX, frozenset({"linux"}), _ingest),
    DetailQuery("software_chrome", SOFTWARE_CHROME, frozenset({"chrome"}), _ingest),
)
