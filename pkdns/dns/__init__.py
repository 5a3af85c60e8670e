"""pkdns.dns."""
