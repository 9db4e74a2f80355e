# Built-in device action: lock a Windows host.
# Disables every enabled local account (remembering which, for unlock) and signs every user out,
# so nobody can sign in until the host is unlocked.
$ErrorActionPreference = "Continue"
$state = Join-Path $env:ProgramData "FleetDeviceLock"
New-Item -ItemType Directory -Force -Path $state | Out-Null
$users = Get-LocalUser | Where-Object { $_.Enabled }
$users | ForEach-Object { $_.Name } | Set-Content -Path (Join-Path $state "locked-users.txt")
foreach ($user in $users) {
    Disable-LocalUser -Name $user.Name
    Write-Output "sign-in disabled: $($user.Name)"
}
quser 2>$null | Select-Object -Skip 1 | ForEach-Object {
    $id = ($_ -split '\s+' | Where-Object { $_ -match '^\d+$' } | Select-Object -First 1)
    if ($id) { logoff $id }
}
Write-Output "host locked"
