"""What every stage shares: the error classes (:mod:`.errors`), atomic file writes
(:mod:`.fileio`), nested-mapping differences (:mod:`.nested`), the quieting of third-party log
noise (:mod:`.quiet`), the one place that leans on transformers' and PEFT's internals
(:mod:`.hf_compat`) and the old module paths that still import (:mod:`.moved`). Imports nothing
else of lladapt."""
