"""Configuration profiles: validation of uploads, the write path (services), which hosts should
have which profile (scope), the reconciler that turns that into InstallProfile and RemoveProfile
commands, and each profile's status on each host (status: device answers and osquery's
verification). REST is :mod:`mdm.profiles_api`, the console :mod:`mdm.profiles_admin`."""
