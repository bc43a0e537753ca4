"""Review of a dataset's examples pool (list, search, edit, rate, approve, delete, restore), as the
API exposes it to its wrappers: the functions of :mod:`finetuneflow.dataset.review`, which already
take names and open their own sessions, so there is nothing to resolve on top of them."""

from finetuneflow.dataset.review import (
    ReviewPage,
    approve_example,
    approve_examples,
    delete_example,
    edit_example,
    get_example,
    list_examples,
    rate_example,
    restore_example,
    review_counts,
)

__all__ = [
    "ReviewPage",
    "approve_example",
    "approve_examples",
    "delete_example",
    "edit_example",
    "get_example",
    "list_examples",
    "rate_example",
    "restore_example",
    "review_counts",
]
