"""DNS answers for pkarr names: where a key's signed packet comes from, what is held, and the
answer synthesized from it.

``names`` says which world a query name belongs to; ``source`` holds verified packets
(``packets``) and looks cold keys up on the DHT and the relays; ``answerer`` turns a packet
into the reply (``synth``, pure) and follows CNAME and NS chains; ``seam`` is the one call the
resolver makes into this package; ``service`` builds the whole side for the daemon.
"""
