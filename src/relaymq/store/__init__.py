"""Durability behind one small interface (:mod:`relaymq.store.base`), with one implementation per
backend: ``local`` (segment files + SQLite, the embedded default) and ``memory``."""
