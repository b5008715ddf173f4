"""Stage 2, adapters on a model: building an adapter and a placement from the config
(:mod:`.build`), resolving and checking sites (:mod:`.sites`), attaching and the adapted model
(:mod:`.model`, entry points :func:`.model.attach` and :func:`.model.attach_from_config`),
counting parameters (:mod:`.count`), the adapter folder format, PEFT-compatible
(:mod:`.files`), importing the paper's checkpoints (:mod:`.paper_import`) and the weightless
check on the meta device behind ``lladapt validate`` and ``lladapt params`` (:mod:`.meta_check`)."""
