"""
nanokd data: the token-file format (tokenfile.py), tokenizers (tokenizer.py),
the training/eval loaders (loader.py), and one prepare script per source
(prepare_embedded.py: offline Wikipedia sample + OOD sets; prepare_fineweb.py:
FineWeb-Edu shards).
"""
