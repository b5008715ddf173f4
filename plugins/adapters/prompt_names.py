"""Names the prompt-learning adapters (:mod:`.prompt_learning`, light) and their torch modules
(:mod:`.virtual_tokens`) share, kept apart so that neither imports the other for them."""

#: attribute of the base model that holds the virtual-token module (one per model).
MODULE_NAME = "lladapt_virtual_tokens"
