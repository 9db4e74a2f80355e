# Built-in device action: wipe a Windows host. Irreversible.
# Uses the MDM bridge's RemoteWipe CSP (available to SYSTEM without an MDM enrollment): a
# protected wipe that resets the device and removes all user data.
$ErrorActionPreference = "Stop"
$namespace = "root\cimv2\mdm\dmmap"
$session = New-CimSession
$params = New-Object Microsoft.Management.Infrastructure.CimMethodParametersCollection
$params.Add([Microsoft.Management.Infrastructure.CimMethodParameter]::Create("param", "", "String", "In"))
$instance = Get-CimInstance -Namespace $namespace -ClassName "MDM_RemoteWipe" -Filter "ParentID='./Vendor/MSFT' and InstanceID='RemoteWipe'"
$session.InvokeMethod($namespace, $instance, "doWipeProtectedMethod", $params) | Out-Null
Write-Output "wipe started"
