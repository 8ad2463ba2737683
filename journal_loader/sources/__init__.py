"""Input sources: identifying a source file and reading its records.

Owns: ``identity`` (a file's hash, version label and the checks that it did not change under
a run), ``options`` (``ReaderOptions``: how to read a file, the one copy of its defaults)
and the record readers. ``readers`` is the public face (``open_reader``, ``RecordReader``,
``ReaderOptions``, ``RawRecord``, ``ResumePoint``, ``detect_format``); its parts are
``records`` (what a reader yields and where it stands), ``encoding`` (format and text
encoding), ``lines`` (byte-exact line splitting), ``csv_decoder`` and ``jsonl_decoder``.

May import: the base layer (``errors``...) and ``storage``; never SQL, config, the graph,
the journal or anything above them (the layers: tests/test_layering.py).
"""
