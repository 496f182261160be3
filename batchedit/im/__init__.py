"""The Tencent Cloud IM REST API, on its own: UserSig, credentials, the typed client, the error
code table, message element formats and history paging.

Nothing in this package imports anything else of batchedit's; the pipeline and the emulator both
build on it. ``tests/test_layout.py`` keeps it that way.
"""
