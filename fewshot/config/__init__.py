"""Configuration: the typed configs (:mod:`~fewshot.config.schema`) and one way in — a YAML file, then
``key.sub=value`` overrides (:mod:`~fewshot.config.loading`)."""
