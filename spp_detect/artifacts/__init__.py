"""Everything a stage writes into a run folder goes through here: where it lives (:mod:`.layout`),
how it is written (:mod:`.files`: atomic, all-or-nothing, no silent overwrite), what it was made
from (:mod:`.stamps`), resumable work (:mod:`.parts`) and one writer per output (:mod:`.lock`)."""
