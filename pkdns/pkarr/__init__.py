"""pkdns.pkarr."""
