# Built-in device action: unlock a Windows host locked by windows_lock.ps1.
$ErrorActionPreference = "Continue"
$record = Join-Path (Join-Path $env:ProgramData "FleetDeviceLock") "locked-users.txt"
if (-not (Test-Path $record)) {
    Write-Output "no lock record found; nothing to unlock"
    exit 0
}
Get-Content $record | Where-Object { $_ } | ForEach-Object {
    Enable-LocalUser -Name $_
    Write-Output "sign-in enabled: $_"
}
Remove-Item $record
Write-Output "host unlocked"
