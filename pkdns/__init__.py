"""pkdns: a DNS resolver daemon for pkarr public-key domains and ICANN names."""

__version__ = "0.1.0"
