"""Apple Push Notification service: the HTTP/2 client, the push certificate, and a local stand-in."""
