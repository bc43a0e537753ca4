"""The memory of a project: what it was taught, its documents, chats and corrections, recalled by
meaning (a vector index) and by words (BM25), weighed by importance and recency.

A room beside the steps: the records live in the project database, the vector index is a file
derived from them. :class:`~finetuneflow.memory.store.Memory` is the whole of it; the API wraps it.
"""
