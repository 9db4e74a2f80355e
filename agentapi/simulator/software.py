"""The software a simulated host has installed: a few hundred items, the same on every run.

Why a pool per platform with per-host draws: a real fleet shares most of its software (every Mac
has Safari, every Ubuntu server openssl) while each machine differs a little (this one has
Docker, that one an older Chrome). Each host keeps every "base" item of its platform, takes each
optional item with that item's probability, and is one version behind on about one item in
eight, all drawn from ``random.Random`` seeded with the host's identity: stable across runs and
processes, so a host's list is unchanged from one detail refresh to the next (the server's
steady state) and the same hosts always differ in the same way.

Rows come in two shapes: ``detail_rows`` answers the server's software detail queries (the
columns ``software.queries`` selects), ``table_rows`` the raw osquery tables (``apps``,
``programs``, ``deb_packages``, ``rpm_packages``) for live queries and labels.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tables imports this module
    from agentapi.simulator.tables import HostTables, Row

# A fixed day (2026-01-01 UTC) last-opened times count back from: stable, and in the past.
_ANCHOR = 1_767_225_600
_OLDER_ONE_IN = 8


@dataclass(frozen=True)
class Package:
    source: str
    name: str
    version: str
    ident: str = ""  # bundle identifier (apps) or extension id
    vendor: str = ""
    chance: float = 1.0  # share of hosts of the platform that have it


def _older(version: str) -> str:
    """The previous release: the last number decremented (``131.0.6778.86`` -> ``131.0.6778.85``)."""
    numbers = list(re.finditer(r"\d+", version))
    for match in reversed(numbers):
        value = int(match.group())
        if value > 0:
            return version[: match.start()] + str(value - 1) + version[match.end() :]
    return version


def _apps(rows: str, chance: float) -> list[Package]:
    """``name|bundle id|version`` lines."""
    found = []
    for line in rows.strip().splitlines():
        name, ident, version = (p.strip() for p in line.split("|"))
        found.append(Package("apps", name, version, ident, chance=chance))
    return found


_MAC_BUILTIN = _apps(
    """
    Safari|com.apple.Safari|18.1.1
    Mail|com.apple.mail|16.0
    Calendar|com.apple.iCal|15.0
    Messages|com.apple.MobileSMS|14.0
    FaceTime|com.apple.FaceTime|5.0
    Music|com.apple.Music|1.5.1
    Photos|com.apple.Photos|10.0
    Notes|com.apple.Notes|4.11
    Reminders|com.apple.reminders|7.0
    Maps|com.apple.Maps|3.0
    Preview|com.apple.Preview|11.0
    TextEdit|com.apple.TextEdit|1.19
    Calculator|com.apple.calculator|11.0
    App Store|com.apple.AppStore|3.0
    System Settings|com.apple.systempreferences|15.0
    Terminal|com.apple.Terminal|2.14
    Activity Monitor|com.apple.ActivityMonitor|10.14
    Disk Utility|com.apple.DiskUtility|22.6
    Keychain Access|com.apple.keychainaccess|11.0
    Console|com.apple.Console|1.1
    Font Book|com.apple.FontBook|11.0
    Automator|com.apple.Automator|2.10
    Shortcuts|com.apple.shortcuts|7.0
    QuickTime Player|com.apple.QuickTimePlayerX|10.5
    Photo Booth|com.apple.PhotoBooth|13.1
    Stickies|com.apple.Stickies|10.3
    Chess|com.apple.Chess|3.18
    Dictionary|com.apple.Dictionary|2.3.0
    Home|com.apple.Home|8.0
    News|com.apple.news|10.1
    Podcasts|com.apple.podcasts|1.1.0
    Stocks|com.apple.stocks|7.1
    TV|com.apple.TV|1.5.1
    Books|com.apple.iBooksX|7.1
    Freeform|com.apple.freeform|3.1
    Time Machine|com.apple.backup.launcher|1.3
    Screenshot|com.apple.screenshot.launcher|1.0
    """,
    1.0,
)
_MAC_SYSTEM = _apps(
    """
    Finder|com.apple.finder|15.1
    Siri|com.apple.siri.launcher|1.0
    Contacts|com.apple.AddressBook|14.0
    Find My|com.apple.findmy|4.0
    Weather|com.apple.weather|5.0
    Clock|com.apple.clock|1.0
    Tips|com.apple.tips|15.1
    Voice Memos|com.apple.VoiceMemos|3.1
    Image Capture|com.apple.Image_Capture|8.0
    Mission Control|com.apple.exposelauncher|1.2
    Launchpad|com.apple.launchpad.launcher|1.0
    Passwords|com.apple.Passwords|1.0
    iPhone Mirroring|com.apple.ScreenContinuity|1.0
    Archive Utility|com.apple.archiveutility|10.15
    Bluetooth File Exchange|com.apple.BluetoothFileExchange|9.0
    Boot Camp Assistant|com.apple.bootcampassistant|6.1.0
    ColorSync Utility|com.apple.ColorSyncUtility|12.1.0
    Digital Color Meter|com.apple.DigitalColorMeter|5.26
    Grapher|com.apple.grapher|2.7
    Migration Assistant|com.apple.MigrateAssistant|15.1
    Screen Sharing|com.apple.ScreenSharing|5.1
    Script Editor|com.apple.ScriptEditor2|2.11
    System Information|com.apple.SystemProfiler|11.0
    VoiceOver Utility|com.apple.VoiceOverUtility|10
    AirPort Utility|com.apple.airport.airportutility|6.3.9
    Audio MIDI Setup|com.apple.audio.AudioMIDISetup|3.6
    Directory Utility|com.apple.DirectoryUtility|6.2
    Feedback Assistant|com.apple.appleseed.FeedbackAssistant|5.5
    Ticket Viewer|com.apple.Ticket-Viewer|4.2
    Wireless Diagnostics|com.apple.wifi.diagnostics|11.0
    Installer|com.apple.installer|6.2.0
    Keyboard Setup Assistant|com.apple.KeyboardSetupAssistant|3.0
    Software Update|com.apple.SoftwareUpdate|6
    Setup Assistant|com.apple.SetupAssistant|10.0
    Storage Management|com.apple.StorageManagementLauncher|1.0
    System Events|com.apple.systemevents|1.3.6
    Problem Reporter|com.apple.ProblemReporter|10.13
    Folder Actions Setup|com.apple.FolderActionsSetup|1.2
    Screen Time|com.apple.ScreenTimeAgent|3.0
    Expansion Slot Utility|com.apple.ExpansionSlotUtility|1.5.2
    Dwell Control|com.apple.dwellcontrol|1.0
    Control Center|com.apple.controlcenter|1.0
    Notification Center|com.apple.notificationcenterui|1.0
    Dock|com.apple.dock|1.8
    Spotlight|com.apple.Spotlight|1.0
    Wallpaper|com.apple.wallpaper.agent|1.0
    Image Playground|com.apple.GenerativePlaygroundApp|1.0
    Games|com.apple.games|1.0
    """,
    1.0,
)
_MAC_COMMON = _apps(
    """
    Google Chrome|com.google.Chrome|131.0.6778.86
    Slack|com.tinyspeck.slackmacgap|4.41.105
    zoom.us|us.zoom.xos|6.3.0
    Microsoft Teams|com.microsoft.teams2|24295.605.3225
    Microsoft Word|com.microsoft.Word|16.91
    Microsoft Excel|com.microsoft.Excel|16.91
    Microsoft PowerPoint|com.microsoft.Powerpoint|16.91
    Microsoft Outlook|com.microsoft.Outlook|16.91
    OneDrive|com.microsoft.OneDrive|24.211.1020
    1Password|com.1password.1password|8.10.54
    Keynote|com.apple.iWork.Keynote|14.2
    Pages|com.apple.iWork.Pages|14.2
    Numbers|com.apple.iWork.Numbers|14.2
    Fleet Desktop|com.fleetdm.desktop|1.35.0
    CrowdStrike Falcon|com.crowdstrike.falcon.App|7.19.18913
    Okta Verify|com.okta.mobile|9.32.0
    """,
    0.9,
)
_MAC_OPTIONAL = _apps(
    """
    Firefox|org.mozilla.firefox|133.0
    Microsoft Edge|com.microsoft.edgemac|131.0.2903.86
    Docker|com.docker.docker|4.36.0
    Visual Studio Code|com.microsoft.VSCode|1.95.3
    iTerm|com.googlecode.iterm2|3.5.10
    Spotify|com.spotify.client|1.2.52.442
    Notion|notion.id|4.2.0
    Figma|com.figma.Desktop|124.6.5
    Postman|com.postmanlabs.mac|11.20.0
    Xcode|com.apple.dt.Xcode|16.1
    GarageBand|com.apple.garageband10|10.4.11
    iMovie|com.apple.iMovieApp|10.4.2
    Dropbox|com.getdropbox.dropbox|213.4.6197
    Google Drive|com.google.drivefs|101.0.3
    Adobe Acrobat Reader|com.adobe.Reader|24.004.20272
    Adobe Photoshop 2025|com.adobe.Photoshop|26.1.0
    Sketch|com.bohemiancoding.sketch3|101.2
    Rectangle|com.knollsoft.Rectangle|0.84
    Alfred 5|com.runningwithcrayons.Alfred|5.5.1
    Raycast|com.raycast.macos|1.86.1
    JetBrains Toolbox|com.jetbrains.toolbox|2.5.2
    IntelliJ IDEA|com.jetbrains.intellij|2024.3
    PyCharm|com.jetbrains.pycharm|2024.3
    GoLand|com.jetbrains.goland|2024.3
    Sublime Text|com.sublimetext.4|4180
    Microsoft Remote Desktop|com.microsoft.rdc.macos|10.9.10
    Cisco Secure Client|com.cisco.secureclient.gui|5.1.6.103
    GlobalProtect|com.paloaltonetworks.GlobalProtect.client|6.2.4
    Loom|com.loom.desktop|0.271.1
    Miro|com.electron.realtimeboard|0.8.75
    Discord|com.hnc.Discord|0.0.324
    WhatsApp|net.whatsapp.WhatsApp|24.23.77
    Signal|org.whispersystems.signal-desktop|7.34.0
    VLC|org.videolan.vlc|3.0.21
    The Unarchiver|com.macpaw.site.theunarchiver|4.3.8
    Grammarly Desktop|com.grammarly.ProjectLlama|1.98.0
    Tableau Desktop|com.tableausoftware.tableaudesktop|2024.3.1
    Cursor|com.todesktop.230313mzl4w4u92|0.43.6
    Wireshark|org.wireshark.Wireshark|4.4.2
    UTM|com.utmapp.UTM|4.6.2
    """,
    0.35,
)


def _simple(source: str, rows: str, chance: float, vendor: str = "") -> list[Package]:
    """``name version`` lines (whitespace-separated; names have no spaces)."""
    return [
        Package(source, name, version, vendor=vendor, chance=chance)
        for name, version in (line.split() for line in rows.strip().splitlines())
    ]


def _extensions(source: str, rows: str, chance: float) -> list[Package]:
    """``name|extension id|version`` lines."""
    found = []
    for line in rows.strip().splitlines():
        name, ident, version = (p.strip() for p in line.split("|"))
        found.append(Package(source, name, version, ident, chance=chance))
    return found


_CHROME_EXTENSIONS = _extensions(
    "chrome_extensions",
    """
    Google Docs Offline|ghbmnnjooekpmoecnnnilnnbdlolhkhi|1.88.1
    1Password – Password Manager|aeblfdkhhhdcdjpifhhbdiojplfjncoa|8.10.54.29
    uBlock Origin|cjpalhdlnbpafiamejdnhcphjbkeiagm|1.61.2
    Grammarly: AI Writing and Grammar Checker|kbfnbcaeplbcioakkpcpgfkobkghlhen|14.1203.0
    LastPass: Free Password Manager|hdokiejnpimakedhajhdlcegeplioahd|4.138.0
    React Developer Tools|fmkadmapgofadopljbjfkapdkoienihi|6.0.1
    Loom – Screen Recorder & Screen Capture|liecbddmkiiihnedobmlmillhodjkdmb|5.5.106
    Zoom Chrome Extension|kgjfgplpablkjnlkjmjdecgdpfankdle|1.9.8
    Okta Browser Plugin|glnpjglilkicbckjpbgcfkogebgllemb|6.39.0
    Microsoft Editor: Spelling & Grammar Checker|hokifickgkhplphjiodbggjmoafhignh|1.27.4
    Google Translate|aapbdbdomjkkjkaonfhkkikfgjllcleb|2.0.16
    JSON Formatter|bcjindcccaagfpapjjmafapmmgkkhgoa|0.7.2
    Dark Reader|eimadpbcbfnmbkopoojfekhnkhdbieeh|4.9.96
    Adobe Acrobat: PDF edit, convert, sign tools|efaidnbmnnnibpcajpcglclefindmkaj|24.11.1.2
    Slack|jeogkiiogjbmhklcnbgkdcjoioegiknm|1.0.6
    Vue.js devtools|nhdogjmejiglipccpnnnanhbledajbpd|7.6.4
    Honey: Automatic Coupons & Rewards|bmnlcjabgnpnenekpadlanbbkooimhnj|17.0.6
    """,
    0.3,
)
_FIREFOX_ADDONS = _extensions(
    "firefox_addons",
    """
    uBlock Origin|uBlock0@raymondhill.net|1.61.2
    1Password – Password Manager|{d634138d-c276-4fc8-924b-40a0ea21d284}|8.10.54.29
    Bitwarden Password Manager|{446900e4-71c2-419f-a6a7-df9c091e268b}|2024.11.2
    Multi-Account Containers|@testpilot-containers|8.2.0
    Privacy Badger|jid1-MnnxcxisBPnSXQ@jetpack|2024.10.30
    Firefox Multi-Account Containers|containers@mozilla.org|8.2.0
    """,
    0.25,
)
_SAFARI_EXTENSIONS = _extensions(
    "safari_extensions",
    """
    1Password for Safari|com.1password.safari|8.10.54
    Grammarly for Safari|com.grammarly.spark.safari|9.80
    AdGuard for Safari|com.adguard.safari.AdGuard|1.11.22
    Kagi for Safari|com.kagi.kagimacOS.Extension|2.3.4
    """,
    0.2,
)
_PYTHON = _simple(
    "python_packages",
    """
    pip 24.3.1
    setuptools 75.6.0
    wheel 0.45.1
    six 1.16.0
    certifi 2024.8.30
    urllib3 2.2.3
    requests 2.32.3
    idna 3.10
    charset-normalizer 3.4.0
    packaging 24.2
    pyparsing 3.2.0
    attrs 24.2.0
    PyYAML 6.0.2
    Jinja2 3.1.4
    MarkupSafe 3.0.2
    python-dateutil 2.9.0
    pytz 2024.2
    """,
    0.95,
) + _simple(
    "python_packages",
    """
    cryptography 44.0.0
    cffi 1.17.1
    pycparser 2.22
    numpy 2.1.3
    pandas 2.2.3
    boto3 1.35.76
    botocore 1.35.76
    s3transfer 0.10.4
    jmespath 1.0.1
    awscli 1.36.17
    ansible-core 2.18.1
    click 8.1.7
    rich 13.9.4
    pygments 2.18.0
    tqdm 4.67.1
    psutil 6.1.0
    virtualenv 20.28.0
    pipx 1.7.1
    black 24.10.0
    ruff 0.8.2
    pytest 8.3.4
    httpx 0.28.1
    pydantic 2.10.3
    Django 5.1.4
    Flask 3.1.0
    SQLAlchemy 2.0.36
    psycopg2-binary 2.9.10
    redis 5.2.1
    docker 7.1.0
    kubernetes 31.0.0
    """,
    0.3,
)
_NPM = _simple(
    "npm_packages",
    """
    npm 10.9.2
    corepack 0.30.0
    """,
    0.8,
) + _simple(
    "npm_packages",
    """
    yarn 1.22.22
    pnpm 9.15.0
    typescript 5.7.2
    eslint 9.16.0
    prettier 3.4.2
    @angular/cli 19.0.4
    create-react-app 5.0.1
    nodemon 3.1.9
    pm2 5.4.3
    serve 14.2.4
    http-server 14.1.1
    @vue/cli 5.0.8
    vercel 39.2.0
    netlify-cli 17.38.0
    """,
    0.25,
)

_WIN_PROGRAMS = [
    Package("programs", name, version, vendor=vendor, chance=chance)
    for chance, rows in (
        (
            1.0,
            """
            Microsoft Edge|131.0.2903.86|Microsoft Corporation
            Microsoft Edge WebView2 Runtime|131.0.2903.86|Microsoft Corporation
    Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.42.34433|14.42.34433.0|Microsoft Corporation
    Microsoft Visual C++ 2015-2022 Redistributable (x86) - 14.42.34433|14.42.34433.0|Microsoft Corporation
            Microsoft Update Health Tools|5.72.0.0|Microsoft Corporation
            Windows PC Health Check|3.7.2204.15001|Microsoft Corporation
            Microsoft OneDrive|24.211.1020.0001|Microsoft Corporation
            Microsoft 365 Apps for enterprise - en-us|16.0.18129.20158|Microsoft Corporation
            osquery|5.14.1|osquery
            Fleet osquery|1.35.0|Fleet Device Management (fleetdm.com)
            Microsoft Edge Update|1.3.195.39|Microsoft Corporation
            Microsoft Intune Management Extension|1.83.107.0|Microsoft Corporation
            Microsoft Policy Platform|68.1.1010.0|Microsoft Corporation
            Microsoft Search in Bing|2.0.2|Microsoft Corporation
            Microsoft GameInput|10.1.26100.3036|Microsoft Corporation
            Teams Machine-Wide Installer|1.7.0.21751|Microsoft Corporation
            Office 16 Click-to-Run Extensibility Component|16.0.18129.20116|Microsoft Corporation
            Office 16 Click-to-Run Licensing Component|16.0.18129.20158|Microsoft Corporation
            Office 16 Click-to-Run Localization Component|16.0.18129.20116|Microsoft Corporation
            Microsoft Visual C++ 2012 Redistributable (x64) - 11.0.61030|11.0.61030.0|Microsoft Corporation
            Microsoft Visual C++ 2012 Redistributable (x86) - 11.0.61030|11.0.61030.0|Microsoft Corporation
            Microsoft Visual C++ 2013 Redistributable (x86) - 12.0.40664|12.0.40664.0|Microsoft Corporation
            Microsoft Visual C++ 2010  x86 Redistributable - 10.0.40219|10.0.40219|Microsoft Corporation
    Microsoft Visual C++ 2008 Redistributable - x64 9.0.30729.6161|9.0.30729.6161|Microsoft Corporation
    Microsoft Visual C++ 2008 Redistributable - x86 9.0.30729.6161|9.0.30729.6161|Microsoft Corporation
            Microsoft ASP.NET Core 8.0.11 - Shared Framework (x64)|8.0.11.24521|Microsoft Corporation
            Microsoft .NET Framework 4.8.1 Targeting Pack|4.8.09032|Microsoft Corporation
            Windows Subsystem for Linux|2.3.26.0|Microsoft Corporation
            PowerShell 7-x64|7.4.6.0|Microsoft Corporation
            Google Update Helper|1.3.36.372|Google LLC
            """,
        ),
        (
            0.6,
            """
            Intel(R) Graphics Driver|31.0.101.5590|Intel Corporation
            Intel(R) Management Engine Components|2406.5.5.0|Intel Corporation
            Intel(R) Serial IO|30.100.2237.26|Intel Corporation
            Intel(R) Chipset Device Software|10.1.19444.8378|Intel(R) Corporation
            Intel(R) Wireless Bluetooth(R)|23.90.0.7|Intel Corporation
            Intel(R) PROSet/Wireless Software|23.90.0|Intel Corporation
            Realtek High Definition Audio Driver|6.0.9549.1|Realtek Semiconductor Corp.
            Realtek Audio Driver|6.0.9549.1|Realtek Semiconductor Corp.
            NVIDIA Graphics Driver 566.14|566.14|NVIDIA Corporation
            NVIDIA HD Audio Driver 1.4.2.6|1.4.2.6|NVIDIA Corporation
            NVIDIA PhysX System Software 9.23.1019|9.23.1019|NVIDIA Corporation
            Synaptics Pointing Device Driver|19.5.35.1|Synaptics Incorporated
            Dell SupportAssist|4.5.1.24372|Dell Inc.
            Dell Command Update|5.4.0|Dell Inc.
            Dell Optimizer|5.0.1100.0|Dell Inc.
            HP Support Assistant|9.37.16.0|HP Inc.
            HP Wolf Security|4.6.13.463|HP Inc.
            Lenovo Vantage Service|4.0.46.0|Lenovo Group Ltd.
            Microsoft Windows Desktop Runtime - 6.0.36 (x64)|6.0.36.34217|Microsoft Corporation
            Microsoft Windows Desktop Runtime - 6.0.36 (x86)|6.0.36.34217|Microsoft Corporation
            Microsoft Windows Desktop Runtime - 8.0.11 (x86)|8.0.11.34221|Microsoft Corporation
            Microsoft .NET Runtime - 6.0.36 (x64)|6.0.36.34214|Microsoft Corporation
            Microsoft .NET Runtime - 6.0.36 (x86)|6.0.36.34214|Microsoft Corporation
            Microsoft ASP.NET Core 6.0.36 - Shared Framework (x64)|6.0.36.24516|Microsoft Corporation
            Microsoft .NET Host - 8.0.11 (x64)|64.44.34221|Microsoft Corporation
            Microsoft .NET Host FX Resolver - 8.0.11 (x64)|64.44.34221|Microsoft Corporation
            Microsoft Visual Studio Installer|3.12.2149.20818|Microsoft Corporation
            Visual Studio Build Tools 2022|17.12.3|Microsoft Corporation
            vs_CoreEditorFonts|17.7.40001|Microsoft Corporation
            Windows SDK AddOn|10.1.0.0|Microsoft Corporation
            Universal CRT Tools x64|10.1.22621.3233|Microsoft Corporation
            Kits Configuration Installer|10.1.22621.3233|Microsoft
            WinRT Intellisense Desktop - en-us|10.1.22621.3233|Microsoft Corporation
            Windows App Certification Kit Native Components|10.1.22621.3233|Microsoft Corporation
            IIS 10.0 Express|10.0.08608|Microsoft Corporation
            Microsoft Web Deploy 4.0|10.0.8202|Microsoft Corporation
            Microsoft ODBC Driver 17 for SQL Server|17.10.6.1|Microsoft Corporation
            Microsoft OLE DB Driver for SQL Server|18.7.4.0|Microsoft Corporation
            Microsoft Azure Storage Emulator - v5.10|5.10.19227.2113|Microsoft Corporation
            Citrix Workspace 2409|24.9.10.28|Citrix Systems, Inc.
            Webex|44.11.1.31236|Cisco Webex LLC
            Microsoft Remote Desktop|1.2.5709.0|Microsoft Corporation
            Java 8 Update 431 (64-bit)|8.0.4310.10|Oracle Corporation
            Java Auto Updater|2.8.431.10|Oracle Corporation
            Adobe Refresh Manager|1.8.0|Adobe Systems Incorporated
            """,
        ),
        (
            0.9,
            """
            Google Chrome|131.0.6778.86|Google LLC
            Microsoft Teams|24295.605.3225.8804|Microsoft Corporation
            Zoom Workplace (64-bit)|6.3.0.52884|Zoom Video Communications, Inc.
            Slack (Machine)|4.41.105|Slack Technologies Inc.
            7-Zip 24.08 (x64)|24.08|Igor Pavlov
            Adobe Acrobat (64-bit)|24.004.20272|Adobe
            CrowdStrike Windows Sensor|7.19.18913.0|CrowdStrike, Inc.
            Okta Verify|5.1.3.0|Okta, Inc.
            Microsoft Windows Desktop Runtime - 8.0.11 (x64)|8.0.11.34221|Microsoft Corporation
            Microsoft .NET Runtime - 8.0.11 (x64)|8.0.11.34221|Microsoft Corporation
            Microsoft Visual C++ 2013 Redistributable (x64) - 12.0.40664|12.0.40664.0|Microsoft Corporation
            Microsoft Visual C++ 2010  x64 Redistributable - 10.0.40219|10.0.40219|Microsoft Corporation
            """,
        ),
        (
            0.35,
            """
            Mozilla Firefox (x64 en-US)|133.0|Mozilla
            Mozilla Maintenance Service|133.0|Mozilla
            Notepad++ (64-bit x64)|8.7.4|Notepad++ Team
            Git|2.47.1|The Git Development Community
            Microsoft Visual Studio Code|1.95.3|Microsoft Corporation
            Python 3.12.8 (64-bit)|3.12.8150.0|Python Software Foundation
            Python Launcher|3.12.8150.0|Python Software Foundation
            Node.js|22.12.0|Node.js Foundation
            Docker Desktop|4.36.0|Docker Inc.
            PuTTY release 0.82 (64-bit)|0.82.0.0|Simon Tatham
            WinSCP 6.3.6|6.3.6|Martin Prikryl
            VLC media player|3.0.21|VideoLAN
            Spotify|1.2.52.442|Spotify AB
            Dropbox|213.4.6197|Dropbox, Inc.
            Google Drive|101.0.3.0|Google LLC
            Cisco Secure Client - AnyConnect VPN|5.1.6.103|Cisco Systems, Inc.
            GlobalProtect|6.2.4|Palo Alto Networks
            Microsoft Power BI Desktop (x64)|2.138.1203.0|Microsoft Corporation
            Tableau 2024.3 (20243.24.1211.0334)|24.3.1211|Tableau Software
            Wireshark 4.4.2 x64|4.4.2|The Wireshark developer community
            Npcap|1.80|Nmap Project
            WinRAR 7.01 (64-bit)|7.01.0|win.rar GmbH
            Greenshot 1.2.10.6|1.2.10.6|Greenshot
            KeePass Password Safe 2.57.1|2.57.1|Dominik Reichl
            Microsoft SQL Server Management Studio - 20.2|20.2.30.0|Microsoft Corporation
            Postman x86_64 11.20.0|11.20.0|Postman
            JetBrains Toolbox|2.5.2.35332|JetBrains s.r.o.
            Sublime Text|4180|Sublime HQ Pty Ltd
            Discord|1.0.9174|Discord Inc.
            Microsoft Azure CLI (64-bit)|2.67.0|Microsoft Corporation
            AWS Command Line Interface v2|2.22.13.0|Amazon Web Services
            Paint.NET|5.1.1|dotPDN LLC
            Audacity 3.7.0|3.7.0|Audacity Team
            GIMP 2.10.38|2.10.38|The GIMP Team
            LibreOffice 24.8.3.2|24.8.3.2|The Document Foundation
            """,
        ),
    )
    for name, version, vendor in ((p.strip() for p in line.split("|")) for line in rows.strip().splitlines())
]
_CHOCOLATEY = _simple(
    "chocolatey_packages",
    """
    chocolatey 2.4.1
    chocolatey-core.extension 1.4.0
    chocolatey-compatibility.extension 1.0.0
    """,
    0.4,
) + _simple(
    "chocolatey_packages",
    """
    git 2.47.1
    git.install 2.47.1
    7zip 24.8.0
    7zip.install 24.8.0
    notepadplusplus 8.7.4
    vscode 1.95.3
    googlechrome 131.0.6778.86
    firefox 133.0.0
    python3 3.12.8
    nodejs-lts 22.12.0
    putty 0.82.0
    sysinternals 2024.12.4
    """,
    0.2,
)
_IE_EXTENSIONS = _extensions(
    "ie_extensions",
    """
    Microsoft Office Add-in|{31D09BA0-12F5-4CCE-BE8A-2923E76605DA}|16.0.18129.20158
    Lync Browser Helper|{31D09BA0-12F5-4CCE-BE8A-2923E76605DB}|16.0.18129.20158
    """,
    0.5,
)

# Linux: packages every server of the distribution has, then optional ones; versions per distro.
_LINUX_BASE = """
base-files adduser apt bash bsdutils coreutils dash debconf debianutils diffutils dpkg e2fsprogs
findutils gcc-14-base gpgv grep gzip hostname init-system-helpers login lsb-release mawk mount
ncurses-base ncurses-bin passwd perl-base procps sed sensible-utils systemd systemd-sysv sysvinit-utils
tar tzdata util-linux zlib1g ca-certificates openssl openssh-client openssh-server curl wget less vim-tiny
nano sudo cron rsyslog logrotate iproute2 iputils-ping netbase net-tools dnsutils isc-dhcp-client
kmod udev dbus python3 python3-minimal python3-apt python3-yaml python3-requests python3-urllib3
python3-certifi python3-chardet python3-six python3-jinja2 python3-markupsafe gnupg gpg dirmngr
file xz-utils bzip2 unzip zip lsof strace tcpdump htop tmux git rsync man-db manpages locales
keyboard-configuration console-setup libc-bin libc6 libgcc-s1 libstdc++6 tzdata-legacy ucf
"""
_LINUX_LIBS = """
ssl3 curl4 xml2 bz2-1.0 lzma5 zstd1 gnutls30 nettle8 hogweed6 p11-kit0 systemd0 udev1 pam0g
pam-modules pam-runtime acl1 attr1 cap2 selinux1 audit1 blkid1 mount1 uuid1 smartcols1 fdisk1
ncursesw6 tinfo6 readline8 sqlite3-0 db5.3 gdbm6 expat1 ffi8 gmp10 mpfr6 idn2-0 unistring5 psl5
ssh-4 krb5-3 gssapi-krb5-2 k5crypto3 keyutils1 ldap-2.5-0 sasl2-2 nghttp2-14 rtmp1 brotli1 jansson4
json-c5 yaml-0-2 pcre2-8-0 pcre3 glib2.0-0 dbus-1-3 apparmor1 seccomp2 kmod2 elf1 dw1 bpf1 numa1
nl-3-200 nl-genl-3-200 mnl0 nftnl11 ip4tc2 ip6tc2 xtables12 pcap0.8 sensors5 wrap0 tirpc3 nsl2
crypt1 gcrypt20 gpg-error0 assuan0 ksba8 npth0 tasn1-6 magic1 archive13 lz4-1 xxhash0 jq1 onig5
icu72 harfbuzz0b freetype6 fontconfig1 png16-16 jpeg62-turbo tiff6 webp7 gd3 x11-6 xext6 xrender1
xau6 xdmcp6 xcb1 bsd0 md0 edit2 event-2.1-7 ev4 uv1 cbor0.8 fido2-1 hidapi-hidraw0 usb-1.0-0
"""
_LINUX_OPTIONAL = """
nginx apache2 haproxy postgresql-15 postgresql-client-15 mariadb-server mariadb-client redis-server
memcached docker-ce docker-ce-cli containerd.io kubelet kubeadm kubectl cri-tools golang-go
openjdk-17-jre-headless openjdk-17-jdk-headless maven nodejs npm ruby php8.2-fpm php8.2-cli
prometheus-node-exporter collectd telegraf filebeat auditd fail2ban ufw nftables chrony ntp
snapd cloud-init qemu-guest-agent open-vm-tools amazon-ssm-agent awscli jq yq build-essential
gcc g++ make cmake pkg-config autoconf automake libtool bison flex gdb valgrind
"""


def _linux(distro: str) -> list[Package]:
    """Debian packages (Ubuntu) or RPMs (CentOS): the same software, each with its naming and versions."""
    source = "deb_packages" if distro == "ubuntu" else "rpm_packages"
    packages = []
    for chance, names, libs in (
        (1.0, _LINUX_BASE, False),
        (0.97, _LINUX_LIBS, True),
        (0.15, _LINUX_OPTIONAL, False),
    ):
        for word in names.split():
            name = f"lib{word}" if libs else word
            if distro != "ubuntu":
                # rpm names carry no soname: libssl3 -> libssl
                name = re.sub(r"(\d+(\.\d+)?(-\d+)?)$", "", name).rstrip("-") or name
            rng = random.Random(f"fleet-sim-pkg:{distro}:{name}")
            major, minor, patch = rng.randint(0, 9), rng.randint(0, 40), rng.randint(0, 30)
            if distro == "ubuntu":
                revision = f"{rng.randint(1, 6)}ubuntu{rng.randint(0, 3)}.{rng.randint(1, 9)}"
                version = f"{major}.{minor}.{patch}-{revision}"
            else:
                version = f"{major}.{minor}.{patch}-{rng.randint(1, 40)}.el9"
            packages.append(Package(source, name, version, chance=chance))
    seen: dict[str, Package] = {}
    for package in packages:  # rpm naming folds some libraries together: keep one of each
        seen.setdefault(package.name, package)
    return list(seen.values())


POOLS: dict[str, tuple[Package, ...]] = {
    "macos": (
        *_MAC_BUILTIN, *_MAC_SYSTEM, *_MAC_COMMON, *_MAC_OPTIONAL, *_CHROME_EXTENSIONS, *_FIREFOX_ADDONS,
        *_SAFARI_EXTENSIONS, *_PYTHON, *_NPM,
    ),
    "windows": (
        *_WIN_PROGRAMS, *_PYTHON, *_CHOCOLATEY, *_IE_EXTENSIONS,
        *_CHROME_EXTENSIONS, *_FIREFOX_ADDONS,
    ),
    "ubuntu": (*_linux("ubuntu"), *_PYTHON, *_NPM[:2], *_NPM[2:8], *_CHROME_EXTENSIONS[:5]),
    "centos": (*_linux("centos"), *_PYTHON, *_NPM[:8]),
}  # fmt: skip

_APPLE_BUILTIN = frozenset(p.name for p in (*_MAC_BUILTIN, *_MAC_SYSTEM))
_BROWSERS = ("chrome", "chrome", "chrome", "edge", "brave")


@dataclass(frozen=True)
class Installed:
    """One item on one host."""

    package: Package
    version: str
    path: str
    opened: str  # a Unix time, or "-1" (never / unknown), as osquery reports last_opened_time
    browser: str  # extensions: which browser (chrome_extensions.browser_type)


def installed(seed: int, index: int, template: str, username: str) -> tuple[Installed, ...]:
    """Everything host ``index`` of simulation ``seed`` has installed, in pool order.

    Not cached: computed once per detail refresh (an hour), it costs well under a millisecond,
    and a cache over thousands of hosts would hold millions of objects.
    """
    rng = random.Random(f"fleet-sim-software:{seed}:{index}")
    home = {"macos": f"/Users/{username}", "windows": f"C:\\Users\\{username}"}.get(
        template, f"/home/{username}"
    )
    sep = "\\" if template == "windows" else "/"
    found = []
    for package in POOLS.get(template, ()):
        if package.chance < 1.0 and rng.random() >= package.chance:
            continue
        version = _older(package.version) if rng.randrange(_OLDER_ONE_IN) == 0 else package.version
        opened, browser = "-1", ""
        if package.source == "apps":
            folder = "/System/Applications" if package.name in _APPLE_BUILTIN else "/Applications"
            path = f"{folder}/{package.name}.app"
            if rng.random() < 0.6:
                opened = str(_ANCHOR - rng.randrange(60 * 86400))
        elif package.source == "programs":
            path = f"C:\\Program Files\\{package.vendor.split(',')[0].split(' ')[0]}\\{package.name}\\"
        elif package.source == "chrome_extensions":
            browser = rng.choice(_BROWSERS)
            path = sep.join(
                (home, "AppData", browser, "Default", "Extensions", package.ident, f"{version}_0")
            )
        elif package.source == "python_packages":
            site = (
                "C:\\Program Files\\Python312\\Lib\\site-packages"
                if sep != "/"
                else "/usr/lib/python3/dist-packages"
            )
            path = f"{site}{sep}{package.name}-{version}.dist-info"
        elif package.source == "npm_packages":
            path = f"/usr/local/lib/node_modules/{package.name}"
        elif package.source in ("deb_packages", "rpm_packages"):
            path = ""
        else:
            path = sep.join((home, package.source, package.ident or package.name))
        found.append(Installed(package, version, path, opened, browser))
    return tuple(found)


def _host_items(t: HostTables) -> tuple[Installed, ...]:
    identity = t.identity
    return installed(identity.seed, identity.index, identity.template.key, identity.username)


def detail_rows(t: HostTables) -> list[Row]:
    """The answer to the server's software detail query (``software.queries``' columns)."""
    rows = []
    for item in _host_items(t):
        p = item.package
        extension = p.source in ("chrome_extensions", "firefox_addons", "safari_extensions", "ie_extensions")
        rows.append(
            {
                "name": p.name,
                "version": item.version,
                "source": p.source,
                "bundle_identifier": p.ident if p.source == "apps" else "",
                "extension_id": p.ident if extension else "",
                "extension_for": {
                    "chrome_extensions": item.browser,
                    "firefox_addons": "firefox",
                    "safari_extensions": "safari",
                    "ie_extensions": "ie",
                }.get(p.source, ""),
                "installed_path": item.path,
                "last_opened_at": item.opened if p.source == "apps" else "",
            }
        )
    return rows


def table_rows(t: HostTables, table: str) -> list[Row]:
    """Rows of a raw software table (``apps``, ``programs``, ``deb_packages``, ``rpm_packages``)."""
    rows: list[Row] = []
    for item in _host_items(t):
        p = item.package
        if p.source != table:
            continue
        if table == "apps":
            rows.append(
                {
                    "name": f"{p.name}.app",
                    "bundle_identifier": p.ident,
                    "bundle_short_version": item.version,
                    "path": item.path,
                    "last_opened_time": item.opened,
                }
            )
        elif table == "programs":
            rows.append(
                {
                    "name": p.name,
                    "version": item.version,
                    "publisher": p.vendor,
                    "install_location": item.path,
                }
            )
        elif table == "deb_packages":
            rows.append({"name": p.name, "version": item.version, "arch": "amd64", "source": p.name})
        else:
            version, _, release = item.version.partition("-")
            rows.append({"name": p.name, "version": version, "release": release, "arch": "x86_64"})
    return rows
