"""Apple MDM: enrollment (SCEP and the enrollment profile), the check-in and command channel,
the per-device command queue, APNs pushes, and configuration profiles (docs/apple-mdm.md)."""
