"""Everything a stage writes into a run folder goes through here: atomic writes, overwrite
checks, stamps and the lock per output (:mod:`.files`)."""
