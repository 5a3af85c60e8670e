"""pkdns.server."""
