"""The verifying HTTPS gateway for key names (TLSA records, the local CA, the TLS relay).

Pure parts (:mod:`.tlsa`, :mod:`.route`, :mod:`.ca`'s certificate building, :mod:`.origin`'s
checks) take their inputs as arguments; :mod:`.server` owns the sockets and the clock.
"""
