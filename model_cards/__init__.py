"""The Jinja template of the model card, installed as the package data of ``hf_gazecons.templates``."""
