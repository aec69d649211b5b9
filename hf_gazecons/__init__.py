"""hf_gazecons."""
