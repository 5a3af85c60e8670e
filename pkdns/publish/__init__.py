"""pkdns.publish."""
