"""DNS answers for pkarr names: where a key's signed packet comes from, what is held, and the
answer synthesized from it.

``names`` says which world a query name belongs to; ``source`` holds verified packets
(``packets``, pure) and looks cold keys up through the pkarr client (:mod:`pkdns.pkarr.client`)
within the node's lookup budget (``budget``, pure; ``gate`` runs its timer); ``answerer`` turns
a packet into the reply (``synth``, pure) and follows CNAME and NS chains across keys and ICANN
(``chain``); ``seam`` is the one call the resolver makes into this package; ``service`` builds
the whole side for the daemon.
"""
