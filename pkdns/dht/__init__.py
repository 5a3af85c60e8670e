"""pkdns.dht."""
