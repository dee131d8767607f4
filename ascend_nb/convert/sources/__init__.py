"""One converter per source format users download: GGUF (and its reader), Baichuan2, Aquila, ``pytorch_model*.bin``.

The shared machinery they write through lives one level up (:mod:`ascend_nb.convert.output`, ``shards``,
``kinds``, ``llama_target``, ``tokenizer_files``, ``verify``, ``reference``).
"""
