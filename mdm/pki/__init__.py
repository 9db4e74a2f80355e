"""Certificates and CMS for Apple MDM: the MDM CA, SCEP, and signed or detached CMS messages."""
